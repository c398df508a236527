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
    /// Where pilotfish's own lines (and jobs' relayed output) go.
    pub output: LogOutput,
}

/// `logging.output`: stderr (pilotfish's default) or stdout (ContainerPilot's).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub enum LogOutput {
    #[default]
    Stderr,
    Stdout,
}

impl Default for LoggingConfig {
    fn default() -> Self {
        LoggingConfig {
            level: "info".into(),
            format: LogFormat::Text,
            output: LogOutput::Stderr,
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
    /// The Consul service the endpoint registers as (`pilotfish`;
    /// ContainerPilot's was `containerpilot`).
    pub service: String,
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

/// A service job without `health` heartbeats this often while its process
/// runs, with this TTL.
pub const SERVICE_HEARTBEAT: Duration = Duration::from_secs(5);
pub const SERVICE_TTL: Duration = Duration::from_secs(15);

#[derive(Debug, Clone, PartialEq)]
pub struct ServiceConfig {
    pub port: u16,
    /// Service ID; None: `<name>-<hostname>`.
    pub id: Option<String>,
    pub meta: BTreeMap<String, String>,
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
    Template(String),
    Signal(Signal),
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Global => f.write_str("global"),
            Source::Job(n) => f.write_str(n),
            Source::Watch(n) => write!(f, "watch.{n}"),
            Source::Template(n) => write!(f, "template.{n}"),
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
    /// Run every `every`, the first run at startup, or when `after` is met
    /// (a `once` condition: start the period after, say, preStart succeeded).
    Interval {
        every: Duration,
        after: Option<Condition>,
    },
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

impl When {
    /// The conditions this trigger waits on (none for startup and plain
    /// interval jobs; an interval's `after` is one).
    pub fn conditions(&self) -> &[Condition] {
        match &self.trigger {
            Trigger::All(cs) | Trigger::Any(cs) => cs,
            Trigger::Interval { after: Some(c), .. } => std::slice::from_ref(c),
            Trigger::Startup | Trigger::Interval { after: None, .. } => &[],
        }
    }
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
    /// Event source `template.<name>`.
    pub name: String,
    /// The file the text came from (None for `contents`).
    pub source: Option<PathBuf>,
    /// The handlebars text, read and parsed when the config loads.
    pub text: String,
    pub destination: PathBuf,
    /// None: keep the existing file's mode, else 0644.
    pub perms: Option<u32>,
    pub backup: bool,
    pub create_dest_dirs: bool,
    /// argv run on the candidate; `{candidate}` replaced by its path.
    pub check: Option<Vec<String>>,
    pub check_timeout: Duration,
    pub reload: Option<Reload>,
    /// Quiescence (min, max); None renders every change at once.
    pub wait: Option<(Duration, Duration)>,
    pub min_instances: BTreeMap<String, usize>,
    /// Reload-free mode: HAProxy's admin socket.
    pub haproxy_socket: Option<PathBuf>,
}

/// What a template does once per change batch after its file is installed.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reload {
    /// Signal a supervised job's main process (e.g. SIGUSR2 to HAProxy's master).
    Job { job: String, signal: Signal },
    /// Run a command under a timeout.
    Exec {
        argv: Vec<String>,
        timeout: Duration,
    },
}

/// Default quiescence of a template that reloads something: a burst of
/// catalog changes becomes one reload.
pub const TEMPLATE_WAIT: (Duration, Duration) = (Duration::from_secs(2), Duration::from_secs(10));

/// The largest config file pilotfish reads. Real ones are a few KiB; the cap
/// keeps a wrong path (a device, a log file, `/dev/zero`) from exhausting memory
/// at start or, worse, on a reload while jobs run.
pub const MAX_CONFIG_BYTES: u64 = 4 * 1024 * 1024;

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is {kind}, not a regular file; point the config path at a regular file")]
    NotAFile { path: String, kind: &'static str },
    #[error(
        "{path} is larger than {} MiB; a config file must be at most {MAX_CONFIG_BYTES} bytes (is it the right file?)",
        MAX_CONFIG_BYTES / (1024 * 1024)
    )]
    TooLarge { path: String },
    #[error("{0}")]
    Invalid(ConfigErrors),
}

impl LoadError {
    /// Every problem, one per line, for a log or an HTTP body.
    pub fn messages(&self) -> Vec<String> {
        match self {
            LoadError::Invalid(errs) => errs.messages(),
            _ => vec![self.to_string()],
        }
    }
}

/// Read, expand, parse and validate a config file.
pub fn load(path: &Path) -> Result<Config, LoadError> {
    let text = read_file(path)?;
    validate::parse_and_validate_in(&text, &env::process_env(), path.parent())
        .map_err(LoadError::Invalid)
}

/// Read a config file as text: a regular file (or a link to one) of at most
/// [`MAX_CONFIG_BYTES`]. Anything else is refused before it is read.
pub fn read_file(path: &Path) -> Result<String, LoadError> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;

