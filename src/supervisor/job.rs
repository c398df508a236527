//! One job's lifecycle as a pure state machine: `Job::handle(input, now)` returns
//! the actions the I/O shell must carry out (spawn, signal, arm a timer, publish an
//! event, run a health check). It does no I/O, reads no clock and spawns nothing,
//! so every rule here (triggers, restarts with backoff, periodic runs, edge-triggered
//! health, the preStop/stop-signal/SIGKILL sequence) is tested with plain values.
//!
//! Timers carry a generation number; re-arming or cancelling bumps it, so a timer
//! that fires late is recognised as stale and ignored.

use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::time::Instant;

use crate::config::{Condition, JobConfig, Restarts, Source, Trigger};
use crate::events::{Event, EventKind};

/// The timers a job can arm (one of each at a time).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimerKind {
    /// Restart after backoff.
    Backoff,
    /// The run's wall-clock limit (`timeout`).
    RunTimeout,
    /// Give up waiting for the trigger (`when.timeout`).
    WaitTimeout,
    /// Periodic run (`when.interval`).
    Tick,
    /// Next health check.
    HealthTick,
    /// Longest wait for preStop hooks before signalling.
    HookWait,
    /// Grace between the stop signal and SIGKILL.
    StopGrace,
}

const TIMER_KINDS: usize = 7;

impl TimerKind {
    fn slot(self) -> usize {
        self as usize
    }
}

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    Code(i32),
    Signal(i32),
}

impl ExitStatus {
    /// The shell convention: the code, or 128 + signal number.
    pub fn code(self) -> i32 {
        match self {
            ExitStatus::Code(c) => c,
            ExitStatus::Signal(s) => 128 + s,
        }
    }

    pub fn success(self) -> bool {
        self == ExitStatus::Code(0)
    }
}

/// Everything that can happen to a job.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// A bus event (every job sees every event).
    Event(Event),
    Spawned {
        pid: u32,
    },
    SpawnFailed {
        error: String,
    },
    Exited {
        pid: u32,
        status: ExitStatus,
    },
    HealthResult {
        ok: bool,
    },
    Timer {
        kind: TimerKind,
        generation: u64,
    },
    /// pilotfish is shutting down: no more restarts; only hooks may still start.
    ShutdownBegun,
    /// Stop this job now (shutdown order reached it, or reload removed it).
    Stop,
    /// No preStop hook of this job is running any more.
    HooksDone,
}

/// What the shell must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Spawn,
    /// Signal the process group of `pid`.
    Signal {
        pid: u32,
        signal: Signal,
    },
    SetTimer {
        kind: TimerKind,
        generation: u64,
        after: Duration,
    },
    Publish(Event),
    RunHealthCheck,
    Log {
        warn: bool,
        message: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    Unknown,
    Healthy,
    Unhealthy,
}

/// Where the job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Waiting for its trigger.
    Waiting,
    /// Spawn requested; the shell has not reported the pid yet.
    Starting,
    Running {
        pid: u32,
    },
    /// Waiting to be restarted.
    Backoff,
    /// A periodic job between runs.
    Idle,
    /// Stop requested: preStop hooks are running.
    StopHooks {
        pid: u32,
    },
    /// Stop signal sent; SIGKILL after the grace.
    Stopping {
        pid: u32,
    },
    /// Will never run again.
    Completed,
}

impl Phase {
    pub fn name(self) -> &'static str {
        match self {
            Phase::Waiting => "waiting",
            Phase::Starting => "starting",
            Phase::Running { .. } => "running",
            Phase::Backoff => "backoff",
            Phase::Idle => "idle",
            Phase::StopHooks { .. } => "stopping",
            Phase::Stopping { .. } => "stopping",
            Phase::Completed => "completed",
        }
    }
}

