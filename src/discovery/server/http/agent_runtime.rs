//! The agent's runtime endpoints: `/v1/agent/metrics` (go-metrics' JSON
//! summary of the last finished interval, or Prometheus text),
//! `/v1/agent/reload` (what SIGHUP does), `/v1/agent/monitor` (the log as
//! it is written, hclog text or JSON), `/v1/agent/host`, `/v1/agent/version`
//! and `/v1/agent/token/:type`. Agent-local: no index headers.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::Router;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use super::agent::{only, CONSUL_VERSION};
use super::query::{json, ApiError, QueryOptions};
use crate::discovery::api::agent::decode;
use crate::discovery::api::metrics::{GaugeValue, MetricsSummary, SampledValue};
use crate::discovery::server::agent_metrics::{Aggregate, Labels};
use crate::discovery::server::{now_ms, Server};

pub fn routes() -> Router<Server> {
    Router::new()
        .route("/v1/agent/metrics", only(get(metrics)))
        .route("/v1/agent/reload", only(put(reload)))
        .route("/v1/agent/monitor", only(get(monitor)))
        .route("/v1/agent/host", only(get(host)))
        .route("/v1/agent/version", only(get(version)))
        .route("/v1/agent/token/{*kind}", only(put(token)))
}

// ---------------------------------------------------------------- metrics

fn sampled(name: &str, labels: &Labels, a: &Aggregate) -> SampledValue {
    let secs = crate::discovery::server::agent_metrics::INTERVAL_MS as f64 / 1000.0;
    SampledValue {
        name: name.to_string(),
        count: a.count,
        rate: a.sum / secs,
        sum: a.sum,
        min: a.min,
        max: a.max,
        mean: a.mean(),
        stddev: a.stddev(),
        labels: labels.clone(),
    }
}

/// Prometheus is asked for by `?format=prometheus` or the `Accept` header.
fn wants_prometheus(opts: &QueryOptions, headers: &HeaderMap) -> bool {
    opts.get("format") == Some("prometheus")
        || headers
            .get_all(header::ACCEPT)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| {
                v.contains("application/openmetrics-text")
                    || v.contains("text/plain; version=0.4.0")
            })
}

async fn metrics(
    State(server): State<Server>,
    opts: QueryOptions,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let sink = server.metrics();
    if wants_prometheus(&opts, &headers) {
        if !sink.prometheus_enabled() {
            let mut r = StatusCode::OK.into_response();
            r.headers_mut().insert(
                "x-consul-reason",
                HeaderValue::from_static(
                    "Prometheus is not enabled since its retention time is not positive",
                ),
            );
            return Ok(r);
        }
        let mut r = sink.prometheus(now_ms()).into_response();
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        );
        return Ok(r);
    }
    let interval = sink
        .latest()
        .ok_or_else(|| ApiError::internal("no metric intervals have been initialized yet"))?;
    let body = MetricsSummary {
        timestamp: crate::discovery::api::gofmt::go_time_string(interval.start),
        gauges: interval
            .gauges
            .iter()
            .map(|((name, labels), v)| GaugeValue {
                name: name.clone(),
                value: *v,
                labels: labels.clone(),
            })
            .collect(),
        points: Vec::new(),
        counters: interval
            .counters
            .iter()
            .map(|((n, l), a)| sampled(n, l, a))
            .collect(),
        samples: interval
            .samples
            .iter()
            .map(|((n, l), a)| sampled(n, l, a))
            .collect(),
    };
    Ok(json(&body, &opts))
}

/// `consul.api.http`: one request's time (ms), by method and path prefix.
pub fn record_request(server: &Server, method: &str, path: &str, took: Duration) {
    let label: String = path
        .trim_start_matches('/')
        .split_inclusive('/')
        .take(3)
        .collect::<String>()
        .replace('/', "_");
    let labels = Labels::from([
        ("method".to_string(), method.to_string()),
        ("path".to_string(), label),
    ]);
    server.metrics().add_sample(
        now_ms(),
        "consul.api.http",
        labels,
        took.as_secs_f64() * 1000.0,
    );
}

