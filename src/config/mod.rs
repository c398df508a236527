//! Configuration: the file format (`raw`), the validated typed `Config` (this file),
//! validation that reports every error with its key path (`validate`), Go-style
//! durations (`duration`), `${VAR:-default}` expansion (`env`) and the
//! ContainerPilot importer (`import`).
//!
//! Nothing outside this module parses the file; everything else consumes `Config`.

pub mod duration;
pub mod env;
pub mod import;
pub mod raw;
pub mod validate;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::Signal;

pub use validate::{validate, ConfigErrors};

use crate::events::EventKind;
use crate::interfaces::InterfaceSpec;

/// Exit status for a configuration that cannot be used (EX_USAGE).
pub const EXIT_CONFIG: u8 = 64;

pub const DEFAULT_SOCKET: &str = "/var/run/pilotfish.sock";

/// A validated configuration: every value typed, every cross-reference checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub consul: Option<ConsulConfig>,
    pub stop_timeout: Duration,
    pub logging: LoggingConfig,
    pub control: ControlConfig,
    pub telemetry: Option<TelemetryConfig>,
    pub jobs: Vec<JobConfig>,
    pub watches: Vec<WatchConfig>,
    pub templates: Vec<TemplateConfig>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ConsulConfig {
    /// Base URL, e.g. `http://127.0.0.1:8500`.
    pub address: String,
    pub token: Option<String>,
    pub tls: TlsConfig,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct TlsConfig {
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub server_name: Option<String>,
    pub verify: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LoggingConfig {
    /// A `tracing` level name, lowercase.
    pub level: String,
    pub format: LogFormat,
}

impl Default for LoggingConfig {
    fn default() -> Self {
        LoggingConfig {
            level: "info".into(),
            format: LogFormat::Text,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ControlConfig {
    pub socket: PathBuf,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TelemetryConfig {
    pub port: u16,
    pub interfaces: Vec<InterfaceSpec>,
    pub tags: Vec<String>,
    pub metrics: Vec<MetricDef>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    Counter,
    Gauge,
    Histogram,
}

#[derive(Debug, Clone, PartialEq)]
pub struct MetricDef {
    pub name: String,
    pub kind: MetricKind,
    pub help: String,
    pub buckets: Option<Vec<f64>>,
}

/// How many times a job is run again after its first run ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restarts {
    Never,
    Count(u32),
    Unlimited,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(30),
        }
    }
}

/// A command line: argv, already split (a `shell = true` string is `["/bin/sh", "-c", s]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exec {
    pub argv: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct HealthConfig {
    pub exec: Option<Exec>,
    pub interval: Duration,
    pub ttl: Option<Duration>,
    pub timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckStatus {
    Passing,
    Warning,
    Critical,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ServiceConfig {
    pub port: u16,
    pub tags: Vec<String>,
    pub interfaces: Vec<InterfaceSpec>,
    pub initial_status: Option<CheckStatus>,
    pub deregister_critical_service_after: Option<Duration>,
    pub enable_tag_override: bool,
}

/// Where an event comes from, as written in `when.source`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Source {
    /// startup, shutdown and maintenance events.
    Global,
    Job(String),
    Watch(String),
    Signal(Signal),
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Global => f.write_str("global"),
            Source::Job(n) => f.write_str(n),
            Source::Watch(n) => write!(f, "watch.{n}"),
            Source::Signal(s) => f.write_str(s.as_str()),
        }
    }
}

/// One condition of a `when`: an event from a source, matched once or each time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition {
    pub source: Source,
    pub event: EventKind,
    /// true for `each`, false for `once`.
    pub repeat: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Trigger {
    /// Started once when pilotfish starts (no `when`).
    Startup,
    /// Run every interval, first run at startup.
    Interval(Duration),
    /// Started when every condition has been met (one condition = plain source/once|each).
    All(Vec<Condition>),
    /// Started when any condition is met.
    Any(Vec<Condition>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct When {
    pub trigger: Trigger,
    /// Give up waiting for the trigger after this long.
    pub timeout: Option<Duration>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct JobConfig {
    pub name: String,
    pub exec: Option<Exec>,
    pub env: BTreeMap<String, String>,
    pub working_dir: Option<PathBuf>,
    pub user: Option<nix::unistd::Uid>,
    pub group: Option<nix::unistd::Gid>,
    pub when: When,
    pub restarts: Restarts,
    pub backoff: Backoff,
    pub timeout: Option<Duration>,
    pub stop_signal: Signal,
    pub stop_timeout: Duration,
    pub primary: bool,
    pub forward_signals: Vec<Signal>,
    pub raw_logging: bool,
    pub service: Option<ServiceConfig>,
    pub health: Option<HealthConfig>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchTarget {
    Service {
        name: String,
        tag: Option<String>,
        dc: Option<String>,
    },
    Key(String),
    Prefix(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct WatchConfig {
    pub name: String,
    pub target: WatchTarget,
    pub interval: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TemplateConfig {
    pub source: PathBuf,
    pub destination: PathBuf,
    pub perms: u32,
    pub check: Option<Exec>,
    pub reload_job: Option<String>,
    pub reload_signal: Signal,
    pub wait_min: Duration,
    pub wait_max: Duration,
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(ConfigErrors),
}

impl LoadError {
    /// Every problem, one per line, for a log or an HTTP body.
    pub fn messages(&self) -> Vec<String> {
        match self {
            LoadError::Read { .. } => vec![self.to_string()],
            LoadError::Invalid(errs) => errs.messages(),
        }
    }
}

/// Read, expand, parse and validate a config file.
pub fn load(path: &Path) -> Result<Config, LoadError> {
    let text = std::fs::read_to_string(path).map_err(|source| LoadError::Read {
        path: path.display().to_string(),
        source,
    })?;
    load_str(&text).map_err(LoadError::Invalid)
}

/// Parse and validate config text, reporting every error at once.
pub fn load_str(text: &str) -> Result<Config, ConfigErrors> {
    validate::parse_and_validate(text, &env::process_env())
}
