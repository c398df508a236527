//! `pilotfish agent`: Consul's agent flags, the listeners (HTTP and DNS on
//! `--client`), and the node's own tasks: the check runner, the session TTL
//! timer and the tombstone reaper. Startup and shutdown order are written
//! down in [`run`].

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::{TcpListener, UdpSocket};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::dns::DnsConfig;
use super::raft::network::{ClusterKey, SecretCheck};
use super::state::Command;
use super::{now_ms, ClusterConfig, Server, ServerConfig};
use crate::config::LoggingConfig;
use crate::logging::LogFormatArg;

/// `pilotfish agent` flags (Consul's vocabulary, double-dash spelling).
#[derive(Debug, Clone, clap::Args)]
pub struct AgentArgs {
    /// Run as a server (takes part in raft and holds the state).
    #[arg(long)]
    pub server: bool,
    /// One node, in memory, no data dir.
    #[arg(long)]
    pub dev: bool,
    /// Servers to wait for before bootstrapping the cluster.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub bootstrap_expect: u32,
    /// Where the server keeps its state (required unless --dev).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Take a raft snapshot (and drop the log it covers) once the log
    /// since the last one holds this many bytes.
    #[arg(
        long,
        value_name = "BYTES",
        default_value_t = super::raft::compaction::SNAPSHOT_THRESHOLD,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub raft_snapshot_threshold_bytes: u64,
    /// This node's name (default: the hostname).
    #[arg(long, value_name = "NAME", env = "PILOTFISH_NODE")]
    pub node: Option<String>,
    #[arg(long, value_name = "DC", default_value = "dc1")]
    pub datacenter: String,
    /// DNS domain served (a trailing dot is added if missing).
    #[arg(long, value_name = "DOMAIN", default_value = "consul.")]
    pub domain: String,
    /// Address for cluster communication (default: 0.0.0.0; 127.0.0.1
    /// with --dev, as Consul's -dev).
    #[arg(long, value_name = "ADDR")]
    pub bind: Option<IpAddr>,
    /// Address advertised to other nodes and in the catalog (default: the
    /// bind address, or the first private IPv4 when binding to 0.0.0.0).
    #[arg(long, value_name = "ADDR", env = "PILOTFISH_ADVERTISE")]
    pub advertise: Option<IpAddr>,
    /// Address the HTTP API and DNS listen on.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1")]
    pub client: IpAddr,
    #[arg(long, value_name = "PORT", default_value_t = 8500)]
    pub http_port: u16,
    #[arg(long, value_name = "PORT", default_value_t = 8600)]
    pub dns_port: u16,
    /// Server RPC port, as shown by /v1/status/leader and peers.
    #[arg(long, value_name = "PORT", default_value_t = 8300)]
    pub server_port: u16,
    /// DNS: leave out instances with a warning check too (Consul's dns_config.only_passing).
    #[arg(long)]
    pub dns_only_passing: bool,
    /// DNS: set the TC flag when a UDP answer was cut (dns_config.enable_truncate).
    #[arg(long)]
    pub dns_enable_truncate: bool,
    /// DNS: answers in a UDP reply without EDNS, at most 8 (dns_config.udp_answer_limit).
    #[arg(long, value_name = "N", default_value_t = 3)]
    pub dns_udp_answer_limit: usize,
    /// DNS: A/AAAA records in a service answer on any transport, 0 = no limit
    /// (dns_config.a_record_limit).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub dns_a_record_limit: usize,
    /// DNS: TTL of node records, a Go duration (dns_config.node_ttl).
    #[arg(long, value_name = "DURATION", default_value = "0s")]
    pub dns_node_ttl: String,
    /// DNS: TTL of service records, a Go duration (dns_config.service_ttl).
    #[arg(long, value_name = "DURATION", default_value = "0s")]
    pub dns_service_ttl: String,
    /// Upstream DNS server for names outside the domain (repeatable; port 53 by default).
    #[arg(long = "recursor", value_name = "ADDR")]
    pub recursors: Vec<String>,
    /// Address or DNS name of a server to join (repeatable).
    #[arg(long = "retry-join", value_name = "ADDR")]
    pub retry_join: Vec<String>,
    /// DNS server that resolves --retry-join and join names (default: the system's).
    #[arg(long, value_name = "ADDR", env = "PILOTFISH_RESOLVER")]
    pub resolver: Option<String>,
    /// Allow script checks (`Args`/`ScriptArgs`).
    #[arg(long)]
    pub enable_script_checks: bool,
    /// PEM certificate this node presents to other servers (with --tls-key and --tls-ca).
    #[arg(long, value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// PEM CA certificate that signs every server's certificate.
    #[arg(long, value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,
    /// Master token the HTTP API requires (X-Consul-Token, Bearer or ?token=).
    #[arg(
        long,
        value_name = "TOKEN",
        env = "PILOTFISH_ACL_TOKEN",
        conflicts_with = "acl_token_file"
    )]
    pub acl_token: Option<String>,
    /// Read the master token from this file (keeps it out of `ps`).
    #[arg(long, value_name = "FILE")]
    pub acl_token_file: Option<PathBuf>,
    /// The cluster key (base64 of 16, 24 or 32 bytes, from `pilotfish
    /// keygen`) that authenticates all traffic on the server port; every
    /// server and client agent of a cluster needs the same one.
    #[arg(
        long,
        value_name = "KEY",
        env = "PILOTFISH_ENCRYPT",
        conflicts_with = "cluster_secret_file"
    )]
    pub encrypt: Option<String>,
    /// Read the cluster key (as for --encrypt) from this file.
    #[arg(long, value_name = "FILE")]
    pub cluster_secret_file: Option<PathBuf>,
    /// A JSON agent config file (Consul's keys; `log_level` for now), read
    /// at start and again on SIGHUP.
    #[arg(long, value_name = "FILE")]
    pub config_file: Option<PathBuf>,
    /// Connections one client address may hold on the HTTP port (Consul's
    /// `http_max_conns_per_client`); more are answered 429. 0 = no limit.
    #[arg(long, value_name = "N", default_value_t = super::http::conn::DEFAULT_MAX_CONNS_PER_CLIENT)]
    pub http_max_conns_per_client: usize,
    /// How long a keep-alive HTTP connection may sit idle between requests
    /// (a Go duration); a request head must be complete within 10 s.
    #[arg(long, value_name = "DURATION", default_value = "60s")]
    pub http_idle_timeout: String,
    /// Serve the web UI at /ui/ (the default for --dev and servers).
    #[arg(long, conflicts_with = "no_ui")]
    pub ui: bool,
    /// Don't serve the web UI (`GET /` then says so).
    #[arg(long)]
    pub no_ui: bool,
    #[arg(long, value_name = "LEVEL", default_value = "info")]
    pub log_level: String,
    /// Keep Prometheus series this long after their last update and serve
    /// `/v1/agent/metrics?format=prometheus` (Consul's
    /// `telemetry.prometheus_retention_time`; 0 = off).
    #[arg(long, value_name = "DURATION", default_value = "0s")]
    pub prometheus_retention_time: String,
    /// Least time between two coordinate syncs of this agent (Consul's
    /// `sync_coordinate_interval_min`), a Go duration.
    #[arg(long, value_name = "DURATION", default_value = "15s", hide = true)]
    pub sync_coordinate_interval_min: String,
    /// Coordinate syncs per second the whole cluster aims at (Consul's
    /// `sync_coordinate_rate_target`).
    #[arg(long, value_name = "RATE", default_value_t = 64.0, hide = true)]
    pub sync_coordinate_rate_target: f64,
    /// How often a server writes the coordinate updates it queued (Consul's
    /// `coordinate_update_period`), a Go duration.
    #[arg(long, value_name = "DURATION", default_value = "5s", hide = true)]
    pub coordinate_update_period: String,
    /// Coordinate updates per raft entry (`coordinate_update_batch_size`).
    #[arg(long, value_name = "N", default_value_t = 128, hide = true)]
    pub coordinate_update_batch_size: usize,
    /// Batches per period; the excess is dropped (`coordinate_update_max_batches`).
    #[arg(long, value_name = "N", default_value_t = 5, hide = true)]
    pub coordinate_update_max_batches: usize,
    #[arg(long, value_name = "FORMAT", value_enum, default_value_t = LogFormatArg::Text)]
    pub log_format: LogFormatArg,
}