/// A job and everything it remembers.
#[derive(Debug)]
pub struct Job {
    pub cfg: Arc<JobConfig>,
    phase: Phase,
    /// Per condition: met since the last firing.
    met: Vec<bool>,
    /// Per `once` condition: its one event has been used.
    used: Vec<bool>,
    /// A trigger arrived while running: run again once this run ends.
    pending: bool,
    runs: u32,
    restarts: u32,
    backoff_attempt: u32,
    run_started: Option<Instant>,
    last_exit: Option<ExitStatus>,
    health: Health,
    health_in_flight: bool,
    maintenance: bool,
    shutting_down: bool,
    /// Hooks (preStop/postStop/shutdown jobs) may start during shutdown.
    is_hook: bool,
    /// Gave up waiting (`when.timeout`) or can never be triggered.
    gave_up: bool,
    /// Stop arrived while starting: stop as soon as the pid is known.
    stop_after_spawn: bool,
    /// The stop signal was ignored and SIGKILL had to be sent.
    killed: bool,
    /// An overlap (run or health check still going) was already logged.
    overlap_logged: bool,
    generations: [u64; TIMER_KINDS],
    rng: u64,
}

impl Job {
    pub fn new(cfg: Arc<JobConfig>, seed: u64) -> Job {
        let n = cfg.when.conditions().len();
        let is_hook = is_hook(&cfg);
        Job {
            cfg,
            phase: Phase::Waiting,
            met: vec![false; n],
            used: vec![false; n],
            pending: false,
            runs: 0,
            restarts: 0,
            backoff_attempt: 0,
            run_started: None,
            last_exit: None,
            health: Health::Unknown,
            health_in_flight: false,
            maintenance: false,
            shutting_down: false,
            is_hook,
            gave_up: false,
            stop_after_spawn: false,
            killed: false,
            overlap_logged: false,
            generations: [0; TIMER_KINDS],
            rng: seed | 1,
        }
    }

    pub fn name(&self) -> &str {
        &self.cfg.name
    }
    pub fn phase(&self) -> Phase {
        self.phase
    }
    pub fn runs(&self) -> u32 {
        self.runs
    }
    pub fn restarts(&self) -> u32 {
        self.restarts
    }
    pub fn last_exit(&self) -> Option<ExitStatus> {
        self.last_exit
    }
    pub fn health(&self) -> Health {
        self.health
    }
    pub fn maintenance(&self) -> bool {
        self.maintenance
    }
    pub fn is_hook(&self) -> bool {
        self.is_hook
    }
    pub fn gave_up(&self) -> bool {
        self.gave_up
    }
    pub fn was_killed(&self) -> bool {
        self.killed
    }
    /// Starting or has a live process.
    pub fn is_active(&self) -> bool {
        self.phase == Phase::Starting || self.pid().is_some()
    }
    pub fn pid(&self) -> Option<u32> {
        match self.phase {
            Phase::Running { pid } | Phase::StopHooks { pid } | Phase::Stopping { pid } => {
                Some(pid)
            }
            _ => None,
        }
    }
    pub fn is_completed(&self) -> bool {
        self.phase == Phase::Completed
    }

    /// Can this job's trigger still fire? False once every source it waits on
    /// has completed (the caller tells which jobs have).
    pub fn can_still_fire(&self, completed: &dyn Fn(&str) -> bool) -> bool {
        let open = |(i, c): (usize, &Condition)| {
            let spent = !c.repeat && self.used[i] && !self.met[i];
            let dead_source = matches!(&c.source, Source::Job(j) if completed(j));
            !(spent || (dead_source && !self.met[i]))
        };
        match &self.cfg.when.trigger {
            Trigger::Startup | Trigger::Interval { after: None, .. } => self.runs == 0,
            Trigger::Interval { after: Some(c), .. } => self.runs == 0 && open((0, c)),
            Trigger::All(cs) => cs.iter().enumerate().all(open),
            Trigger::Any(cs) => cs.iter().enumerate().any(open),
        }
    }

    /// Mark a waiting job as never going to run; `failed` counts against a clean exit.
    pub fn give_up(&mut self, failed: bool) -> Vec<Action> {
        let mut out = Vec::new();
        if matches!(self.phase, Phase::Waiting | Phase::Backoff | Phase::Idle) {
            self.gave_up = failed;
            self.complete(&mut out);
        }
        out
    }

