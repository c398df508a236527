//! The control plane: ContainerPilot's `/v3` HTTP API on a Unix socket (`server`)
//! and the CLI client that talks to it (`client`). The server only translates HTTP
//! into `ControlRequest`s for the supervisor; it owns no supervisor state.

pub mod client;
pub mod server;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

/// What the control plane asks of the supervisor. Every request carries its reply.
#[derive(Debug)]
pub enum ControlRequest {
    /// Set (or, with `None`, unset) environment variables for future children.
    PutEnv {
        vars: BTreeMap<String, Option<String>>,
        reply: oneshot::Sender<()>,
    },
    /// Re-read and validate the config file; on success apply it job by job.
    Reload {
        reply: oneshot::Sender<Result<ReloadSummary, Vec<String>>>,
    },
    Maintenance {
        enable: bool,
        reply: oneshot::Sender<()>,
    },
    /// Record user metric values; every bad name or value is reported, nothing crashes.
    PutMetric {
        values: Vec<(String, MetricValue)>,
        reply: oneshot::Sender<Result<(), Vec<String>>>,
    },
    Status {
        reply: oneshot::Sender<StatusSnapshot>,
    },
}

/// A metric value as sent by clients: ContainerPilot's CLI sends strings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum MetricValue {
    Number(f64),
    Text(String),
}

/// What a successful reload changed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReloadSummary {
    pub unchanged: Vec<String>,
    pub started: Vec<String>,
    pub stopped: Vec<String>,
    pub restarted: Vec<String>,
}

/// The state of every job, for `GET /v3/status`, `pilotfish status` and telemetry `/status`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StatusSnapshot {
    pub version: String,
    pub maintenance: bool,
    pub jobs: Vec<JobStatus>,
    /// Each service job's registration with the discovery agent.
    #[serde(default)]
    pub services: Vec<ServiceStatus>,
    #[serde(default)]
    pub watches: Vec<WatchStatus>,
    #[serde(default)]
    pub templates: Vec<TemplateStatus>,
}

/// Seconds since the Unix epoch: the clock of the `*_since` and
/// `last_change` fields below.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// One service's registration, as `supervisor::registration` last saw it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceStatus {
    pub name: String,
    pub id: String,
    /// unregistered, passing, warning, critical, maintenance, deregistered
    pub state: String,
    /// `ip:port` of the last registration.
    #[serde(default)]
    pub address: Option<String>,
    /// Unix seconds when the check last turned critical.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub critical_since: Option<u64>,
    /// Unix seconds since when the agent has been unreachable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outage_since: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// One watch, as `supervisor::watch` last saw it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchStatus {
    pub name: String,
    /// What it watches: `service web tag rest`, `key config/x`, `prefix config/`.
    pub target: String,
    /// Passing instances, or KV entries; None before the first answer.
    #[serde(default)]
    pub instances: Option<usize>,
    /// Unix seconds of the last `changed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_change: Option<u64>,
    /// Unix seconds since when the agent has been unreachable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outage_since: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// One `[[templates]]` entry, as `template` last saw it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TemplateStatus {
    pub name: String,
    pub destination: String,
    /// waiting (for the first answers), ok, stale, failed
    pub state: String,
    /// Distinct Consul queries it reads.
    pub queries: usize,
    /// Renders that went through every step (installed or unchanged).
    pub renders: u64,
    /// Times its file was installed.
    pub installs: u64,
    /// Unix seconds of the last install.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_install: Option<u64>,
    /// Unix seconds since when the agent has not answered one of its queries:
    /// the file on disk is the last good one, possibly out of date.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stale_since: Option<u64>,
    /// The last render, check, guard or install failure (cleared by success).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobStatus {
    pub name: String,
    /// waiting, starting, running, backoff, stopping, stopped, completed
    pub state: String,
    pub pid: Option<u32>,
    pub runs: u32,
    pub restarts: u32,
    /// Last exit status (128+N when killed by signal N).
    pub last_exit: Option<i32>,
    /// unknown, healthy, unhealthy, maintenance; absent when the job has no health check.
    pub health: Option<String>,
    pub port: Option<u16>,
}