/// How long deleted keys keep a tombstone (Consul's `tombstone_ttl` is of
/// this order): long enough for every blocked reader to have seen the delete.
const TOMBSTONE_TTL: Duration = Duration::from_secs(15 * 60);
/// How often the reaper samples the applied index and reaps.
const REAP_EVERY: Duration = Duration::from_secs(60);
/// How long the node's tasks get to stop after the listeners close.
const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(3);
/// How long raft gets to stop after that.
const RAFT_STOP_DEADLINE: Duration = Duration::from_secs(2);

/// Run the agent until SIGTERM/SIGINT; returns the exit status.
pub async fn run(args: AgentArgs) -> i32 {
    let file = match &args.config_file {
        Some(path) => AgentFile::read(path).map(Some),
        None => Ok(None),
    };
    let (cfg, dns, cluster, file) = match (
        server_config(&args),
        dns_config(&args),
        cluster_config(&args),
        file,
    ) {
        (Ok(cfg), Ok(dns), Ok(cluster), Ok(file)) => (cfg, dns, cluster, file),
        (cfg, dns, cluster, file) => {
            let errors: Vec<String> = [cfg.err(), dns.err(), cluster.err(), file.err()]
                .into_iter()
                .flatten()
                .collect();
            eprintln!("pilotfish agent: {}", errors.join("; "));
            return 1;
        }
    };
    let logging = LoggingConfig {
        level: file
            .and_then(|f| f.log_level)
            .unwrap_or_else(|| args.log_level.clone()),
        format: args.log_format.into(),
        ..LoggingConfig::default()
    };
    let (level, _flush) = crate::logging::init(&logging);
    match serve(&args, cfg, dns, cluster, &level).await {
        Ok(()) => 0,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("pilotfish agent: {e:#}");
            1
        }
    }
}

