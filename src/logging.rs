//! Log output: text or JSON lines on stderr through `tracing`, with a level that
//! a reload can change. Job output goes through the same subscriber (target
//! `job`), each line prefixed with `job[pid]` unless the job asks for raw output.
//!
//! Lines are written by a separate thread from a bounded queue, and dropped when
//! the queue is full: a log reader that stalls (a full pipe, a stuck log driver)
//! must never stall supervision.

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Registry};

use crate::config::{LogFormat, LoggingConfig};

/// Changes the level of the installed subscriber.
pub struct LevelHandle(reload::Handle<EnvFilter, Registry>);

impl LevelHandle {
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

/// Lines queued for the writer thread before new ones are dropped.
const QUEUED_LINES: usize = 2048;

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
        .finish(std::io::stderr());
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(writer)
        .with_target(false);
    match cfg.format {
        LogFormat::Text => registry.with(fmt.with_ansi(false)).init(),
        LogFormat::Json => registry.with(fmt.json().flatten_event(true)).init(),
    }
    (LevelHandle(handle), guard)
}