    fn arm(&mut self, kind: TimerKind, after: Duration, out: &mut Vec<Action>) {
        let g = &mut self.generations[kind.slot()];
        *g += 1;
        out.push(Action::SetTimer {
            kind,
            generation: *g,
            after,
        });
    }

    fn cancel(&mut self, kind: TimerKind) {
        self.generations[kind.slot()] += 1;
    }

    fn log(&self, out: &mut Vec<Action>, warn: bool, message: String) {
        out.push(Action::Log { warn, message });
    }

    fn publish(&self, kind: EventKind, out: &mut Vec<Action>) {
        out.push(Action::Publish(Event::job(kind, &self.cfg.name)));
    }

    /// Feed one input; returns what to do.
    pub fn handle(&mut self, input: Input, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        match input {
            Input::Event(ev) => self.on_event(ev, &mut out),
            Input::Spawned { pid } => {
                self.phase = Phase::Running { pid };
                if std::mem::take(&mut self.stop_after_spawn) {
                    self.runs += 1;
                    self.run_started = Some(now);
                    self.on_stop(&mut out);
                    return out;
                }
                self.runs += 1;
                self.run_started = Some(now);
                if let Some(t) = self.cfg.timeout {
                    self.arm(TimerKind::RunTimeout, t, &mut out);
                }
                if let Some(h) = &self.cfg.health {
                    let interval = h.interval;
                    self.arm(TimerKind::HealthTick, interval, &mut out);
                }
            }
            Input::SpawnFailed { error } => {
                self.runs += 1;
                self.log(
                    &mut out,
                    true,
                    format!("job {}: cannot start: {error}", self.cfg.name),
                );
                if std::mem::take(&mut self.stop_after_spawn) {
                    self.last_exit = Some(ExitStatus::Code(127));
                    self.complete(&mut out);
                } else {
                    self.run_ended(ExitStatus::Code(127), now, &mut out);
                }
            }
            Input::Exited { pid, status } => {
                if self.pid() == Some(pid) {
                    self.run_ended(status, now, &mut out);
                }
            }
            Input::HealthResult { ok } => self.on_health(ok, &mut out),
            Input::Timer { kind, generation } => {
                if self.generations[kind.slot()] == generation {
                    self.on_timer(kind, &mut out);
                }
            }
            Input::ShutdownBegun => {
                self.shutting_down = true;
                self.cancel(TimerKind::Tick);
                if self.phase == Phase::Backoff {
                    self.cancel(TimerKind::Backoff);
                    self.complete(&mut out);
                }
            }
            Input::Stop => self.on_stop(&mut out),
            Input::HooksDone => {
                if let Phase::StopHooks { pid } = self.phase {
                    self.cancel(TimerKind::HookWait);
                    self.send_stop_signal(pid, &mut out);
                }
            }
        }
        out
    }

    fn on_event(&mut self, ev: Event, out: &mut Vec<Action>) {
        match (&ev.source, ev.kind) {
            (Source::Global, EventKind::EnterMaintenance) => {
                self.maintenance = true;
            }
            (Source::Global, EventKind::ExitMaintenance) => {
                self.maintenance = false;
                self.health = Health::Unknown;
            }
            (Source::Signal(sig), _) if self.cfg.forward_signals.contains(sig) => {
                if let Some(pid) = self.pid() {
                    out.push(Action::Signal { pid, signal: *sig });
                }
            }
            _ => {}
        }
        match self.cfg.when.trigger.clone() {
            Trigger::Startup | Trigger::Interval { after: None, .. } => {
                if ev == Event::global(EventKind::Startup)
                    && self.phase == Phase::Waiting
                    && self.runs == 0
                {
                    self.fire(out);
                }
            }
            Trigger::Interval { after: Some(c), .. } => {
                if c.source == ev.source
                    && c.event == ev.kind
                    && !self.used[0]
                    && self.phase == Phase::Waiting
                {
                    self.used[0] = true;
                    self.met[0] = true;
                    self.fire(out);
                }
            }
            Trigger::All(conds) | Trigger::Any(conds) => {
                if ev == Event::global(EventKind::Startup) && self.phase == Phase::Waiting {
                    if let Some(t) = self.cfg.when.timeout {
                        self.arm(TimerKind::WaitTimeout, t, out);
                    }
                }
                let all = matches!(self.cfg.when.trigger, Trigger::All(_));
                let mut newly = false;
                for (i, c) in conds.iter().enumerate() {
                    if c.source == ev.source && c.event == ev.kind && (c.repeat || !self.used[i]) {
                        self.met[i] = true;
                        if !c.repeat {
                            self.used[i] = true;
                        }
                        newly = true;
                    }
                }
                let ready = if all {
                    self.met.iter().all(|m| *m)
                } else {
                    newly
                };
                if newly && ready {
                    // Repeating conditions must be met again; `once` ones stay latched
                    // for `all` (they happened) and are spent for `any`.
                    for (i, c) in conds.iter().enumerate() {
                        if c.repeat || !all {
                            self.met[i] = false;
                        }
                    }
                    self.fire(out);
                }
            }
        }
    }