/// Validate the flags into the node's config; every problem is reported.
pub fn server_config(args: &AgentArgs) -> Result<ServerConfig, String> {
    let mut errors = Vec::new();
    if !args.dev && args.data_dir.is_none() {
        errors.push(
            "--data-dir is required (where the server keeps its state); use --dev to run in memory"
                .to_string(),
        );
    }
    let mut recursors = Vec::new();
    for r in &args.recursors {
        match recursor_addr(r) {
            Ok(a) => recursors.push(a),
            Err(e) => errors.push(e),
        }
    }
    let tls = [&args.tls_cert, &args.tls_key, &args.tls_ca];
    let given = tls.iter().filter(|f| f.is_some()).count();
    if given != 0 && given != 3 {
        errors.push(
            "--tls-cert, --tls-key and --tls-ca go together: give all three or none".to_string(),
        );
    }
    for (flag, f) in ["--tls-cert", "--tls-key", "--tls-ca"].iter().zip(tls) {
        if let Some(f) = f {
            if !f.is_file() {
                errors.push(format!("{flag} {}: no such file", f.display()));
            }
        }
    }
    if let Some(r) = &args.resolver {
        if let Err(e) = resolver_addr(r) {
            errors.push(e);
        }
    }
    let node = match &args.node {
        Some(n) if n.is_empty() => {
            errors.push("--node must not be empty".to_string());
            String::new()
        }
        Some(n) => n.clone(),
        None => nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "pilotfish".to_string()),
    };
    if !errors.is_empty() {
        return Err(errors.join("; "));
    }
    let mut domain = args.domain.clone();
    if !domain.ends_with('.') {
        domain.push('.');
    }
    Ok(ServerConfig {
        node,
        datacenter: args.datacenter.clone(),
        domain,
        advertise: advertise_addr(args),
        data_dir: if args.dev {
            None
        } else {
            args.data_dir.clone()
        },
        enable_script_checks: args.enable_script_checks,
        recursors,
        snapshot_threshold: args.raft_snapshot_threshold_bytes,
    })
}

/// The `--dns-*` flags; every problem is reported.
pub fn dns_config(args: &AgentArgs) -> Result<DnsConfig, String> {
    let mut errors = Vec::new();
    let mut ttl = |flag: &str, value: &str| match dns_ttl(value) {
        Ok(secs) => secs,
        Err(e) => {
            errors.push(format!("{flag} {value:?}: {e}"));
            0
        }
    };
    let node_ttl = ttl("--dns-node-ttl", &args.dns_node_ttl);
    let service_ttl = ttl("--dns-service-ttl", &args.dns_service_ttl);
    if args.dns_udp_answer_limit == 0 {
        errors.push(
            "--dns-udp-answer-limit 0: must be at least 1 (answers in a UDP reply without EDNS)"
                .to_string(),
        );
    }
    if !errors.is_empty() {
        return Err(errors.join("; "));
    }
    Ok(DnsConfig {
        only_passing: args.dns_only_passing,
        enable_truncate: args.dns_enable_truncate,
        udp_answer_limit: args.dns_udp_answer_limit,
        a_record_limit: args.dns_a_record_limit,
        node_ttl,
        service_ttl,
    })
}

/// A Go duration as whole seconds of a DNS TTL (fractions are cut, as Consul does).
fn dns_ttl(value: &str) -> Result<u32, String> {
    let d = crate::discovery::api::gofmt::parse_duration(value)?;
    u32::try_from(d.as_secs()).map_err(|_| "longer than a DNS TTL can be (136 years)".to_string())
}

