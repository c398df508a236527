//! Log output: text or JSON lines on stderr (or stdout) through `tracing`, with a level that
//! a reload can change. Job output goes through the same subscriber (target
//! `job`), each line prefixed with `job[pid]` unless the job asks for raw output.
//!
//! Lines are written by a separate thread from a bounded queue, and dropped when
//! the queue is full: a log reader that stalls (a full pipe, a stuck log driver)
//! must never stall supervision.

use tracing_subscriber::filter::{filter_fn, FilterExt};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;
use tracing_subscriber::{reload, EnvFilter, Registry};

use crate::config::{LogFormat, LogOutput, LoggingConfig};

/// `--log-format` of the commands that log without a job config (`agent`,
/// `registrator`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormatArg {
    Text,
    Json,
}

impl From<LogFormatArg> for LogFormat {
    fn from(a: LogFormatArg) -> LogFormat {
        match a {
            LogFormatArg::Json => LogFormat::Json,
            LogFormatArg::Text => LogFormat::Text,
        }
    }
}

/// What the written log's filter sits on: the registry with the monitors'
/// layer (each layer filters for itself, so a monitor can ask for more
/// than is written).
type BelowFmt = tracing_subscriber::layer::Layered<
    tracing_subscriber::filter::Filtered<MonitorLayer, MonitorFilter, Registry>,
    Registry,
>;

/// Changes the level of the installed subscriber.
#[derive(Clone)]
pub struct LevelHandle(reload::Handle<EnvFilter, BelowFmt>);

impl std::fmt::Debug for LevelHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("LevelHandle").field(&self.current()).finish()
    }
}

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
    let registry = tracing_subscriber::registry().with(MonitorLayer.with_filter(MonitorFilter));
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
    let quiet = filter_fn(|meta| !is_raft_rpc_noise(meta)).and(filter);
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

/// One log event as `/v1/agent/monitor` streams it.
#[derive(Debug, Clone)]
pub struct LogLine {
    pub level: tracing::Level,
    pub unix_ms: u64,
    /// The module (the event's target).
    pub module: String,
    pub message: String,
    pub fields: Vec<(String, String)>,
}

impl LogLine {
    /// hclog's level word.
    fn level_word(&self) -> &'static str {
        match self.level {
            tracing::Level::TRACE => "TRACE",
            tracing::Level::DEBUG => "DEBUG",
            tracing::Level::INFO => "INFO",
            tracing::Level::WARN => "WARN",
            tracing::Level::ERROR => "ERROR",
        }
    }

    /// hclog's text line: `2024-05-20T10:00:00.000Z [INFO]  module: msg: k=v`.
    pub fn text(&self) -> String {
        use std::fmt::Write as _;
        let mut out = format!(
            "{} {:<8}{}: {}",
            crate::discovery::api::gofmt::rfc3339_millis(self.unix_ms),
            format!("[{}]", self.level_word()),
            self.module,
            self.message
        );
        if !self.fields.is_empty() {
            out.push(':');
            for (k, v) in &self.fields {
                let _ = write!(out, " {k}={v}");
            }
        }
        out
    }

    /// hclog's JSON line (`@level`, `@message`, `@module`, `@timestamp`,
    /// then the fields).
    pub fn json(&self) -> String {
        let mut map = serde_json::Map::new();
        map.insert(
            "@level".into(),
            self.level_word().to_ascii_lowercase().into(),
        );
        map.insert("@message".into(), self.message.clone().into());
        map.insert("@module".into(), self.module.clone().into());
        map.insert(
            "@timestamp".into(),
            crate::discovery::api::gofmt::rfc3339_millis(self.unix_ms).into(),
        );
        for (k, v) in &self.fields {
            map.insert(k.clone(), v.clone().into());
        }
        serde_json::Value::Object(map).to_string()
    }
}

/// Lines queued per monitor before the slowest one misses some.
const MONITOR_QUEUE: usize = 512;

fn monitor_sender() -> &'static tokio::sync::broadcast::Sender<std::sync::Arc<LogLine>> {
    static SENDER: std::sync::OnceLock<tokio::sync::broadcast::Sender<std::sync::Arc<LogLine>>> =
        std::sync::OnceLock::new();
    SENDER.get_or_init(|| tokio::sync::broadcast::channel(MONITOR_QUEUE).0)
}

/// Monitors listening per level (index 0 = ERROR … 4 = TRACE).
static MONITORS: std::sync::Mutex<[usize; 5]> = std::sync::Mutex::new([0; 5]);
/// The most verbose level a monitor wants: 0 = none, 1 = ERROR … 5 = TRACE.
static MONITOR_LEVEL: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);

