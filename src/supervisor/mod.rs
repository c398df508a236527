//! The supervisor: every job (`job`), the one global event order, the shutdown
//! order, reload diffs and the exit status. Like `job`, the coordinator here is
//! pure: it turns inputs into `Effect`s that `runtime` (the I/O shell) carries out
//! with `process`. Nothing here can block: a job's slow process or stuck health
//! check lives in its own task and only ever reports back as an input, so one job
//! can never delay another's events (ContainerPilot's bus deadlock, B2).

pub mod job;
pub mod process;
pub mod registration;
pub mod runtime;
pub mod watch;

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use nix::sys::signal::Signal;
use tokio::time::Instant;

use crate::config::{JobConfig, Source, Trigger};
use crate::control::{JobStatus, ReloadSummary};
use crate::events::{Event, EventKind};
use job::{Action, Health, Input, Job, Phase};

/// Identifies one job instance; a job replaced by reload gets a new id, so late
/// inputs for the old one are recognised and dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct JobId(pub u64);

/// What the shell must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    Job {
        id: JobId,
        action: Action,
    },
    /// An event went out on the bus (for metrics and debug logs).
    Published(Event),
    /// Shutdown began; `deadline` bounds it.
    ShutdownStarted,
    /// Everything has stopped: exit with this status.
    Finished {
        code: i32,
    },
}

/// Why pilotfish is shutting down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ShutdownCause {
    Signal,
    PrimaryEnded,
    AllDone,
}

struct Slot {
    id: JobId,
    job: Job,
    /// Removed by reload: stop it and drop it once completed.
    retiring: bool,
}

pub struct Supervisor {
    slots: Vec<Slot>,
    next_id: u64,
    seed: u64,
    queue: VecDeque<Event>,
    shutdown: Option<ShutdownCause>,
    /// Replacements waiting for the old instance to stop: old id → new config.
    replacements: BTreeMap<JobId, Arc<JobConfig>>,
    maintenance: bool,
    finished: bool,
    deadline_hit: bool,
    /// Events that describe what has happened (exits, health, changes,
    /// renders), once each, with the job instance that published them
    /// (none for watches and templates): a job a reload adds or replaces
    /// finds its `once` conditions met by them.
    happened: Vec<(Option<JobId>, Event)>,
}

impl Supervisor {
    pub fn new(jobs: Vec<JobConfig>, seed: u64) -> Supervisor {
        let mut s = Supervisor {
            slots: Vec::new(),
            next_id: 1,
            seed,
            queue: VecDeque::new(),
            shutdown: None,
            replacements: BTreeMap::new(),
            maintenance: false,
            finished: false,
            deadline_hit: false,
            happened: Vec::new(),
        };
        for cfg in jobs {
            s.add(Arc::new(cfg));
        }
        s
    }

    fn add(&mut self, cfg: Arc<JobConfig>) -> JobId {
        let id = JobId(self.next_id);
        self.next_id += 1;
        let seed = self.seed ^ id.0.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        self.slots.push(Slot {
            id,
            job: Job::new(cfg, seed),
            retiring: false,
        });
        id
    }

    pub fn job(&self, id: JobId) -> Option<&Job> {
        self.slots.iter().find(|s| s.id == id).map(|s| &s.job)
    }

    /// Live jobs by id (for the shell: health-check commands, forwarding).
    pub fn jobs(&self) -> impl Iterator<Item = (JobId, &Job)> {
        self.slots.iter().map(|s| (s.id, &s.job))
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutdown.is_some()
    }

    pub fn maintenance(&self) -> bool {
        self.maintenance
    }

    /// Publish `startup`.
    pub fn start(&mut self, now: Instant) -> Vec<Effect> {
        let mut out = Vec::new();
        self.queue.push_back(Event::global(EventKind::Startup));
        self.drain(now, &mut out);
        self.settle(now, &mut out);
        out
    }