/// The node's cluster role, ports and secrets from the flags; every problem
/// is reported.
pub fn cluster_config(args: &AgentArgs) -> Result<ClusterConfig, String> {
    let mut errors = Vec::new();
    let tls = match (&args.tls_cert, &args.tls_key, &args.tls_ca) {
        (Some(cert), Some(key), Some(ca)) => Some(super::tls::TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
            ca: ca.clone(),
        }),
        _ => None,
    };
    let acl_token = match (&args.acl_token, &args.acl_token_file) {
        (Some(t), _) if t.is_empty() => {
            errors.push("--acl-token must not be empty".to_string());
            None
        }
        (Some(t), _) => Some(t.clone()),
        (None, Some(f)) => match read_secret_file("--acl-token-file", f) {
            Ok(t) => Some(t),
            Err(e) => {
                errors.push(e);
                None
            }
        },
        (None, None) => None,
    };
    let key_text = match (&args.encrypt, &args.cluster_secret_file) {
        (Some(k), _) => Some((k.clone(), "--encrypt".to_string())),
        (None, Some(f)) => match read_secret_file("--cluster-secret-file", f) {
            Ok(k) => Some((k, format!("--cluster-secret-file {}", f.display()))),
            Err(e) => {
                errors.push(e);
                None
            }
        },
        (None, None) => None,
    };
    let mut key = match key_text {
        Some((text, what)) => match ClusterKey::parse(&text, &what) {
            Ok(k) => Some(k),
            Err(e) => {
                errors.push(e);
                None
            }
        },
        None => None,
    };
    let mut cluster = ClusterConfig {
        server: args.server || args.dev,
        bootstrap_expect: if args.dev { 1 } else { args.bootstrap_expect },
        server_port: args.server_port,
        http_port: args.http_port,
        dns_port: args.dns_port,
        retry_join: if args.dev {
            Vec::new()
        } else {
            args.retry_join.clone()
        },
        resolver: args.resolver.as_deref().and_then(|r| resolver_addr(r).ok()),
        tls,
        acl_token: acl_token.as_deref().map(|t| Arc::new(SecretCheck::new(t))),
        key: None,
        // Consul's ui_config.enabled: on for -dev and servers.
        ui: !args.no_ui && (args.ui || args.dev || args.server),
        log_level: None,
        coordinates: coordinate_timing(args, &mut errors),
        prometheus_retention: match crate::discovery::api::gofmt::parse_duration(
            &args.prometheus_retention_time,
        ) {
            Ok(d) => d,
            Err(e) => {
                errors.push(format!(
                    "--prometheus-retention-time {:?}: {e}",
                    args.prometheus_retention_time
                ));
                Duration::ZERO
            }
        },
    };
    let authenticated = key.is_some() || cluster.tls.is_some();
    let alone = args.dev || (cluster.bootstraps_alone() && cluster.retry_join.is_empty());
    if !authenticated && alone {
        // Nobody else is meant to talk to this cluster port: close it with
        // a key nobody has.
        match ClusterKey::generate() {
            Ok(k) => key = Some(k),
            Err(e) => errors.push(format!("making a cluster key for the server port: {e}")),
        }
    } else if !authenticated && cluster.acl_token.is_some() {
        errors.push(format!(
            "--acl-token protects the HTTP API, but the server port ({}:{}) would accept raft and write \
             traffic from anyone: add --encrypt KEY (make one with `pilotfish keygen`; every server and \
             client agent needs the same key) or --cluster-secret-file FILE, or mutual TLS with \
             --tls-cert, --tls-key and --tls-ca",
            bind_addr(args),
            args.server_port
        ));
    }
    cluster.key = key;
    if errors.is_empty() {
        Ok(cluster)
    } else {
        Err(errors.join("; "))
    }
}

/// The coordinate flags (positive durations, a positive batch size).
fn coordinate_timing(args: &AgentArgs, errors: &mut Vec<String>) -> super::coordinate::Timing {
    let mut timing = super::coordinate::Timing::default();
    let mut duration = |flag: &str, text: &str, into: &mut Duration| {
        match crate::discovery::api::gofmt::parse_duration(text) {
            Ok(d) if !d.is_zero() => *into = d,
            _ => errors.push(format!(
                "--{flag} {text:?}: give a positive Go duration such as 15s"
            )),
        }
    };
    duration(
        "sync-coordinate-interval-min",
        &args.sync_coordinate_interval_min,
        &mut timing.sync_interval_min,
    );
    duration(
        "coordinate-update-period",
        &args.coordinate_update_period,
        &mut timing.update_period,
    );
    if args.coordinate_update_batch_size == 0 || args.coordinate_update_max_batches == 0 {
        errors.push(
            "--coordinate-update-batch-size and --coordinate-update-max-batches must be at least 1"
                .to_string(),
        );
    }
    timing.sync_rate_target = args.sync_coordinate_rate_target;
    timing.batch_size = args.coordinate_update_batch_size;
    timing.max_batches = args.coordinate_update_max_batches;
    timing
}

/// The largest secret file read (a key or a token is a line).
const SECRET_FILE_LIMIT: u64 = 64 * 1024;

/// A secret from a file: its content trimmed, not empty.
fn read_secret_file(flag: &str, path: &std::path::Path) -> Result<String, String> {
    let text = read_small_file(flag, path, SECRET_FILE_LIMIT)?;
    let text = text.trim();
    if text.is_empty() {
        return Err(format!("{flag} {}: the file is empty", path.display()));
    }
    Ok(text.to_string())
}

