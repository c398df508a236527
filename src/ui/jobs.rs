//! The supervisor's jobs page, served on the telemetry port of `pilotfish
//! run` (read-only, the UI's look): each job's state, pid, runs, restarts,
//! last exit and health, each service's registration and each watch's and
//! template's state, from the same `StatusSnapshot` as `/status`.

use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{json, Value};

use crate::control::{unix_now, StatusSnapshot};

/// `12s ago`, `3m ago`, … for a Unix-seconds timestamp.
fn ago(at: Option<u64>, now: u64) -> Value {
    let Some(at) = at else { return Value::Null };
    let s = now.saturating_sub(at);
    Value::from(match s {
        0..=119 => format!("{s}s ago"),
        120..=7199 => format!("{}m ago", s / 60),
        _ => format!("{}h ago", s / 3600),
    })
}

/// A job's state as a status class: running and healthy is passing.
fn job_status(state: &str, health: Option<&str>) -> &'static str {
    match (state, health) {
        (_, Some("unhealthy")) => "critical",
        (_, Some("maintenance")) => "warning",
        ("running" | "completed", _) => "passing",
        ("backoff" | "stopped", _) => "critical",
        _ => "warning",
    }
}

/// The page's data (pure; `now` in Unix seconds).
pub fn view(s: &StatusSnapshot, now: u64) -> Value {
    let jobs: Vec<Value> = s
        .jobs
        .iter()
        .map(|j| {
            json!({
                "name": j.name, "state": j.state, "pid": j.pid, "runs": j.runs,
                "restarts": j.restarts, "last_exit": j.last_exit, "health": j.health,
                "port": j.port, "status": job_status(&j.state, j.health.as_deref()),
            })
        })
        .collect();
    let services: Vec<Value> = s
        .services
        .iter()
        .map(|r| {
            let status = match r.state.as_str() {
                "passing" => "passing",
                "critical" | "unregistered" | "deregistered" => "critical",
                _ => "warning",
            };
            json!({
                "name": r.name, "id": r.id, "state": r.state, "address": r.address,
                "status": status, "critical_since": ago(r.critical_since, now),
                "outage_since": ago(r.outage_since, now), "last_error": r.last_error,
            })
        })
        .collect();
    let watches: Vec<Value> = s
        .watches
        .iter()
        .map(|w| {
            json!({
                "name": w.name, "target": w.target, "instances": w.instances,
                "last_change": ago(w.last_change, now), "outage_since": ago(w.outage_since, now),
                "last_error": w.last_error,
            })
        })
        .collect();
    let templates: Vec<Value> = s
        .templates
        .iter()
        .map(|t| {
            json!({
                "name": t.name, "destination": t.destination, "state": t.state,
                "status": match t.state.as_str() { "ok" => "passing", "failed" => "critical", _ => "warning" },
                "queries": t.queries, "renders": t.renders, "installs": t.installs,
                "last_install": ago(t.last_install, now), "stale_since": ago(t.stale_since, now),
                "last_error": t.last_error,
            })
        })
        .collect();
    json!({
        "title": "Jobs",
        "jobs_page": true,
        "agent": {"node": "supervisor", "dc": format!("pilotfish {}", s.version)},
        "maintenance": s.maintenance,
        "jobs": jobs,
        "services": services,
        "watches": watches,
        "templates": templates,
    })
}

/// The rendered page.
pub fn page(s: &StatusSnapshot) -> Response {
    super::render("jobs", StatusCode::OK, &view(s, unix_now()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;
    use crate::control::JobStatus;

    #[test]
    fn jobs_render_with_their_status() {
        let s = StatusSnapshot {
            version: "1".into(),
            jobs: vec![JobStatus {
                name: "<web>".into(),
                state: "running".into(),
                pid: Some(7),
                runs: 2,
                restarts: 1,
                last_exit: Some(1),
                health: Some("unhealthy".into()),
                port: Some(80),
            }],
            ..StatusSnapshot::default()
        };
        let v = view(&s, 100);
        assert_eq!(v["jobs"][0]["status"], "critical");
        let html = super::super::engine().unwrap().render("jobs", &v).unwrap();
        assert!(html.contains("&lt;web&gt;") && html.contains("unhealthy"));
    }

    #[test]
    fn ages_read_naturally() {
        assert_eq!(ago(Some(90), 100), json!("10s ago"));
        assert_eq!(ago(Some(0), 600), json!("10m ago"));
        assert_eq!(ago(None, 1), Value::Null);
    }
}