    let shown = || path.display().to_string();
    let read_err = |source| LoadError::Read {
        path: shown(),
        source,
    };
    // Checked before opening: opening a device or a FIFO can block or act.
    check_file(path, &std::fs::metadata(path).map_err(read_err)?)?;
    // Non-blocking, in case the path was swapped for a FIFO since; checked
    // again on what was actually opened.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(read_err)?;
    check_file(path, &file.metadata().map_err(read_err)?)?;
    // One byte past the cap tells a file that grew since apart from one at it.
    let mut text = String::new();
    file.take(MAX_CONFIG_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(read_err)?;
    if text.len() as u64 > MAX_CONFIG_BYTES {
        return Err(LoadError::TooLarge { path: shown() });
    }
    Ok(text)
}

fn check_file(path: &Path, meta: &std::fs::Metadata) -> Result<(), LoadError> {
    use std::os::unix::fs::FileTypeExt;

    let t = meta.file_type();
    let kind = if t.is_file() {
        if meta.len() > MAX_CONFIG_BYTES {
            return Err(LoadError::TooLarge {
                path: path.display().to_string(),
            });
        }
        return Ok(());
    } else if t.is_dir() {
        "a directory"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else {
        "an unusual kind of file"
    };
    Err(LoadError::NotAFile {
        path: path.display().to_string(),
        kind,
    })
}

/// Parse and validate config text, reporting every error at once.
pub fn load_str(text: &str) -> Result<Config, ConfigErrors> {
    validate::parse_and_validate(text, &env::process_env())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_link_to_a_regular_file_is_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("real.toml");
        std::fs::write(&file, "stop_timeout = \"5s\"\n").expect("write");
        let link = dir.path().join("link.toml");
        std::os::unix::fs::symlink(&file, &link).expect("symlink");
        assert_eq!(read_file(&link).expect("read"), "stop_timeout = \"5s\"\n");
    }

    #[test]
    fn devices_directories_and_fifos_are_refused_unread() {
        let dir = tempfile::tempdir().expect("tempdir");
        let link = dir.path().join("zero.toml");
        std::os::unix::fs::symlink("/dev/zero", &link).expect("symlink");
        let fifo = dir.path().join("fifo.toml");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).expect("mkfifo");
        for (path, kind) in [
            (link, "a character device"),
            (dir.path().to_path_buf(), "a directory"),
            // Would block forever if it were opened for reading.
            (fifo, "a FIFO"),
        ] {
            let err = load(&path).expect_err("refused").to_string();
            assert_eq!(
                err,
                format!(
                    "{} is {kind}, not a regular file; point the config path at a regular file",
                    path.display()
                )
            );
        }
    }

    #[test]
    fn a_file_over_the_cap_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("big.toml");
        let line = format!("# {}\n", "x".repeat(1021));
        std::fs::write(&path, line.repeat(4 * 1024 + 1)).expect("write");
        let err = load(&path).expect_err("refused").to_string();
        assert!(
            err.starts_with(&format!("{} is larger than 4 MiB", path.display())),
            "{err}"
        );
        // At the cap exactly it is still a config.
        std::fs::write(&path, line.repeat(4 * 1024)).expect("write");
        assert!(load(&path).is_ok());
    }
}