/// A regular file of at most `limit` bytes, as text; errors name the flag
/// and the file. Read through a cap, so a file that grows (or a device
/// behind a link) is never read whole.
fn read_small_file(flag: &str, path: &std::path::Path, limit: u64) -> Result<String, String> {
    use std::io::Read;
    let shown = path.display();
    let meta = std::fs::metadata(path).map_err(|e| format!("{flag} {shown}: {e}"))?;
    if !meta.is_file() {
        return Err(format!("{flag} {shown}: not a regular file"));
    }
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(limit + 1).read_to_string(&mut text))
        .map_err(|e| format!("{flag} {shown}: {e}"))?;
    if text.len() as u64 > limit {
        return Err(format!("{flag} {shown}: larger than {limit} bytes"));
    }
    Ok(text)
}

/// `--bind`, or its default: loopback for `--dev` (as `consul agent
/// -dev`), every address otherwise.
fn bind_addr(args: &AgentArgs) -> IpAddr {
    args.bind.unwrap_or(if args.dev {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    } else {
        IpAddr::V4(Ipv4Addr::UNSPECIFIED)
    })
}

/// `--resolver`: `ip` or `ip:port` (53 by default).
fn resolver_addr(r: &str) -> Result<SocketAddr, String> {
    if let Ok(a) = r.parse::<SocketAddr>() {
        return Ok(a);
    }
    r.trim_matches(['[', ']'])
        .parse::<IpAddr>()
        .map(|ip| SocketAddr::new(ip, 53))
        .map_err(|_| format!("--resolver {r:?} is not an IP address or ip:port"))
}

/// `host[:port]` with port 53 by default; names are resolved once, now.
fn recursor_addr(r: &str) -> Result<SocketAddr, String> {
    if let Ok(a) = r.parse::<SocketAddr>() {
        return Ok(a);
    }
    if let Ok(ip) = r.trim_matches(['[', ']']).parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, 53));
    }
    let with_port = if r.contains(':') {
        r.to_string()
    } else {
        format!("{r}:53")
    };
    with_port
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| format!("--recursor {r:?} is not an address or a resolvable name"))
}

/// Consul's rule: the advertise address, else the bind address, else (bind
/// 0.0.0.0) the first private IPv4 address; `--dev` falls back to loopback.
fn advertise_addr(args: &AgentArgs) -> IpAddr {
    if let Some(a) = args.advertise {
        return a;
    }
    let bind = bind_addr(args);
    if !bind.is_unspecified() {
        return bind;
    }
    let loopback = IpAddr::V4(Ipv4Addr::LOCALHOST);
    if args.dev {
        return loopback;
    }
    crate::interfaces::local_addresses()
        .into_iter()
        .map(|(_, ip)| ip)
        .find(|ip| matches!(ip, IpAddr::V4(v4) if v4.is_private()))
        .unwrap_or(loopback)
}

/// Process-wide settings for the agent, made before its runtime threads exist.
///
/// glibc gives every thread its own malloc arena; with a multi-thread runtime
/// and thousands of parked queries those arenas cost ~8 MiB for nothing
/// (measured with 10,000 waiters: 155 MiB with default arenas, 144 MiB with
/// one). Two arenas keep the worker threads from contending on one lock.
pub fn prepare_process() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    limit_malloc_arenas(2);
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn limit_malloc_arenas(n: i32) {
    // SAFETY: mallopt only sets a glibc tunable; it is called before any
    // thread exists (from `main`, before the runtime is built), and an
    // unsupported setting just returns 0.
    let ok = unsafe { libc::mallopt(libc::M_ARENA_MAX, n) };
    if ok == 0 {
        tracing::debug!("mallopt(M_ARENA_MAX) was not applied");
    }
}

