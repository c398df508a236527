//! Telemetry: the process-wide Prometheus recorder, the names of pilotfish's built-in
//! metrics, the user metrics declared in `[[telemetry.metrics]]` (validated and applied
//! all-or-nothing), and the HTTP server for `GET /metrics` and `GET /status`. It owns
//! no supervisor state: `/status` asks the supervisor through a `ControlRequest`.
//!
//! The recorder is global (the `metrics` facade has one recorder per process), so it is
//! installed once; histogram buckets are fixed at that moment and a reload cannot change
//! them (a restart can).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, OnceLock, PoisonError};

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::config::{MetricDef, MetricKind};
use crate::control::{ControlRequest, MetricValue};

/// Counter, label `job`: every time a job's process is started.
pub const JOB_STARTS: &str = "pilotfish_job_starts_total";
/// Counter, label `job`: every start after the first one.
pub const JOB_RESTARTS: &str = "pilotfish_job_restarts_total";
/// Counter, labels `job`, `code` (exit code, 128+N for signal N).
pub const JOB_EXITS: &str = "pilotfish_job_exits_total";
/// Gauge, label `job`: 1 healthy, 0 unhealthy.
pub const JOB_HEALTHY: &str = "pilotfish_job_healthy";
/// Gauge, label `watch`: passing instances (or keys) in the watch's last answer.
pub const WATCH_INSTANCES: &str = "pilotfish_watch_instances";
/// Counter, labels `kind`, `source`: every event published on the bus.
pub const EVENTS: &str = "pilotfish_events_total";
/// Counter, label `template`: files installed.
pub const TEMPLATE_INSTALLS: &str = "pilotfish_template_installs_total";
/// Counter, labels `template`, `stage` (render, guard, check, install, reload):
/// failures that kept the last good file.
pub const TEMPLATE_ERRORS: &str = "pilotfish_template_errors_total";
/// Counter, labels `template`, `how` (signal, exec, runtime_api): reload
/// actions fired (runtime_api: instance changes applied without a reload).
pub const TEMPLATE_RELOADS: &str = "pilotfish_template_reloads_total";
/// Gauge: distinct Consul queries the templates watch.
pub const TEMPLATE_QUERIES: &str = "pilotfish_template_queries";
/// Counter, labels `path` (the route, never the raw path) and `code`.
pub const CONTROL_REQUESTS: &str = "pilotfish_control_requests_total";

/// Prometheus' client-library default buckets, used for user histograms that declare
/// none, so that they render as histograms (as ContainerPilot's did) and not as summaries.
pub const DEFAULT_BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Install the global Prometheus recorder once (idempotent; later calls return the same
/// handle and ignore their `defs`). Histogram user metrics get their configured buckets
/// (or [`DEFAULT_BUCKETS`]). Describes the built-in metrics.
///
/// If another recorder was installed in this process first, a warning is logged and the
/// returned handle renders only what is recorded through it (nothing, via the facade).
pub fn install_recorder(defs: &[MetricDef]) -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let builder = builder_for(defs).unwrap_or_else(|e| {
                tracing::warn!("histogram buckets ignored: {e}");
                PrometheusBuilder::new()
            });
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            if let Err(e) = metrics::set_global_recorder(recorder) {
                tracing::warn!(
                    "another metrics recorder is already installed ({e}); /metrics will be empty"
                );
            }
            describe_builtins();
            handle
        })
        .clone()
}

fn builder_for(defs: &[MetricDef]) -> Result<PrometheusBuilder, BuildError> {
    let mut builder = PrometheusBuilder::new();
    for def in defs.iter().filter(|d| d.kind == MetricKind::Histogram) {
        let buckets = match def.buckets.as_deref() {
            Some(b) if !b.is_empty() => b,
            _ => &DEFAULT_BUCKETS[..],
        };
        builder = builder.set_buckets_for_metric(Matcher::Full(def.name.clone()), buckets)?;
    }
    Ok(builder)
}

fn describe_builtins() {
    metrics::describe_counter!(JOB_STARTS, "Times a job's process was started.");
    metrics::describe_counter!(JOB_RESTARTS, "Times a job's process was restarted.");
    metrics::describe_counter!(
        JOB_EXITS,
        "Job process exits by exit code (128+N for signal N)."
    );
    metrics::describe_gauge!(JOB_HEALTHY, "1 if the job's health check passes, else 0.");
    metrics::describe_gauge!(
        WATCH_INSTANCES,
        "Passing instances (or KV entries) in the watch's last answer."
    );
    metrics::describe_counter!(EVENTS, "Events published on the event bus.");
    metrics::describe_counter!(TEMPLATE_INSTALLS, "Rendered template files installed.");
    metrics::describe_counter!(
        TEMPLATE_ERRORS,
        "Template failures that kept the last good file, by stage."
    );
    metrics::describe_counter!(
        TEMPLATE_RELOADS,
        "Reload actions fired after templates were installed, by kind."
    );
    metrics::describe_gauge!(
        TEMPLATE_QUERIES,
        "Distinct Consul queries the templates watch."
    );
    metrics::describe_counter!(
        CONTROL_REQUESTS,
        "Requests served by the control socket, by route and status code."
    );
}

