//! Log output: text or JSON lines on stderr (or stdout) through `tracing`, with a level that
//! a reload can change. Job output goes through the same subscriber (target
//! `job`), each line prefixed with `job[pid]` unless the job asks for raw output.
//!
//! Lines are written by a separate thread from a bounded queue, and dropped when
//! the queue is full: a log reader that stalls (a full pipe, a stuck log driver)
//! must never stall supervision.

use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;
use tracing_subscriber::{reload, EnvFilter, Registry};

use crate::config::{LogFormat, LogOutput, LoggingConfig};

/// Changes the level of the installed subscriber.
#[derive(Clone, Debug)]
pub struct LevelHandle(reload::Handle<EnvFilter, Registry>);

impl LevelHandle {
    /// The most verbose level in effect (`info`, `debug`, ...).
    pub fn current(&self) -> String {
        self.0
            .with_current(|f| f.max_level_hint())
            .ok()
            .flatten()
            .map_or_else(|| "off".to_string(), |l| l.to_string().to_lowercase())
    }

    pub fn set(&self, level: &str) {
        if let Err(e) = self.0.modify(|f| *f = EnvFilter::new(filter_for(level))) {
            tracing::warn!("cannot change the log level: {e}");
        }
    }
}

/// The level for pilotfish; the DNS library logs every query at info, so it
/// only speaks up for warnings.
fn filter_for(level: &str) -> String {
    format!("{level},hickory_server=warn,hickory_proto=warn,hickory_resolver=warn,openraft=warn")
}

/// Keep it alive until exit: dropping it flushes queued lines.
pub type FlushGuard = tracing_appender::non_blocking::WorkerGuard;

/// Lines queued for the writer thread before new ones are dropped. With job
/// output cut at 16 KiB a line (`supervisor::process::MAX_LINE`), a log
/// reader that stalls costs at most 16 MiB of queue.
pub const QUEUED_LINES: usize = 1024;

/// Install the global subscriber. `PILOTFISH_LOG` (an EnvFilter string) overrides the level.
pub fn init(cfg: &LoggingConfig) -> (LevelHandle, FlushGuard) {
    let filter = std::env::var("PILOTFISH_LOG")
        .ok()
        .map(EnvFilter::new)
        .unwrap_or_else(|| EnvFilter::new(filter_for(&cfg.level)));
    let (filter, handle) = reload::Layer::new(filter);
    let registry = tracing_subscriber::registry().with(filter);
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(QUEUED_LINES)
        .thread_name("pilotfish-log")
        .finish(match cfg.output {
            LogOutput::Stderr => Box::new(std::io::stderr()) as Box<dyn std::io::Write + Send>,
            LogOutput::Stdout => Box::new(std::io::stdout()),
        });
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(writer)
        .with_target(false);
    let quiet = filter_fn(|meta| !is_raft_rpc_noise(meta));
    match cfg.format {
        LogFormat::Text => registry
            .with(fmt.with_ansi(false).with_filter(quiet))
            .init(),
        LogFormat::Json => registry
            .with(fmt.json().flatten_event(true).with_filter(quiet))
            .init(),
    }
    (LevelHandle(handle), guard)
}

/// openraft 0.9 logs every failed RPC to another server at ERROR, on every
/// retry: a server whose peers are down wrote two lines every 300 ms. These
/// are its per-attempt network failures (a vote request, an RPC timeout, a
/// replication RPC error), recognised by their target and fields since
/// openraft is pinned; the cluster transport (`raft::network`) logs each
/// peer's reachability once per change instead. Storage errors and every
/// other openraft event still pass.
fn is_raft_rpc_noise(meta: &tracing::Metadata<'_>) -> bool {
    let target = meta.target();
    if !target.starts_with("openraft") || *meta.level() > tracing::Level::WARN {
        return false;
    }
    let has = |name: &str| meta.fields().field(name).is_some();
    match target {
        // "while requesting vote", "timeout" (a vote), "timeout while
        // confirming leadership": each names the other server in `target`.
        "openraft::core::raft_core" => has("target") && has("error"),
        // "RPCError" (error) and "error replication to target=…" (warn);
        // the storage-error line (error, field `error`) is kept.
        "openraft::replication" => {
            has("err") || (*meta.level() == tracing::Level::WARN && has("error"))
        }
        _ => false,
    }
}