    /// The trigger fired.
    fn fire(&mut self, out: &mut Vec<Action>) {
        if self.shutting_down && !self.is_hook {
            return;
        }
        match self.phase {
            Phase::Waiting => {
                self.cancel(TimerKind::WaitTimeout);
                self.restarts = 0;
                if let Trigger::Interval { every, .. } = self.cfg.when.trigger {
                    self.arm(TimerKind::Tick, every, out);
                }
                self.start(out);
            }
            Phase::Running { .. } | Phase::Starting => {
                self.pending = true;
                self.log(
                    out,
                    false,
                    format!(
                        "job {}: triggered while running; will run again when this run ends",
                        self.cfg.name
                    ),
                );
            }
            _ => {}
        }
    }

    fn start(&mut self, out: &mut Vec<Action>) {
        if self.cfg.exec.is_some() {
            self.phase = Phase::Starting;
            out.push(Action::Spawn);
        } else {
            // A service-only job: nothing to run, only health checks.
            self.runs += 1;
            self.phase = Phase::Idle;
            if let Some(h) = &self.cfg.health {
                let interval = h.interval;
                self.arm(TimerKind::HealthTick, interval, out);
            }
        }
    }

    fn restarts_left(&self) -> bool {
        match self.cfg.restarts {
            Restarts::Never => false,
            Restarts::Count(n) => self.restarts < n,
            Restarts::Unlimited => true,
        }
    }

    fn has_repeating_trigger(&self) -> bool {
        match &self.cfg.when.trigger {
            Trigger::All(cs) | Trigger::Any(cs) => cs.iter().any(|c| c.repeat),
            _ => false,
        }
    }

    fn run_ended(&mut self, status: ExitStatus, now: Instant, out: &mut Vec<Action>) {
        self.overlap_logged = false;
        let was_stopping = matches!(self.phase, Phase::StopHooks { .. } | Phase::Stopping { .. });
        self.last_exit = Some(status);
        self.cancel(TimerKind::RunTimeout);
        self.cancel(TimerKind::HealthTick);
        self.cancel(TimerKind::StopGrace);
        self.cancel(TimerKind::HookWait);
        self.health_in_flight = false;
        if self.health == Health::Healthy && !self.maintenance {
            self.publish(EventKind::Unhealthy, out);
        }
        self.health = Health::Unknown;
        let lasted = self.run_started.map(|t| now.saturating_duration_since(t));
        self.run_started = None;
        let kind = if status.success() {
            EventKind::ExitSuccess
        } else {
            EventKind::ExitFailed
        };
        self.publish(kind, out);
        if was_stopping {
            self.complete(out);
            return;
        }
        let periodic = matches!(self.cfg.when.trigger, Trigger::Interval { .. });
        if periodic {
            if self.shutting_down || !self.restarts_left() {
                self.complete(out);
            } else {
                self.phase = Phase::Idle;
            }
            return;
        }
        if self.shutting_down && !self.is_hook {
            self.complete(out);
            return;
        }
        if !self.shutting_down && self.restarts_left() {
            if lasted.is_some_and(|d| d >= self.cfg.backoff.max) {
                self.backoff_attempt = 0;
            }
            self.backoff_attempt += 1;
            let delay = self.backoff_delay();
            self.phase = Phase::Backoff;
            self.arm(TimerKind::Backoff, delay, out);
            self.log(
                out,
                !status.success(),
                format!(
                    "job {} exited with status {}; restarting in {}",
                    self.cfg.name,
                    status.code(),
                    crate::config::duration::format_duration(delay)
                ),
            );
            return;
        }
        if self.pending || self.has_repeating_trigger() {
            self.phase = Phase::Waiting;
            if std::mem::take(&mut self.pending) && !self.shutting_down {
                self.fire(out);
            }
            return;
        }
        self.complete(out);
    }