    /// Feed one input to one job, then let the bus and the coordinator settle.
    pub fn job_input(&mut self, id: JobId, input: Input, now: Instant) -> Vec<Effect> {
        let mut out = Vec::new();
        if let Some(slot) = self.slots.iter_mut().find(|s| s.id == id) {
            let actions = slot.job.handle(input, now);
            self.route(id, actions, &mut out);
        }
        self.drain(now, &mut out);
        self.settle(now, &mut out);
        out
    }

    /// A signal reached the worker.
    pub fn signal(&mut self, sig: Signal, now: Instant) -> Vec<Effect> {
        if matches!(sig, Signal::SIGTERM | Signal::SIGINT) {
            return self.begin_shutdown(ShutdownCause::Signal, now);
        }
        let mut out = Vec::new();
        self.queue
            .push_back(Event::new(EventKind::Signal(sig), Source::Signal(sig)));
        self.drain(now, &mut out);
        self.settle(now, &mut out);
        out
    }

    /// An event from outside the jobs (a watch) goes out on the bus.
    pub fn publish(&mut self, ev: Event, now: Instant) -> Vec<Effect> {
        let mut out = Vec::new();
        if self.shutdown.is_none() {
            self.remember(None, &ev);
            self.queue.push_back(ev);
            self.drain(now, &mut out);
            self.settle(now, &mut out);
        }
        out
    }

    pub fn set_maintenance(&mut self, enable: bool, now: Instant) -> Vec<Effect> {
        let mut out = Vec::new();
        if self.maintenance != enable {
            self.maintenance = enable;
            let kind = if enable {
                EventKind::EnterMaintenance
            } else {
                EventKind::ExitMaintenance
            };
            self.queue.push_back(Event::global(kind));
            self.drain(now, &mut out);
            self.settle(now, &mut out);
        }
        out
    }

    /// The shutdown deadline passed: SIGKILL every process group still alive.
    pub fn deadline_expired(&mut self) -> Vec<Effect> {
        self.deadline_hit = true;
        self.slots
            .iter()
            .filter_map(|s| {
                s.job.pid().map(|pid| Effect::Job {
                    id: s.id,
                    action: Action::Signal {
                        pid,
                        signal: Signal::SIGKILL,
                    },
                })
            })
            .collect()
    }

    fn begin_shutdown(&mut self, cause: ShutdownCause, now: Instant) -> Vec<Effect> {
        let mut out = Vec::new();
        if self.shutdown.is_some() {
            return out;
        }
        self.shutdown = Some(cause);
        out.push(Effect::ShutdownStarted);
        self.replacements.clear();
        let ids: Vec<JobId> = self.slots.iter().map(|s| s.id).collect();
        for id in ids {
            self.feed(id, Input::ShutdownBegun, now, &mut out);
        }
        self.queue.push_back(Event::global(EventKind::Shutdown));
        self.drain(now, &mut out);
        self.settle(now, &mut out);
        out
    }

    fn feed(&mut self, id: JobId, input: Input, now: Instant, out: &mut Vec<Effect>) {
        if let Some(slot) = self.slots.iter_mut().find(|s| s.id == id) {
            let actions = slot.job.handle(input, now);
            self.route(id, actions, out);
        }
    }

    fn route(&mut self, id: JobId, actions: Vec<Action>, out: &mut Vec<Effect>) {
        for action in actions {
            match action {
                Action::Publish(ev) => {
                    self.remember(Some(id), &ev);
                    self.queue.push_back(ev);
                }
                action => out.push(Effect::Job { id, action }),
            }
        }
    }

    /// Deliver queued events to every job in one global order.
    fn drain(&mut self, now: Instant, out: &mut Vec<Effect>) {
        while let Some(ev) = self.queue.pop_front() {
            out.push(Effect::Published(ev.clone()));
            let ids: Vec<JobId> = self.slots.iter().map(|s| s.id).collect();
            for id in ids {
                self.feed(id, Input::Event(ev.clone()), now, out);
            }
        }
    }