/// The agent's resident memory (bytes), from `/proc/self/statm`.
fn resident_bytes() -> Option<f64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: f64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .unwrap_or(4096);
    Some(pages * page as f64)
}

/// Every second, the gauges Consul keeps current: the process's memory,
/// the catalog's size, the members by status, this server's raft indexes.
pub async fn sample_gauges(server: Server, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let now = now_ms();
        let sink = server.metrics();
        let gauge = |name: &str, v: f64| sink.set_gauge(now, name, Labels::new(), v);
        if let Some(rss) = resident_bytes() {
            gauge("consul.runtime.sys_bytes", rss);
        }
        let (nodes, services) = server.read(|s| {
            (
                s.catalog_nodes().0.len() as f64,
                s.catalog_services().0.len() as f64,
            )
        });
        gauge("consul.state.nodes", nodes);
        gauge("consul.state.services", services);
        let mut by_status: BTreeMap<&str, f64> = BTreeMap::new();
        for (_, status) in server.members().all(false) {
            *by_status.entry(status.name()).or_default() += 1.0;
        }
        for (status, n) in by_status {
            gauge(&format!("consul.serf.member.{status}"), n);
        }
        let raft = server.raft_info();
        gauge("consul.raft.last_index", raft.last_log_index as f64);
        gauge("consul.raft.applied_index", raft.applied_index as f64);
    }
}

// ---------------------------------------------------------------- reload

async fn reload(State(server): State<Server>) -> Result<Response, ApiError> {
    server.reload().map_err(ApiError::internal)?;
    Ok(StatusCode::OK.into_response())
}

// ---------------------------------------------------------------- monitor

/// hclog's levels as `?loglevel=` accepts them (case-insensitive).
fn parse_level(text: &str) -> Option<tracing::Level> {
    match text.to_ascii_uppercase().as_str() {
        "TRACE" => Some(tracing::Level::TRACE),
        "DEBUG" => Some(tracing::Level::DEBUG),
        "INFO" => Some(tracing::Level::INFO),
        "WARN" => Some(tracing::Level::WARN),
        "ERR" | "ERROR" => Some(tracing::Level::ERROR),
        _ => None,
    }
}

/// A streamed body fed by a channel; the feeding task stops when the
/// client goes (the receiver is dropped with the body).
struct LineStream(tokio::sync::mpsc::Receiver<Bytes>);

impl hyper::body::Body for LineStream {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        self.0
            .poll_recv(cx)
            .map(|line| line.map(|b| Ok(hyper::body::Frame::data(b))))
    }
}

/// Lines buffered for a slow client before new ones are dropped.
const MONITOR_BUFFER: usize = 512;

async fn monitor(opts: QueryOptions) -> Result<Response, ApiError> {
    let given = opts.get("loglevel").unwrap_or("INFO");
    let level = parse_level(given)
        .ok_or_else(|| ApiError::bad_request(format!("Unknown log level: {given}")))?;
    let as_json = opts.flag("logjson");
    let mut monitor = crate::logging::monitor(level);
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(MONITOR_BUFFER);
    tokio::spawn(async move {
        let mut dropped = 0u64;
        loop {
            let line = tokio::select! {
                () = tx.closed() => return,
                l = monitor.lines.recv() => l,
            };
            let line = match line {
                Ok(l) => l,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    dropped += n;
                    continue;
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            };
            if line.level > level {
                continue;
            }
            let mut text = if as_json { line.json() } else { line.text() };
            text.push('\n');
            match tx.try_send(Bytes::from(text)) {
                Ok(()) => {}
                Err(tokio::sync::mpsc::error::TrySendError::Full(_)) => dropped += 1,
                Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) => return,
            }
            if dropped > 0 && dropped % 100 == 1 {
                tracing::debug!("monitor: {dropped} log lines dropped for a slow client");
            }
        }
    });
    Ok(Response::new(axum::body::Body::new(LineStream(rx))))
}