    /// Exponential backoff with equal jitter: half fixed, half random.
    fn backoff_delay(&mut self) -> Duration {
        let b = self.cfg.backoff;
        let exp = self.backoff_attempt.saturating_sub(1).min(30);
        let base = b.initial.saturating_mul(1u32 << exp).min(b.max);
        // xorshift64: deterministic per job seed, good enough for jitter.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let frac = (self.rng % 1_000_000) as f64 / 1_000_000.0;
        base / 2 + base.mul_f64(0.5 * frac)
    }

    fn complete(&mut self, out: &mut Vec<Action>) {
        let ran = self.runs > 0;
        self.phase = Phase::Completed;
        for kind in [
            TimerKind::Backoff,
            TimerKind::Tick,
            TimerKind::HealthTick,
            TimerKind::WaitTimeout,
        ] {
            self.cancel(kind);
        }
        if ran {
            self.publish(EventKind::Stopped, out);
        }
    }

    fn on_health(&mut self, ok: bool, out: &mut Vec<Action>) {
        self.health_in_flight = false;
        self.overlap_logged = false;
        let active =
            matches!(self.phase, Phase::Running { .. } | Phase::Idle) && self.cfg.health.is_some();
        if self.maintenance || !active {
            return;
        }
        let new = if ok {
            Health::Healthy
        } else {
            Health::Unhealthy
        };
        if new != self.health {
            self.health = new;
            let kind = if ok {
                EventKind::Healthy
            } else {
                EventKind::Unhealthy
            };
            self.publish(kind, out);
        }
    }

    fn on_timer(&mut self, kind: TimerKind, out: &mut Vec<Action>) {
        match kind {
            TimerKind::Backoff => {
                if self.phase == Phase::Backoff {
                    self.restarts += 1;
                    self.start(out);
                }
            }
            TimerKind::RunTimeout => {
                if let Phase::Running { pid } = self.phase {
                    let t = self.cfg.timeout.unwrap_or_default();
                    self.log(
                        out,
                        true,
                        format!(
                            "job {} timed out after {}; killing it",
                            self.cfg.name,
                            crate::config::duration::format_duration(t)
                        ),
                    );
                    out.push(Action::Signal {
                        pid,
                        signal: Signal::SIGKILL,
                    });
                }
            }
            TimerKind::WaitTimeout => {
                if self.phase == Phase::Waiting {
                    let t = self.cfg.when.timeout.unwrap_or_default();
                    self.log(
                        out,
                        true,
                        format!(
                            "job {}: gave up after waiting {} for its trigger",
                            self.cfg.name,
                            crate::config::duration::format_duration(t)
                        ),
                    );
                    self.gave_up = self.runs == 0;
                    self.complete(out);
                }
            }
            TimerKind::Tick => {
                if let Trigger::Interval { every, .. } = self.cfg.when.trigger {
                    if self.shutting_down {
                        return;
                    }
                    self.arm(TimerKind::Tick, every, out);
                    match self.phase {
                        Phase::Running { .. } if !self.overlap_logged => {
                            self.overlap_logged = true;
                            let msg = format!(
                                "job {}: previous run still going; skipping intervals until it ends",
                                self.cfg.name
                            );
                            self.log(out, true, msg);
                        }
                        Phase::Idle if self.restarts_left() => {
                            self.restarts += 1;
                            self.start(out);
                        }
                        Phase::Idle => self.complete(out),
                        _ => {}
                    }
                }
            }
            TimerKind::HealthTick => {
                let cfg = Arc::clone(&self.cfg);
                let Some(h) = &cfg.health else { return };
                let interval = h.interval;
                let active = matches!(self.phase, Phase::Running { .. } | Phase::Idle);
                if !active {
                    return;
                }
                self.arm(TimerKind::HealthTick, interval, out);
                if self.maintenance {
                    return;
                }
                if self.health_in_flight {
                    if !std::mem::replace(&mut self.overlap_logged, true) {
                        let msg = format!(
                            "job {}: health check still running; skipping checks until it ends",
                            self.cfg.name
                        );
                        self.log(out, true, msg);
                    }
                } else if h.exec.is_some() {
                    self.health_in_flight = true;
                    out.push(Action::RunHealthCheck);
                }
            }
            TimerKind::HookWait => {
                if let Phase::StopHooks { pid } = self.phase {
                    self.log(
                        out,
                        true,
                        format!(
                            "job {}: preStop hooks still running after {}; stopping anyway",
                            self.cfg.name,
                            crate::config::duration::format_duration(self.cfg.stop_timeout)
                        ),
                    );
                    self.send_stop_signal(pid, out);
                }
            }
            TimerKind::StopGrace => {
                if let Phase::Stopping { pid } = self.phase {
                    self.killed = true;
                    self.log(
                        out,
                        true,
                        format!(
                            "job {} did not exit {} after {}; sending SIGKILL",
                            self.cfg.name,
                            crate::config::duration::format_duration(self.cfg.stop_timeout),
                            self.cfg.stop_signal
                        ),
                    );
                    out.push(Action::Signal {
                        pid,
                        signal: Signal::SIGKILL,
                    });
                }
            }
        }
    }