    /// Apply the coordinator's rules until nothing changes: preStop hooks done,
    /// dead triggers, replacements, primary exit, shutdown order, the end.
    fn settle(&mut self, now: Instant, out: &mut Vec<Effect>) {
        loop {
            let before = out.len();
            self.hooks_done(now, out);
            self.retire(now, out);
            if self.shutdown.is_none() {
                self.give_up_dead(out);
                if let Some(cause) = self.should_shut_down() {
                    out.extend(self.begin_shutdown(cause, now));
                }
            } else {
                self.stop_in_order(now, out);
            }
            self.drain(now, out);
            if out.len() == before {
                break;
            }
        }
        if let Some(code) = self.exit_code() {
            if !self.finished {
                self.finished = true;
                out.push(Effect::Finished { code });
            }
        }
    }

    /// Jobs waiting on their preStop hooks proceed once no hook is active.
    fn hooks_done(&mut self, now: Instant, out: &mut Vec<Effect>) {
        let waiting: Vec<(JobId, String)> = self
            .slots
            .iter()
            .filter(|s| matches!(s.job.phase(), Phase::StopHooks { .. }))
            .map(|s| (s.id, s.job.name().to_string()))
            .collect();
        for (id, name) in waiting {
            let hook_active = self
                .slots
                .iter()
                .any(|s| s.job.is_active() && job::guarded_by_hook(&s.job.cfg).contains(&name));
            if !hook_active {
                self.feed(id, Input::HooksDone, now, out);
            }
        }
    }

    /// Drop completed retiring jobs and start their replacements.
    fn retire(&mut self, now: Instant, out: &mut Vec<Effect>) {
        let done: Vec<JobId> = self
            .slots
            .iter()
            .filter(|s| s.retiring && s.job.is_completed())
            .map(|s| s.id)
            .collect();
        for id in done {
            self.slots.retain(|s| s.id != id);
            self.happened.retain(|(by, _)| *by != Some(id));
            if let Some(cfg) = self.replacements.remove(&id) {
                let new = self.add(cfg);
                self.feed(
                    new,
                    Input::Event(Event::global(EventKind::Startup)),
                    now,
                    out,
                );
                self.catch_up(new, now, out);
            }
        }
    }

    /// Keep an event that describes a state reached (an exit, health, a
    /// change, a render), once per publisher.
    fn remember(&mut self, publisher: Option<JobId>, ev: &Event) {
        let lasting = matches!(
            ev.kind,
            EventKind::ExitSuccess
                | EventKind::ExitFailed
                | EventKind::Healthy
                | EventKind::Unhealthy
                | EventKind::Changed
                | EventKind::Rendered
        );
        let entry = (publisher, ev.clone());
        if lasting && !self.happened.contains(&entry) {
            self.happened.push(entry);
        }
    }

    /// A job a reload added or replaced starts as if it had been configured
    /// so from the start: each `once` condition it waits on that already
    /// happened is met (a changed application still starts after the
    /// preStart that succeeded long ago). A job's events count only from
    /// its current instance, so a job that waits on a replaced one waits
    /// for the new one. Not for hooks.
    fn catch_up(&mut self, id: JobId, now: Instant, out: &mut Vec<Effect>) {
        let Some(slot) = self.slots.iter().find(|s| s.id == id) else {
            return;
        };
        if slot.job.is_hook() {
            return;
        }
        let publisher = |source: &Source| match source {
            Source::Job(name) => self
                .slots
                .iter()
                .find(|s| !s.retiring && s.job.name() == name)
                .map(|s| Some(s.id)),
            _ => Some(None),
        };
        let past: Vec<Event> = slot
            .job
            .cfg
            .when
            .conditions()
            .iter()
            .filter(|c| !c.repeat)
            .filter_map(|c| {
                let p = publisher(&c.source)?;
                self.happened
                    .iter()
                    .find(|(by, e)| *by == p && e.source == c.source && e.kind == c.event)
                    .map(|(_, e)| e.clone())
            })
            .collect();
        for ev in past {
            self.feed(id, Input::Event(ev), now, out);
        }
    }