// ---------------------------------------------------------------- host

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// `/proc/meminfo` in bytes, gopsutil's `VirtualMemoryStat` keys.
fn memory() -> Value {
    let info: BTreeMap<String, u64> = read("/proc/meminfo")
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            let kb: u64 = v.split_whitespace().next()?.parse().ok()?;
            Some((k.to_string(), kb * 1024))
        })
        .collect();
    let get = |k: &str| info.get(k).copied().unwrap_or(0);
    let total = get("MemTotal");
    let available = get("MemAvailable");
    let used = total.saturating_sub(available);
    let pct = |part: u64, whole: u64| {
        if whole == 0 {
            0.0
        } else {
            part as f64 / whole as f64 * 100.0
        }
    };
    json!({
        "total": total, "available": available, "used": used,
        "usedPercent": pct(used, total), "free": get("MemFree"),
        "active": get("Active"), "inactive": get("Inactive"),
        "buffers": get("Buffers"), "cached": get("Cached"), "shared": get("Shmem"),
        "slab": get("Slab"), "dirty": get("Dirty"),
        "swapTotal": get("SwapTotal"), "swapFree": get("SwapFree"),
        "swapCached": get("SwapCached"),
    })
}

/// One entry per logical CPU from `/proc/cpuinfo` (`InfoStat`).
fn cpus() -> Value {
    let mut out = Vec::new();
    for block in read("/proc/cpuinfo").split("\n\n") {
        let f: BTreeMap<&str, &str> = block
            .lines()
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim(), v.trim()))
            .collect();
        let Some(cpu) = f.get("processor").and_then(|p| p.parse::<i64>().ok()) else {
            continue;
        };
        let text = |k: &str| f.get(k).copied().unwrap_or("").to_string();
        let num = |k: &str| f.get(k).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        let cache = f
            .get("cache size")
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<i64>().ok())
            .unwrap_or(0);
        out.push(json!({
            "cpu": cpu, "vendorId": text("vendor_id"), "family": text("cpu family"),
            "model": text("model"), "stepping": num("stepping") as i64,
            "physicalId": text("physical id"), "coreId": text("core id"),
            "cores": 1, "modelName": text("model name"), "mhz": num("cpu MHz"),
            "cacheSize": cache,
            "flags": text("flags").split_whitespace().collect::<Vec<_>>(),
            "microcode": text("microcode"),
        }));
    }
    Value::Array(out)
}

/// `/etc/os-release` fields.
fn os_release() -> BTreeMap<String, String> {
    read("/etc/os-release")
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.trim_matches('"').to_string()))
        .collect()
}

fn host_info() -> Value {
    let uptime = read("/proc/uptime")
        .split_whitespace()
        .next()
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0) as u64;
    let now = now_ms() / 1000;
    let uname = nix::sys::utsname::uname().ok();
    let field = |f: fn(&nix::sys::utsname::UtsName) -> &std::ffi::OsStr| {
        uname
            .as_ref()
            .map(|u| f(u).to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    let os = os_release();
    let procs = std::fs::read_dir("/proc")
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .bytes()
                        .all(|b| b.is_ascii_digit())
                })
                .count()
        })
        .unwrap_or(0);
    json!({
        "hostname": field(|u| u.nodename()),
        "uptime": uptime,
        "bootTime": now.saturating_sub(uptime),
        "procs": procs,
        "os": field(|u| u.sysname()).to_ascii_lowercase(),
        "platform": os.get("ID").cloned().unwrap_or_default(),
        "platformFamily": os.get("ID_LIKE").cloned().unwrap_or_else(|| os.get("ID").cloned().unwrap_or_default()),
        "platformVersion": os.get("VERSION_ID").cloned().unwrap_or_default(),
        "kernelVersion": field(|u| u.release()),
        "kernelArch": field(|u| u.machine()),
        "virtualizationSystem": "",
        "virtualizationRole": "",
        "hostId": read("/etc/machine-id").trim(),
    })
}