/// Count one start of `job` (and one restart when it is not the first run).
pub fn record_job_start(job: &str, restart: bool) {
    metrics::counter!(JOB_STARTS, "job" => job.to_owned()).increment(1);
    if restart {
        metrics::counter!(JOB_RESTARTS, "job" => job.to_owned()).increment(1);
    }
}

/// Count one exit of `job` with `code` (128+N for signal N).
pub fn record_job_exit(job: &str, code: i32) {
    metrics::counter!(JOB_EXITS, "job" => job.to_owned(), "code" => code.to_string()).increment(1);
}

/// Set the health gauge of `job`.
pub fn set_job_healthy(job: &str, healthy: bool) {
    metrics::gauge!(JOB_HEALTHY, "job" => job.to_owned()).set(if healthy { 1.0 } else { 0.0 });
}

/// Count one bus event of `kind` from `source`.
pub fn record_event(kind: &str, source: &str) {
    metrics::counter!(EVENTS, "kind" => kind.to_owned(), "source" => source.to_owned())
        .increment(1);
}

/// Whether `name` is a valid Prometheus metric name: `[a-zA-Z_:][a-zA-Z0-9_:]*`.
pub fn valid_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    match chars.next() {
        Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':' => {}
        _ => return false,
    }
    chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// User metrics declared in `[[telemetry.metrics]]`.
///
/// Counters accept fractional increments: the exact `f64` total is kept here and the
/// exported Prometheus counter (an integer in the exporter) is advanced by the whole
/// units that total has crossed, so `0.5` twice shows as `1`, integer increments are
/// exact, and the exported value never goes down. A new `UserMetrics` (after a reload)
/// keeps adding to the exported counter; only a pending fraction below 1 is lost.
#[derive(Debug)]
pub struct UserMetrics {
    kinds: BTreeMap<String, MetricKind>,
    counter_totals: Mutex<HashMap<String, f64>>,
}

impl UserMetrics {
    /// Register (so they render as 0 before any value arrives) and describe every declared
    /// metric. Call [`install_recorder`] first, or the registrations go nowhere; values
    /// applied later are recorded either way.
    pub fn new(defs: &[MetricDef]) -> UserMetrics {
        let mut kinds = BTreeMap::new();
        for def in defs {
            let name = def.name.clone();
            let help = def.help.clone();
            match def.kind {
                MetricKind::Counter => {
                    metrics::describe_counter!(name.clone(), help);
                    let _ = metrics::counter!(name.clone());
                }
                MetricKind::Gauge => {
                    metrics::describe_gauge!(name.clone(), help);
                    let _ = metrics::gauge!(name.clone());
                }
                MetricKind::Histogram => {
                    metrics::describe_histogram!(name.clone(), help);
                    let _ = metrics::histogram!(name.clone());
                }
            }
            kinds.insert(name, def.kind);
        }
        UserMetrics {
            kinds,
            counter_totals: Mutex::new(HashMap::new()),
        }
    }

