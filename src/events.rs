//! The closed vocabulary of the event bus: what happened (`EventKind`) and who
//! it happened to (`Source`). Every job sees every event in one global order.

use std::fmt;

use nix::sys::signal::Signal;

pub use crate::config::Source;

/// Everything a `when` can wait for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventKind {
    Startup,
    Shutdown,
    ExitSuccess,
    ExitFailed,
    Healthy,
    Unhealthy,
    Changed,
    /// A template's file was installed for the first time.
    Rendered,
    Stopping,
    Stopped,
    EnterMaintenance,
    ExitMaintenance,
    /// The worker received this signal (source is the same signal).
    Signal(Signal),
}

impl EventKind {
    /// Parse the name used in `once`/`each`.
    pub fn parse(s: &str) -> Option<EventKind> {
        Some(match s {
            "startup" => EventKind::Startup,
            "shutdown" => EventKind::Shutdown,
            "exitSuccess" => EventKind::ExitSuccess,
            "exitFailed" => EventKind::ExitFailed,
            "healthy" => EventKind::Healthy,
            "unhealthy" => EventKind::Unhealthy,
            "changed" => EventKind::Changed,
            "rendered" => EventKind::Rendered,
            "stopping" => EventKind::Stopping,
            "stopped" => EventKind::Stopped,
            "enterMaintenance" => EventKind::EnterMaintenance,
            "exitMaintenance" => EventKind::ExitMaintenance,
            other => EventKind::Signal(crate::signals::parse_signal(other).ok()?),
        })
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            EventKind::Startup => "startup",
            EventKind::Shutdown => "shutdown",
            EventKind::ExitSuccess => "exitSuccess",
            EventKind::ExitFailed => "exitFailed",
            EventKind::Healthy => "healthy",
            EventKind::Unhealthy => "unhealthy",
            EventKind::Changed => "changed",
            EventKind::Rendered => "rendered",
            EventKind::Stopping => "stopping",
            EventKind::Stopped => "stopped",
            EventKind::EnterMaintenance => "enterMaintenance",
            EventKind::ExitMaintenance => "exitMaintenance",
            EventKind::Signal(s) => s.as_str(),
        }
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One bus event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub kind: EventKind,
    pub source: Source,
}

impl Event {
    pub fn new(kind: EventKind, source: Source) -> Event {
        Event { kind, source }
    }

    pub fn global(kind: EventKind) -> Event {
        Event::new(kind, Source::Global)
    }

    pub fn job(kind: EventKind, job: &str) -> Event {
        Event::new(kind, Source::Job(job.to_string()))
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.source, self.kind)
    }
}