    fn on_stop(&mut self, out: &mut Vec<Action>) {
        match self.phase {
            Phase::Running { pid } => {
                self.cancel(TimerKind::Tick);
                self.cancel(TimerKind::Backoff);
                self.phase = Phase::StopHooks { pid };
                self.publish(EventKind::Stopping, out);
                self.arm(TimerKind::HookWait, self.cfg.stop_timeout, out);
            }
            Phase::Starting => self.stop_after_spawn = true,
            Phase::Waiting | Phase::Backoff | Phase::Idle => self.complete(out),
            Phase::StopHooks { .. } | Phase::Stopping { .. } | Phase::Completed => {}
        }
    }

    fn send_stop_signal(&mut self, pid: u32, out: &mut Vec<Action>) {
        self.phase = Phase::Stopping { pid };
        out.push(Action::Signal {
            pid,
            signal: self.cfg.stop_signal,
        });
        self.arm(TimerKind::StopGrace, self.cfg.stop_timeout, out);
    }
}

/// Hooks run around stopping: preStop (`stopping`), postStop (`stopped`) and
/// shutdown jobs. They may start during shutdown; other jobs may not.
pub fn is_hook(cfg: &JobConfig) -> bool {
    match &cfg.when.trigger {
        Trigger::All(cs) | Trigger::Any(cs) => cs.iter().any(|c| {
            matches!(
                c.event,
                EventKind::Stopping | EventKind::Stopped | EventKind::Shutdown
            )
        }),
        _ => false,
    }
}

/// The jobs whose `stopping` event starts `cfg` (it is their preStop hook).
pub fn guarded_by_hook(cfg: &JobConfig) -> Vec<String> {
    match &cfg.when.trigger {
        Trigger::All(cs) | Trigger::Any(cs) => cs
            .iter()
            .filter(|c| c.event == EventKind::Stopping)
            .filter_map(|c| match &c.source {
                Source::Job(j) => Some(j.clone()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// Jobs `cfg` depends on to start (not counting hook relationships): they are
/// stopped after `cfg` at shutdown.
pub fn dependencies(cfg: &JobConfig) -> Vec<String> {
    if is_hook(cfg) {
        return Vec::new();
    }
    cfg.when
        .conditions()
        .iter()
        .filter_map(|c| match &c.source {
            Source::Job(j) => Some(j.clone()),
            _ => None,
        })
        .collect()
}