    /// Names of the declared metrics, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.kinds.keys().map(String::as_str)
    }

    /// Validate every value first; apply them only if all are valid. Each error names the
    /// metric and the value. counter: increment, gauge: set, histogram: record.
    pub fn apply(&self, values: &[(String, MetricValue)]) -> Result<(), Vec<String>> {
        let mut errors = Vec::new();
        let mut checked = Vec::with_capacity(values.len());
        for (name, value) in values {
            match self.check(name, value) {
                Ok(ok) => checked.push(ok),
                Err(e) => errors.push(e),
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let mut recorded_histogram = false;
        for (name, kind, v) in checked {
            match kind {
                MetricKind::Counter => self.increment_counter(name, v),
                MetricKind::Gauge => metrics::gauge!(name.to_owned()).set(v),
                MetricKind::Histogram => {
                    metrics::histogram!(name.to_owned()).record(v);
                    recorded_histogram = true;
                }
            }
        }
        if recorded_histogram {
            // Fold raw samples into the fixed-size bucket counts now, so memory stays
            // bounded even when nobody scrapes /metrics.
            if let Some(handle) = HANDLE.get() {
                handle.run_upkeep();
            }
        }
        Ok(())
    }

    fn check<'a>(
        &self,
        name: &'a str,
        value: &MetricValue,
    ) -> Result<(&'a str, MetricKind, f64), String> {
        let Some(&kind) = self.kinds.get(name) else {
            return Err(if self.kinds.is_empty() {
                format!(
                    "unknown metric {name:?}: no metrics are declared; add a \
                     [[telemetry.metrics]] entry for it"
                )
            } else {
                let declared: Vec<&str> = self.names().collect();
                format!(
                    "unknown metric {name:?}; declared metrics: {}",
                    declared.join(", ")
                )
            });
        };
        let v = match value {
            MetricValue::Number(v) => *v,
            MetricValue::Text(s) => s.trim().parse::<f64>().map_err(|_| {
                format!("metric {name:?}: value {s:?} is not a number; send e.g. {name}=1.5")
            })?,
        };
        if !v.is_finite() {
            return Err(format!(
                "metric {name:?}: value {} is not a finite number; send a finite number",
                describe(value)
            ));
        }
        if kind == MetricKind::Counter && v < 0.0 {
            return Err(format!(
                "metric {name:?} is a counter: increment {v} is negative; counters only go up \
                 (declare it as a gauge to set arbitrary values)"
            ));
        }
        Ok((name, kind, v))
    }

    fn increment_counter(&self, name: &str, v: f64) {
        let mut totals = self
            .counter_totals
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let total = totals.entry(name.to_owned()).or_insert(0.0);
        let before = *total;
        *total += v;
        // `as` saturates for huge and infinite totals, which is what a counter wants.
        let whole = (total.floor() as u64).saturating_sub(before.floor() as u64);
        metrics::counter!(name.to_owned()).increment(whole);
    }
}

fn describe(value: &MetricValue) -> String {
    match value {
        MetricValue::Number(v) => v.to_string(),
        MetricValue::Text(s) => format!("{s:?}"),
    }
}

#[derive(Clone)]
struct TelemetryState {
    handle: PrometheusHandle,
    requests: mpsc::Sender<ControlRequest>,
}

/// Serve `GET /metrics` (Prometheus text exposition) and `GET /status` (JSON
/// `StatusSnapshot`, asked of the supervisor on `requests`) until `shutdown` is cancelled.
/// Other methods get 405, other paths 404. Logs one `listening for telemetry on <addr>`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    handle: PrometheusHandle,
    requests: mpsc::Sender<ControlRequest>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let addr = listener.local_addr()?;
    let app = Router::new()
        .route("/metrics", get(metrics_page))
        .route("/status", get(status_page))
        // The jobs page (`crate::ui::jobs`), read-only.
        .route(
            "/",
            get(|| async { axum::response::Redirect::permanent("/ui/") }),
        )
        .route("/ui/", get(jobs_page))
        .route(
            "/ui/assets/{name}",
            get(
                |axum::extract::Path(name): axum::extract::Path<String>| async move {
                    crate::ui::asset(&name).unwrap_or_else(|| StatusCode::NOT_FOUND.into_response())
                },
            ),
        )
        .fallback(|| async {
            (
                StatusCode::NOT_FOUND,
                "not found; try /metrics, /status or /ui/\n",
            )
        })
        .with_state(TelemetryState { handle, requests });
    tracing::info!("listening for telemetry on {addr}");
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}

async fn metrics_page(State(state): State<TelemetryState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.handle.render(),
    )
        .into_response()
}

async fn status_page(State(state): State<TelemetryState>) -> Response {
    match snapshot(&state).await {
        Some(snapshot) => Json(snapshot).into_response(),
        None => shutting_down(),
    }
}

async fn jobs_page(State(state): State<TelemetryState>) -> Response {
    match snapshot(&state).await {
        Some(snapshot) => crate::ui::jobs::page(&snapshot),
        None => shutting_down(),
    }
}

/// The supervisor's status; `None` once it has stopped answering.
async fn snapshot(state: &TelemetryState) -> Option<crate::control::StatusSnapshot> {
    let (reply, answer) = oneshot::channel();
    state
        .requests
        .send(ControlRequest::Status { reply })
        .await
        .ok()?;
    answer.await.ok()
}

fn shutting_down() -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        "pilotfish is shutting down\n",
    )
        .into_response()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    #[test]
    fn metric_names() {
        for good in ["a", "_x", ":y", "app_requests_total", "a:b:c_9"] {
            assert!(valid_metric_name(good), "{good}");
        }
        for bad in ["", "9a", "a-b", "a b", "é", "a.b"] {
            assert!(!valid_metric_name(bad), "{bad}");
        }
    }
}