fn level_rank(l: &tracing::Level) -> u8 {
    match *l {
        tracing::Level::ERROR => 1,
        tracing::Level::WARN => 2,
        tracing::Level::INFO => 3,
        tracing::Level::DEBUG => 4,
        tracing::Level::TRACE => 5,
    }
}

fn set_monitors(level: &tracing::Level, delta: isize) {
    let mut counts = MONITORS.lock().unwrap_or_else(|p| p.into_inner());
    let i = usize::from(level_rank(level) - 1);
    counts[i] = counts[i].saturating_add_signed(delta);
    let most = counts
        .iter()
        .rposition(|n| *n > 0)
        .map_or(0, |i| u8::try_from(i + 1).unwrap_or(5));
    if MONITOR_LEVEL.swap(most, std::sync::atomic::Ordering::SeqCst) != most {
        // Callsites cached as off for the monitors are asked again.
        tracing::callsite::rebuild_interest_cache();
    }
}

/// A listening monitor: its lines, and its level kept enabled until drop.
pub struct Monitor {
    pub lines: tokio::sync::broadcast::Receiver<std::sync::Arc<LogLine>>,
    level: tracing::Level,
}

impl Drop for Monitor {
    fn drop(&mut self) {
        set_monitors(&self.level, -1);
    }
}

/// Every log line at `level` and above from now on, for
/// `/v1/agent/monitor`, whatever level the written log has. A receiver
/// that falls behind loses lines.
pub fn monitor(level: tracing::Level) -> Monitor {
    let lines = monitor_sender().subscribe();
    set_monitors(&level, 1);
    Monitor { lines, level }
}

/// The monitors' filter: off (and costing nothing) while none listens;
/// pilotfish's own events at the most verbose level one asked for, the
/// libraries' from WARN up.
struct MonitorFilter;

impl MonitorFilter {
    fn wants(meta: &tracing::Metadata<'_>) -> bool {
        let rank = level_rank(meta.level());
        rank <= MONITOR_LEVEL.load(std::sync::atomic::Ordering::Relaxed)
            && (rank <= 2 || meta.target().starts_with("pilotfish"))
            && !is_raft_rpc_noise(meta)
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::layer::Filter<S> for MonitorFilter {
    fn enabled(
        &self,
        meta: &tracing::Metadata<'_>,
        _cx: &tracing_subscriber::layer::Context<'_, S>,
    ) -> bool {
        Self::wants(meta)
    }

    fn callsite_enabled(
        &self,
        meta: &'static tracing::Metadata<'static>,
    ) -> tracing::subscriber::Interest {
        if Self::wants(meta) {
            tracing::subscriber::Interest::sometimes()
        } else {
            tracing::subscriber::Interest::never()
        }
    }

    fn max_level_hint(&self) -> Option<tracing_subscriber::filter::LevelFilter> {
        use tracing_subscriber::filter::LevelFilter;
        Some(
            match MONITOR_LEVEL.load(std::sync::atomic::Ordering::Relaxed) {
                0 => LevelFilter::OFF,
                1 => LevelFilter::ERROR,
                2 => LevelFilter::WARN,
                3 => LevelFilter::INFO,
                4 => LevelFilter::DEBUG,
                _ => LevelFilter::TRACE,
            },
        )
    }
}

/// Hands events to the monitors, only while one listens.
struct MonitorLayer;

impl<S: tracing::Subscriber> Layer<S> for MonitorLayer {
    fn on_event(
        &self,
        event: &tracing::Event<'_>,
        _ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        let sender = monitor_sender();
        let mut visit = FieldText::default();
        event.record(&mut visit);
        let meta = event.metadata();
        let unix_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        let _ = sender.send(std::sync::Arc::new(LogLine {
            level: *meta.level(),
            unix_ms,
            module: meta.target().to_string(),
            message: visit.message,
            fields: visit.fields,
        }));
    }
}

#[derive(Default)]
struct FieldText {
    message: String,
    fields: Vec<(String, String)>,
}

impl tracing::field::Visit for FieldText {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if field.name() == "message" {
            self.message = value.to_string();
        } else {
            self.fields
                .push((field.name().to_string(), value.to_string()));
        }
    }

    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.message = format!("{value:?}");
        } else {
            self.fields
                .push((field.name().to_string(), format!("{value:?}")));
        }
    }
}