    /// Waiting jobs whose trigger can no longer fire complete now, so that a
    /// failed preStart ends pilotfish instead of leaving it idle forever.
    fn give_up_dead(&mut self, out: &mut Vec<Effect>) {
        let completed: Vec<String> = self
            .slots
            .iter()
            .filter(|s| s.job.is_completed())
            .map(|s| s.job.name().to_string())
            .collect();
        let is_done = |n: &str| completed.iter().any(|c| c == n);
        let dead: Vec<(JobId, String, bool)> = self
            .slots
            .iter()
            .filter(|s| {
                !s.retiring && s.job.phase() == Phase::Waiting && !s.job.can_still_fire(&is_done)
            })
            .map(|s| {
                (
                    s.id,
                    s.job.name().to_string(),
                    s.job.is_hook() || s.job.runs() > 0,
                )
            })
            .collect();
        for (id, name, expected) in dead {
            // A hook whose moment passed, or an `each` job whose source is done,
            // is normal; a job that never ran because its chain broke is news.
            if !expected {
                out.push(Effect::Job {
                    id,
                    action: Action::Log {
                        warn: true,
                        message: format!(
                            "job {name} will never start: what it waits for can no longer happen"
                        ),
                    },
                });
            }
            if let Some(slot) = self.slots.iter_mut().find(|s| s.id == id) {
                let actions = slot.job.give_up(!expected);
                self.route(id, actions, out);
            }
        }
    }

    fn should_shut_down(&self) -> Option<ShutdownCause> {
        let live = || self.slots.iter().filter(|s| !s.retiring);
        if live().any(|s| s.job.cfg.primary && s.job.is_completed()) {
            return Some(ShutdownCause::PrimaryEnded);
        }
        if live().next().is_some()
            && live().all(|s| s.job.is_completed())
            && self.replacements.is_empty()
        {
            return Some(ShutdownCause::AllDone);
        }
        None
    }

    /// Stop jobs in reverse dependency order: a job stops once every job that
    /// depends on it has completed. Hooks run until the rest has stopped.
    fn stop_in_order(&mut self, now: Instant, out: &mut Vec<Effect>) {
        let mut to_stop = Vec::new();
        for s in &self.slots {
            if s.job.is_hook() || s.job.is_completed() {
                continue;
            }
            let name = s.job.name();
            let dependents_done = self.slots.iter().all(|d| {
                d.job.is_completed()
                    || d.job.is_hook()
                    || !job::dependencies(&d.job.cfg).iter().any(|n| n == name)
            });
            if dependents_done {
                to_stop.push(s.id);
            }
        }
        // A preStop hook that outlived the wait for it is stopped once the job
        // it guards has stopped: nothing is waiting for it any more.
        for s in &self.slots {
            let guarded = job::guarded_by_hook(&s.job.cfg);
            let late = s.job.is_active()
                && !guarded.is_empty()
                && guarded.iter().all(|g| {
                    self.slots
                        .iter()
                        .all(|o| o.job.name() != g || o.job.is_completed())
                });
            if late {
                to_stop.push(s.id);
            }
        }
        let rest_done = self
            .slots
            .iter()
            .all(|s| s.job.is_hook() || s.job.is_completed());
        if rest_done {
            for s in &self.slots {
                if s.job.is_hook() && !s.job.is_completed() && !s.job.is_active() {
                    to_stop.push(s.id);
                }
            }
        }
        for id in to_stop {
            self.feed(id, Input::Stop, now, out);
        }
    }

    /// Some(code) once everything has completed.
    fn exit_code(&self) -> Option<i32> {
        let cause = self.shutdown?;
        if !self.slots.iter().all(|s| s.job.is_completed()) {
            return None;
        }
        let primary = self.slots.iter().find(|s| s.job.cfg.primary && !s.retiring);
        if let Some(p) = primary {
            if let Some(status) = p.job.last_exit() {
                return Some(status.code());
            }
            if cause == ShutdownCause::PrimaryEnded {
                return Some(1);
            }
        }
        let unclean = self.deadline_hit || self.slots.iter().any(|s| s.job.was_killed());
        Some(match cause {
            ShutdownCause::Signal => i32::from(unclean),
            ShutdownCause::PrimaryEnded => 1,
            ShutdownCause::AllDone => {
                let failed = self
                    .slots
                    .iter()
                    .any(|s| s.job.gave_up() || s.job.last_exit().is_some_and(|e| !e.success()));
                i32::from(failed || unclean)
            }
        })
    }