/// Startup, then wait for a signal, then shutdown, in this order:
/// 1. raise RLIMIT_NOFILE (each blocking query is a connection);
/// 2. bind the server port on `--bind`, open the server (state, raft; a lone
///    server bootstraps and registers itself);
/// 3. bind HTTP and DNS on `--client` (a bind error stops here, exit 1);
/// 4. spawn the cluster listener, member probes, retry-join, bootstrap and
///    the leader's duties, HTTP, DNS, the check runner, the session timer
///    and the reaper;
/// 5. on SIGTERM/SIGINT or `leave`: leave the cluster gracefully (out of the
///    voters, members told), then cancel the root token: listeners stop
///    accepting, in-flight requests get a short grace, tasks stop, raft
///    stops, all under a deadline;
/// 6. or when raft stops on a storage failure (a full disk): the same
///    shutdown without the leave, then the cause is returned (exit 1).
async fn serve(
    args: &AgentArgs,
    cfg: ServerConfig,
    dns: DnsConfig,
    mut cluster: ClusterConfig,
    level: &crate::logging::LevelHandle,
) -> anyhow::Result<()> {
    cluster.log_level = Some(level.clone());
    use tokio::signal::unix::{signal, SignalKind};
    let mut terminate =
        signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    // Without handlers these would end the agent (exit 129, 138, 140).
    let mut hangup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    let mut user1 =
        signal(SignalKind::user_defined1()).context("installing the SIGUSR1 handler")?;
    let mut user2 =
        signal(SignalKind::user_defined2()).context("installing the SIGUSR2 handler")?;
    match raise_nofile_limit() {
        Ok(n) => tracing::debug!("open file limit {n}"),
        Err(e) => tracing::warn!("raising the open file limit: {e}"),
    }
    let node = cfg.node.clone();
    let http_idle = crate::discovery::api::gofmt::parse_duration(&args.http_idle_timeout)
        .ok()
        .filter(|d| !d.is_zero())
        .with_context(|| {
            format!(
                "--http-idle-timeout {:?}: give a positive Go duration such as 60s",
                args.http_idle_timeout
            )
        })?;
    super::tls::install_default_provider();
    let server_tls = match &cluster.tls {
        None => None,
        Some(files) => Some(std::sync::Arc::new(
            super::tls::server_config(files).map_err(anyhow::Error::msg)?,
        )),
    };
    let cluster_addr = SocketAddr::new(bind_addr(args), args.server_port);
    let cluster_listener = TcpListener::bind(cluster_addr)
        .await
        .with_context(|| format!("binding the server port on {cluster_addr}"))?;
    let is_server = cluster.server;
    let alone = cluster.bootstraps_alone();
    let server = Server::open_with(cfg, cluster)
        .await
        .context("starting the server")?;
    {
        let (args, level) = (args.clone(), level.clone());
        server.set_reloader(Box::new(move || reload(&args, &level)));
    }

    let http_addr = SocketAddr::new(args.client, args.http_port);
    let http = TcpListener::bind(http_addr)
        .await
        .with_context(|| format!("binding http on {http_addr}"))?;
    let dns_addr = SocketAddr::new(args.client, args.dns_port);
    let dns_udp = UdpSocket::bind(dns_addr)
        .await
        .with_context(|| format!("binding dns (udp) on {dns_addr}"))?;
    let dns_tcp = TcpListener::bind(dns_addr)
        .await
        .with_context(|| format!("binding dns (tcp) on {dns_addr}"))?;

    let shutdown = CancellationToken::new();
    let tasks = TaskTracker::new();
    {
        let (server, shutdown) = (server.clone(), shutdown.clone());
        tasks.spawn(async move {
            if let Err(e) =
                super::raft::network::serve(cluster_listener, server, server_tls, shutdown).await
            {
                tracing::error!("cluster listener: {e}");
            }
        });
    }
    tasks.spawn(super::cluster::probe_loop(server.clone(), shutdown.clone()));
    tasks.spawn(super::coordinate::sync_loop(
        server.clone(),
        shutdown.clone(),
    ));
    if is_server {
        tasks.spawn(super::coordinate::flush_loop(
            server.clone(),
            shutdown.clone(),
        ));
    }
    tasks.spawn(super::cluster::retry_join(server.clone(), shutdown.clone()));
    if is_server {
        if !alone {
            tasks.spawn(super::cluster::bootstrap(server.clone(), shutdown.clone()));
        }
        tasks.spawn(super::cluster::leader_loop(
            server.clone(),
            shutdown.clone(),
        ));
        {
            let (server, shutdown) = (server.clone(), shutdown.clone());
            tasks.spawn(async move { server.check_quorum(shutdown).await });
        }
    }
    {
        let (server, shutdown) = (server.clone(), shutdown.clone());
        let http_limits = super::http::HttpLimits {
            max_conns_per_client: args.http_max_conns_per_client,
            timeouts: super::http::conn::Timeouts {
                idle: http_idle,
                ..Default::default()
            },
        };
        tasks.spawn(async move {
            if let Err(e) = super::http::serve_with(http, server, shutdown, http_limits).await {
                tracing::error!("http server: {e}");
            }
        });
    }
    {
        let (server, shutdown) = (server.clone(), shutdown.clone());
        tasks.spawn(async move {
            if let Err(e) = super::dns::serve(dns_udp, dns_tcp, server, dns, shutdown).await {
                tracing::error!("dns server: {e}");
            }
        });
    }
    tasks.spawn(super::checks::run(server.clone(), shutdown.clone()));
    tasks.spawn(super::checks::anti_entropy(
        server.clone(),
        shutdown.clone(),
    ));
    tasks.spawn(expire_sessions(server.clone(), shutdown.clone()));
    tasks.spawn(super::http::agent_runtime::sample_gauges(
        server.clone(),
        shutdown.clone(),
    ));
    tasks.spawn(reap_tombstones(server.clone(), shutdown.clone()));
    tasks.close();
    tracing::info!(
        "agent {node} started (datacenter {}, server {})",
        args.datacenter,
        args.server || args.dev
    );
    // Type=notify: ready once every listener is bound and serving.
    crate::sdnotify::notify(&format!("READY=1\nSTATUS=agent {node} serving"));

    let failure = loop {
        tokio::select! {
            _ = terminate.recv() => {
                tracing::info!("SIGTERM: shutting down");
                break None;
            }
            _ = interrupt.recv() => {
                tracing::info!("SIGINT: shutting down");
                break None;
            }
            () = server.leave_requested() => {
                tracing::info!("leave requested through the API: shutting down");
                break None;
            }
            cause = server.failed() => break Some(cause),
            _ = hangup.recv() => {
                let _ = reload(args, level);
            }
            _ = user1.recv() => tracing::info!("SIGUSR1: ignored"),
            _ = user2.recv() => tracing::info!("SIGUSR2: ignored"),
        }
    };
    crate::sdnotify::notify("STOPPING=1\nSTATUS=leaving the cluster");
    // Leave first (while the listeners still answer), so the remaining
    // servers keep quorum and every member learns we left. Not when raft
    // has stopped: it can no longer leave, and a restart rejoins.
    if failure.is_none() {
        server.leave_cluster().await;
    }
    shutdown.cancel();
    if tokio::time::timeout(SHUTDOWN_DEADLINE, tasks.wait())
        .await
        .is_err()
    {
        tracing::warn!("tasks still running after {SHUTDOWN_DEADLINE:?}; exiting anyway");
    }
    match tokio::time::timeout(RAFT_STOP_DEADLINE, server.raft().shutdown()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!("stopping raft: {e}"),
        Err(_) => tracing::warn!("raft did not stop within {RAFT_STOP_DEADLINE:?}; exiting anyway"),
    }
    match failure {
        // Logged once, by `run`, and the exit status is 1, so a supervisor
        // restarts the agent (e.g. once disk space is freed).
        Some(cause) => Err(anyhow::anyhow!(
            "{cause}; raft cannot go on after a storage failure, so this agent stops: \
             fix the cause (free space on that file system, say) and start it again"
        )),
        None => Ok(()),
    }
}