/// `statvfs("/")` as gopsutil's `UsageStat`.
fn disk() -> Result<Value, String> {
    let st = nix::sys::statvfs::statvfs("/").map_err(|e| format!("disk: {e}"))?;
    let frsize = st.fragment_size();
    let total = st.blocks() * frsize;
    let free = st.blocks_available() * frsize;
    let used = (st.blocks() - st.blocks_free()) * frsize;
    let inodes_total = st.files();
    let inodes_free = st.files_free();
    let inodes_used = inodes_total.saturating_sub(inodes_free);
    let pct = |a: u64, b: u64| {
        if b == 0 {
            0.0
        } else {
            a as f64 / b as f64 * 100.0
        }
    };
    // The last mount on `/` is the one in effect.
    let fstype = read("/proc/self/mounts")
        .lines()
        .rev()
        .find_map(|l| {
            let mut f = l.split_whitespace();
            let (_, mount, kind) = (f.next()?, f.next()?, f.next()?);
            (mount == "/").then(|| kind.to_string())
        })
        .unwrap_or_default();
    Ok(json!({
        "path": "/", "fstype": fstype, "total": total, "free": free, "used": used,
        "usedPercent": pct(used, used + free),
        "inodesTotal": inodes_total, "inodesUsed": inodes_used, "inodesFree": inodes_free,
        "inodesUsedPercent": pct(inodes_used, inodes_total),
    }))
}

async fn host(opts: QueryOptions) -> Response {
    let started = std::time::SystemTime::now();
    let mut errors = Vec::new();
    let disk = disk().unwrap_or_else(|e| {
        errors.push(e);
        Value::Null
    });
    let ns = started
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let body = json!({
        "Memory": memory(),
        "CPU": cpus(),
        "Host": host_info(),
        "Disk": disk,
        "CollectionTime": u64::try_from(ns).unwrap_or(u64::MAX),
        "Errors": if errors.is_empty() { Value::Null } else { json!(errors) },
    });
    json(&body, &opts)
}

// ---------------------------------------------------------------- version

/// The commit and build date, when the build was given them (Consul's
/// defaults otherwise: an empty SHA and its zero build date).
async fn version(opts: QueryOptions) -> Response {
    let body = json!({
        "SHA": option_env!("PILOTFISH_GIT_SHA").unwrap_or(""),
        "BuildDate": option_env!("PILOTFISH_BUILD_DATE").unwrap_or("1970-01-01T00:00:01Z"),
        "HumanVersion": CONSUL_VERSION,
        "FIPS": "",
    });
    json(&body, &opts)
}

// ---------------------------------------------------------------- tokens

/// The token names Consul takes (with their legacy spellings).
fn token_kind(target: &str) -> Option<&'static str> {
    Some(match target {
        "default" | "acl_token" => "default",
        "agent" | "acl_agent_token" => "agent",
        "agent_recovery" | "agent_master" | "acl_agent_master_token" => "agent_recovery",
        "replication" | "acl_replication_token" => "replication",
        "config_file_service_registration" => "config_file_service_registration",
        "dns" | "dns_token" => "dns",
        _ => return None,
    })
}

/// Without ACLs (no `--acl-token`): 401 `ACL support disabled`, before
/// anything else. With them: the body, then the target.
async fn token(
    State(server): State<Server>,
    Path(target): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    if server.cluster().acl_token.is_none() {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "ACL support disabled",
        ));
    }
    #[derive(serde::Deserialize, Default)]
    #[serde(default)]
    struct AgentToken {
        token: String,
    }
    let t: AgentToken =
        decode(&body).map_err(|e| ApiError::bad_request(format!("Request decode failed: {e}")))?;
    let kind = token_kind(&target)
        .ok_or_else(|| ApiError::not_found(format!("Token \"{target}\" is unknown")))?;
    server.set_agent_token(kind, t.token);
    Ok(StatusCode::OK.into_response())
}