    /// Apply a new, already validated job list: unchanged jobs keep running,
    /// removed jobs stop, new jobs start, changed jobs stop and start again.
    pub fn reload(&mut self, jobs: Vec<JobConfig>, now: Instant) -> (ReloadSummary, Vec<Effect>) {
        let mut out = Vec::new();
        let mut summary = ReloadSummary::default();
        if self.shutdown.is_some() {
            return (summary, out);
        }
        let mut new_ids = Vec::new();
        for cfg in &jobs {
            let existing = self
                .slots
                .iter()
                .find(|s| !s.retiring && s.job.name() == cfg.name)
                .map(|s| (s.id, *s.job.cfg == *cfg));
            match existing {
                Some((_, true)) => summary.unchanged.push(cfg.name.clone()),
                Some((id, false)) => {
                    summary.restarted.push(cfg.name.clone());
                    self.replacements.insert(id, Arc::new(cfg.clone()));
                    if let Some(s) = self.slots.iter_mut().find(|s| s.id == id) {
                        s.retiring = true;
                    }
                }
                None => {
                    summary.started.push(cfg.name.clone());
                    new_ids.push(self.add(Arc::new(cfg.clone())));
                }
            }
        }
        let removed: Vec<JobId> = self
            .slots
            .iter()
            .filter(|s| !s.retiring && !jobs.iter().any(|c| c.name == s.job.name()))
            .map(|s| s.id)
            .collect();
        for id in &removed {
            if let Some(s) = self.slots.iter_mut().find(|s| s.id == *id) {
                s.retiring = true;
                summary.stopped.push(s.job.name().to_string());
            }
        }
        let retiring: Vec<JobId> = self
            .slots
            .iter()
            .filter(|s| s.retiring)
            .map(|s| s.id)
            .collect();
        for id in retiring {
            self.feed(id, Input::ShutdownBegun, now, &mut out);
            self.feed(id, Input::Stop, now, &mut out);
        }
        for id in new_ids {
            self.feed(
                id,
                Input::Event(Event::global(EventKind::Startup)),
                now,
                &mut out,
            );
            self.catch_up(id, now, &mut out);
        }
        self.drain(now, &mut out);
        self.settle(now, &mut out);
        (summary, out)
    }

    /// Every job's state, in config order (retiring jobs included until gone).
    pub fn status(&self) -> Vec<JobStatus> {
        self.slots
            .iter()
            .map(|s| {
                let j = &s.job;
                JobStatus {
                    name: j.name().to_string(),
                    state: j.phase().name().to_string(),
                    pid: j.pid(),
                    runs: j.runs(),
                    restarts: j.restarts(),
                    last_exit: j.last_exit().map(|e| e.code()),
                    health: j.cfg.health.as_ref().map(|_| {
                        if j.maintenance() {
                            "maintenance"
                        } else {
                            match j.health() {
                                Health::Unknown => "unknown",
                                Health::Healthy => "healthy",
                                Health::Unhealthy => "unhealthy",
                            }
                        }
                        .to_string()
                    }),
                    port: j.cfg.service.as_ref().map(|s| s.port),
                }
            })
            .collect()
    }

    /// Ids of jobs whose trigger is a startup or interval (used by tests).
    pub fn startup_jobs(&self) -> Vec<JobId> {
        self.slots
            .iter()
            .filter(|s| {
                matches!(
                    s.job.cfg.when.trigger,
                    Trigger::Startup | Trigger::Interval { .. }
                )
            })
            .map(|s| s.id)
            .collect()
    }
}

#[cfg(test)]
mod tests;