/// SIGHUP: re-read what can change while running (the log level of
/// `--config-file`); a bad file is reported and changes nothing.
/// `PUT /v1/agent/reload` runs the same and answers its error.
fn reload(args: &AgentArgs, level: &crate::logging::LevelHandle) -> Result<(), String> {
    let Some(path) = &args.config_file else {
        tracing::info!("SIGHUP: nothing to reload (the log level reloads from --config-file)");
        return Ok(());
    };
    match AgentFile::read(path) {
        Ok(file) => {
            let new = file.log_level.unwrap_or_else(|| args.log_level.clone());
            level.set(&new);
            tracing::info!("SIGHUP: reloaded {}: log level {new}", path.display());
            Ok(())
        }
        Err(e) => {
            tracing::error!("SIGHUP: {e}; nothing changed");
            Err(e)
        }
    }
}

/// `--config-file`: the agent settings that can change while it runs, in
/// Consul's agent-config JSON keys.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentFile {
    pub log_level: Option<String>,
}

/// The largest `--config-file` read.
const AGENT_FILE_LIMIT: u64 = 1024 * 1024;

impl AgentFile {
    pub fn read(path: &std::path::Path) -> Result<AgentFile, String> {
        let shown = path.display();
        let text = read_small_file("--config-file", path, AGENT_FILE_LIMIT)?;
        let file: AgentFile =
            serde_json::from_str(&text).map_err(|e| format!("--config-file {shown}: {e}"))?;
        if let Some(l) = &file.log_level {
            let known = ["trace", "debug", "info", "warn", "error"];
            if !known.contains(&l.to_ascii_lowercase().as_str()) {
                return Err(format!(
                    "--config-file {shown}: log_level {l:?} is not one of {}",
                    known.join(", ")
                ));
            }
        }
        Ok(file)
    }
}

/// Sleep until the earliest session TTL deadline, then propose
/// `ExpireSessions`; re-armed after every write (creates and renews move it).
async fn expire_sessions(server: Server, shutdown: CancellationToken) {
    let mut applied = server.applied();
    let mut fired: Option<u64> = None;
    loop {
        let deadline = server.read(|s| s.next_session_deadline());
        let wait = match deadline {
            // Already proposed for this deadline and nothing expired (clock
            // rounding): don't spin, the next write or second re-checks.
            Some(d) if fired == Some(d) => Duration::from_secs(1),
            Some(d) => Duration::from_millis(d.saturating_sub(now_ms())),
            None => Duration::from_secs(3600),
        };
        tokio::select! {
            () = shutdown.cancelled() => return,
            r = applied.changed() => {
                if r.is_err() {
                    return;
                }
            }
            () = tokio::time::sleep(wait) => {
                if !server.is_leader() {
                    // Only the leader expires sessions; a new leader first
                    // resets every timer (cluster::leader_loop).
                    fired = None;
                    continue;
                }
                if let Some(d) = deadline {
                    fired = Some(d);
                    match server.write(Command::ExpireSessions).await {
                        Ok(w) => tracing::debug!("session expiry at index {}: {:?}", w.index, w.outcome),
                        Err(e) => tracing::warn!("expiring sessions: {e}"),
                    }
                }
            }
        }
    }
}

