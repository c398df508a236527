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
    pub watches: Vec<String>,
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
