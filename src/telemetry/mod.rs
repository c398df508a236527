//! Prometheus `/metrics` and JSON `/status` (written by the telemetry helper).

/// Prometheus metric name grammar: `[a-zA-Z_:][a-zA-Z0-9_:]*`.
pub fn valid_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

// Placeholder until the telemetry module lands (merge replaces this file).
pub const JOB_STARTS: &str = "pilotfish_job_starts_total";
pub const JOB_RESTARTS: &str = "pilotfish_job_restarts_total";
pub const JOB_EXITS: &str = "pilotfish_job_exits_total";
pub const JOB_HEALTHY: &str = "pilotfish_job_healthy";
pub const EVENTS: &str = "pilotfish_events_total";
pub const CONTROL_REQUESTS: &str = "pilotfish_control_requests_total";

pub struct UserMetrics;
impl UserMetrics {
    pub fn new(_defs: &[crate::config::MetricDef]) -> UserMetrics {
        UserMetrics
    }
    pub fn apply(
        &self,
        _values: &[(String, crate::control::MetricValue)],
    ) -> Result<(), Vec<String>> {
        Err(vec!["telemetry not merged yet".into()])
    }
}
pub fn install_recorder(
    _defs: &[crate::config::MetricDef],
) -> metrics_exporter_prometheus::PrometheusHandle {
    metrics_exporter_prometheus::PrometheusBuilder::new()
        .build_recorder()
        .handle()
}
pub async fn serve(
    _l: tokio::net::TcpListener,
    _h: metrics_exporter_prometheus::PrometheusHandle,
    _r: tokio::sync::mpsc::Sender<crate::control::ControlRequest>,
    s: tokio_util::sync::CancellationToken,
) -> std::io::Result<()> {
    s.cancelled().await;
    Ok(())
}