/// Every [`REAP_EVERY`], remember the applied index; reap the tombstones at or
/// below the index seen [`TOMBSTONE_TTL`] ago (the rule in `state::kv`).
async fn reap_tombstones(server: Server, shutdown: CancellationToken) {
    let mut seen: VecDeque<(tokio::time::Instant, u64)> = VecDeque::new();
    let mut reaped = 0;
    let mut tick = tokio::time::interval(REAP_EVERY);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            now = tick.tick() => {
                seen.push_back((now, server.last_index()));
                let mut up_to = None;
                while let Some(&(at, index)) = seen.front() {
                    if now.duration_since(at) < TOMBSTONE_TTL {
                        break;
                    }
                    up_to = Some(index);
                    seen.pop_front();
                }
                let Some(up_to) = up_to.filter(|u| *u > reaped) else { continue };
                if !server.is_leader() {
                    continue;
                }
                if server.read(|s| s.kv_tombstones()) == 0 {
                    continue;
                }
                match server.write(Command::ReapTombstones { up_to }).await {
                    Ok(_) => reaped = up_to,
                    Err(e) => tracing::warn!("reaping tombstones: {e}"),
                }
            }
        }
    }
}

/// Raise the soft open-file limit to the hard limit: every parked blocking
/// query holds a socket. Returns the new soft limit.
#[allow(unsafe_code)]
fn raise_nofile_limit() -> std::io::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read/write the struct we pass, which
    // lives on this stack frame for the duration of each call.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        if lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
    }
    Ok(lim.rlim_cur)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        agent: AgentArgs,
    }

    fn parse(args: &[&str]) -> AgentArgs {
        Cli::try_parse_from(std::iter::once("agent").chain(args.iter().copied()))
            .unwrap()
            .agent
    }

    #[test]
    fn needs_dev_or_a_data_dir() {
        let e = server_config(&parse(&[])).unwrap_err();
        assert!(e.contains("--data-dir is required"), "{e}");
        let cfg = server_config(&parse(&["--dev", "--node", "n1", "--domain", "cluster"])).unwrap();
        assert_eq!((cfg.node.as_str(), cfg.domain.as_str()), ("n1", "cluster."));
        assert_eq!(cfg.advertise, IpAddr::V4(Ipv4Addr::LOCALHOST));
        assert!(cfg.data_dir.is_none());
        assert!(cluster_config(&parse(&["--dev"])).unwrap().server);
    }

    #[test]
    fn consul_flags_parse() {
        let a = parse(&[
            "--server",
            "--bootstrap-expect",
            "3",
            "--data-dir",
            "/tmp/x",
            "--advertise",
            "10.0.0.1",
            "--recursor",
            "8.8.8.8",
            "--recursor",
            "1.1.1.1:5353",
            "--retry-join",
            "consul.svc",
            "--retry-join",
            "10.0.0.2",
            "--http-port",
            "18500",
        ]);
        let cfg = server_config(&a).unwrap();
        let cluster = cluster_config(&a).unwrap();
        assert_eq!(cluster.bootstrap_expect, 3);
        assert_eq!(cfg.advertise.to_string(), "10.0.0.1");
        assert_eq!(
            cfg.recursors,
            vec![
                "8.8.8.8:53".parse::<SocketAddr>().unwrap(),
                "1.1.1.1:5353".parse().unwrap()
            ]
        );
        assert_eq!(cluster.retry_join, ["consul.svc", "10.0.0.2"]);
        assert_eq!(cluster.http_port, 18500);
    }

    #[test]
    fn dns_flags_parse_with_consul_defaults() {
        assert_eq!(
            dns_config(&parse(&["--dev"])).unwrap(),
            DnsConfig::default()
        );
        let dns = dns_config(&parse(&[
            "--dns-only-passing",
            "--dns-enable-truncate",
            "--dns-udp-answer-limit",
            "5",
            "--dns-a-record-limit",
            "2",
            "--dns-node-ttl",
            "1m30s",
            "--dns-service-ttl",
            "10s",
        ]))
        .unwrap();
        assert_eq!(
            dns,
            DnsConfig {
                only_passing: true,
                enable_truncate: true,
                udp_answer_limit: 5,
                a_record_limit: 2,
                node_ttl: 90,
                service_ttl: 10,
            }
        );
        let e = dns_config(&parse(&[
            "--dns-node-ttl",
            "10",
            "--dns-service-ttl",
            "5x",
            "--dns-udp-answer-limit",
            "0",
        ]))
        .unwrap_err();
        assert!(
            e.contains("--dns-node-ttl \"10\": time: missing unit"),
            "{e}"
        );
        assert!(e.contains("--dns-service-ttl \"5x\""), "{e}");
        assert!(e.contains("--dns-udp-answer-limit 0"), "{e}");
    }
}
