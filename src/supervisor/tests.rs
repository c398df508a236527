//! Tests of the pure job and coordinator state machines, driven by a simulated
//! shell under a paused clock: no process is spawned, no real time passes.

use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::time::Instant;

use super::job::{Action, ExitStatus, Input, TimerKind};
use super::{Effect, JobId, Supervisor};
use crate::config::{load_str, Config};
use crate::events::{Event, EventKind};

/// A shell that records what the supervisor asks for and answers spawns at once.
struct Sim {
    sup: Supervisor,
    next_pid: u32,
    spawned: Vec<(String, u32)>,
    signals: Vec<(String, Signal)>,
    timers: Vec<(JobId, TimerKind, u64, Duration)>,
    events: Vec<String>,
    health_checks: Vec<String>,
    finished: Option<i32>,
}

fn config(text: &str) -> Config {
    load_str(text).unwrap_or_else(|e| panic!("test config invalid:\n{e}"))
}

impl Sim {
    fn new(text: &str) -> Sim {
        let mut sim = Sim {
            sup: Supervisor::new(config(text).jobs, 42),
            next_pid: 100,
            spawned: Vec::new(),
            signals: Vec::new(),
            timers: Vec::new(),
            events: Vec::new(),
            health_checks: Vec::new(),
            finished: None,
        };
        let e = sim.sup.start(Instant::now());
        sim.apply(e);
        sim
    }

    fn id(&self, name: &str) -> JobId {
        self.sup
            .jobs()
            .filter(|(_, j)| j.name() == name)
            .map(|(id, _)| id)
            .last()
            .unwrap_or_else(|| panic!("no job {name}"))
    }

    fn name(&self, id: JobId) -> String {
        self.sup
            .job(id)
            .map(|j| j.name().to_string())
            .unwrap_or_default()
    }

    fn apply(&mut self, effects: Vec<Effect>) {
        for e in effects {
            match e {
                Effect::Job { id, action } => match action {
                    Action::Spawn => {
                        self.next_pid += 1;
                        let pid = self.next_pid;
                        self.spawned.push((self.name(id), pid));
                        let more = self
                            .sup
                            .job_input(id, Input::Spawned { pid }, Instant::now());
                        self.apply(more);
                    }
                    Action::Signal { signal, .. } => self.signals.push((self.name(id), signal)),
                    Action::SetTimer {
                        kind,
                        generation,
                        after,
                    } => self.timers.push((id, kind, generation, after)),
                    Action::RunHealthCheck => self.health_checks.push(self.name(id)),
                    Action::Publish(_) | Action::Log { .. } => {}
                },
                Effect::Published(ev) => self.events.push(ev.to_string()),
                Effect::ShutdownStarted => {}
                Effect::Finished { code } => self.finished = Some(code),
            }
        }
    }

    fn input(&mut self, name: &str, input: Input) {
        let id = self.id(name);
        let e = self.sup.job_input(id, input, Instant::now());
        self.apply(e);
    }

    fn pid(&self, name: &str) -> u32 {
        self.sup
            .job(self.id(name))
            .and_then(|j| j.pid())
            .unwrap_or_else(|| panic!("{name} not running"))
    }

    fn exit(&mut self, name: &str, status: ExitStatus) {
        let pid = self.pid(name);
        self.input(name, Input::Exited { pid, status });
    }

    /// The latest timer of this kind armed for the job.
    fn timer(&self, name: &str, kind: TimerKind) -> (u64, Duration) {
        let id = self.id(name);
        self.timers
            .iter()
            .rev()
            .find(|(i, k, _, _)| *i == id && *k == kind)
            .map(|(_, _, g, d)| (*g, *d))
            .unwrap_or_else(|| panic!("no {kind:?} timer for {name}"))
    }

    async fn fire(&mut self, name: &str, kind: TimerKind) {
        let (generation, after) = self.timer(name, kind);
        tokio::time::advance(after).await;
        self.input(name, Input::Timer { kind, generation });
    }

    fn signal(&mut self, sig: Signal) {
        let e = self.sup.signal(sig, Instant::now());
        self.apply(e);
    }

    fn spawn_count(&self, name: &str) -> usize {
        self.spawned.iter().filter(|(n, _)| n == name).count()
    }

    fn state(&self, name: &str) -> String {
        self.sup
            .status()
            .into_iter()
            .find(|s| s.name == name)
            .map(|s| s.state)
            .unwrap_or_default()
    }
}

#[tokio::test(start_paused = true)]
async fn restarts_back_off_exponentially_with_jitter_then_stop() {
    let mut s = Sim::new(
        r#"
        [[jobs]]
        name = "app"
        exec = "app"
        restarts = 3
        restart_backoff = { initial = "1s", max = "3s" }
    "#,
    );
    assert_eq!(s.spawn_count("app"), 1);
    let mut delays = Vec::new();
    for _ in 0..3 {
        s.exit("app", ExitStatus::Code(1));
        assert_eq!(s.state("app"), "backoff");
        let (_, d) = s.timer("app", TimerKind::Backoff);
        delays.push(d);
        s.fire("app", TimerKind::Backoff).await;
    }
    // Equal jitter: each delay lies in [base/2, base], base = 1s, 2s, 3s (capped).
    for (d, base) in delays.iter().zip([1000u64, 2000, 3000]) {
        assert!(
            *d >= Duration::from_millis(base / 2) && *d <= Duration::from_millis(base),
            "{delays:?}"
        );
    }
    assert_eq!(s.spawn_count("app"), 4);
    s.exit("app", ExitStatus::Code(0));
    assert_eq!(s.state("app"), "completed");
    assert!(s.events.contains(&"app.stopped".to_string()));
    // Every job done: pilotfish finishes; the last run succeeded.
    assert_eq!(s.finished, Some(0));
}

#[tokio::test(start_paused = true)]
async fn backoff_resets_after_a_long_healthy_run() {
    let mut s = Sim::new(
        r#"
        [[jobs]]
        name = "app"
        exec = "app"
        restarts = "unlimited"
        restart_backoff = { initial = "1s", max = "8s" }
    "#,
    );
    for _ in 0..3 {
        s.exit("app", ExitStatus::Code(1));
        s.fire("app", TimerKind::Backoff).await;
    }
    let (_, third) = s.timer("app", TimerKind::Backoff);
    assert!(third >= Duration::from_secs(2), "{third:?}");
    tokio::time::advance(Duration::from_secs(60)).await;
    s.exit("app", ExitStatus::Code(1));
    let (_, after_long_run) = s.timer("app", TimerKind::Backoff);
    assert!(
        after_long_run <= Duration::from_secs(1),
        "{after_long_run:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn periodic_job_skips_overlapping_ticks_and_counts_runs() {
    let mut s = Sim::new(
        r#"
        [[jobs]]
        name = "tick"
        exec = "work"
        when = { interval = "1s" }
        timeout = "10s"
        restarts = 2
    "#,
    );
    assert_eq!(s.spawn_count("tick"), 1);
    // Still running at the next tick: skipped, not queued, not blocking.
    s.fire("tick", TimerKind::Tick).await;
    assert_eq!(s.spawn_count("tick"), 1);
    s.exit("tick", ExitStatus::Code(0));
    s.fire("tick", TimerKind::Tick).await;
    assert_eq!(s.spawn_count("tick"), 2);
    s.exit("tick", ExitStatus::Code(0));
    s.fire("tick", TimerKind::Tick).await;
    assert_eq!(s.spawn_count("tick"), 3);
    s.exit("tick", ExitStatus::Code(0));
    s.fire("tick", TimerKind::Tick).await;
    // restarts = 2 means three runs in all.
    assert_eq!(s.spawn_count("tick"), 3);
    assert_eq!(s.state("tick"), "completed");
}

#[tokio::test(start_paused = true)]
async fn a_periodic_job_after_an_event_starts_its_period_then() {
    let text = r#"
        [[jobs]]
        name = "setup"
        exec = "setup"

        [[jobs]]
        name = "tick"
        exec = "work"
        when = { interval = "1s", source = "setup", once = "exitSuccess" }
    "#;
    let mut s = Sim::new(text);
    assert_eq!(s.spawn_count("setup"), 1);
    assert_eq!(
        s.spawn_count("tick"),
        0,
        "nothing runs before setup succeeds"
    );
    s.exit("setup", ExitStatus::Code(0));
    assert_eq!(s.spawn_count("tick"), 1, "the first run is at the event");
    s.exit("tick", ExitStatus::Code(0));
    s.fire("tick", TimerKind::Tick).await;
    assert_eq!(s.spawn_count("tick"), 2, "then every interval");

    // When setup fails, the event can never happen: the job never runs.
    let mut s = Sim::new(text);
    s.exit("setup", ExitStatus::Code(1));
    assert_eq!(s.spawn_count("tick"), 0);
    assert_eq!(s.state("tick"), "completed");
}

#[tokio::test(start_paused = true)]
async fn stale_timers_are_ignored() {
    let mut s = Sim::new(
        r#"
        [[jobs]]
        name = "app"
        exec = "app"
        restarts = 1
    "#,
    );
    s.exit("app", ExitStatus::Code(1));
    let (old, _) = s.timer("app", TimerKind::Backoff);
    s.signal(Signal::SIGTERM);
    s.input(
        "app",
        Input::Timer {
            kind: TimerKind::Backoff,
            generation: old,
        },
    );
    assert_eq!(
        s.spawn_count("app"),
        1,
        "a restart timer from before shutdown must not start the job"
    );
}

#[tokio::test(start_paused = true)]
async fn stop_runs_prestop_then_signal_then_sigkill_after_grace() {
    let mut s = Sim::new(
        r#"
        [[jobs]]
        name = "app"
        exec = "app"
        stop_signal = "SIGQUIT"
        stop_timeout = "2s"
        [[jobs]]
        name = "prestop"
        exec = "deregister"
        when = { source = "app", once = "stopping" }
        [[jobs]]
        name = "poststop"
        exec = "cleanup"
        when = { source = "app", once = "stopped" }
    "#,
    );
    s.signal(Signal::SIGTERM);
    assert_eq!(s.spawn_count("prestop"), 1, "preStop starts on stopping");
    assert!(
        s.signals.is_empty(),
        "app must not be signalled while preStop runs: {:?}",
        s.signals
    );
    s.exit("prestop", ExitStatus::Code(0));
    assert_eq!(s.signals, [("app".to_string(), Signal::SIGQUIT)]);
    s.fire("app", TimerKind::StopGrace).await;
    assert_eq!(
        s.signals.last(),
        Some(&("app".to_string(), Signal::SIGKILL))
    );
    assert_eq!(s.spawn_count("poststop"), 0);
    s.exit("app", ExitStatus::Signal(9));
    assert_eq!(s.spawn_count("poststop"), 1, "postStop starts on stopped");
    assert_eq!(s.finished, None, "postStop still running");
    s.exit("poststop", ExitStatus::Code(0));
    // The app had to be SIGKILLed: not a clean shutdown.
    assert_eq!(s.finished, Some(1));
}

#[tokio::test(start_paused = true)]
async fn a_hung_prestop_is_bounded_by_the_stop_timeout() {
    let mut s = Sim::new(
        r#"
        [[jobs]]
        name = "app"
        exec = "app"
        stop_timeout = "3s"
        [[jobs]]
        name = "prestop"
        exec = "hang"
        when = { source = "app", once = "stopping" }
    "#,
    );
    s.signal(Signal::SIGTERM);
    assert!(s.signals.is_empty());
    let (_, wait) = s.timer("app", TimerKind::HookWait);
    assert_eq!(wait, Duration::from_secs(3));
    s.fire("app", TimerKind::HookWait).await;
    assert_eq!(s.signals, [("app".to_string(), Signal::SIGTERM)]);
    // Once the app has stopped, the overrunning hook is stopped too.
    s.exit("app", ExitStatus::Code(0));
    assert_eq!(
        s.signals.last(),
        Some(&("prestop".to_string(), Signal::SIGTERM))
    );
    s.exit("prestop", ExitStatus::Signal(15));
    assert_eq!(s.finished, Some(0));
}

#[tokio::test(start_paused = true)]
async fn shutdown_stops_dependents_before_what_they_depend_on() {
    let mut s = Sim::new(
        r#"
        [[jobs]]
        name = "db"
        exec = "db"
        health = { exec = "check", interval = "1s" }
        [[jobs]]
        name = "app"
        exec = "app"
        when = { source = "db", once = "healthy" }
    "#,
    );
    s.fire("db", TimerKind::HealthTick).await;
    assert_eq!(s.health_checks, ["db"]);
    s.input("db", Input::HealthResult { ok: true });
    assert_eq!(s.spawn_count("app"), 1);
    s.signal(Signal::SIGTERM);
    assert_eq!(
        s.signals,
        [("app".to_string(), Signal::SIGTERM)],
        "app first; db waits"
    );
    s.exit("app", ExitStatus::Code(0));
    assert_eq!(s.signals.last(), Some(&("db".to_string(), Signal::SIGTERM)));
    s.exit("db", ExitStatus::Code(0));
    assert_eq!(s.finished, Some(0));
}

#[tokio::test(start_paused = true)]
async fn health_events_fire_on_change_only() {
    let mut s = Sim::new(
        r#"
        [[jobs]]
        name = "web"
        exec = "web"
        health = { exec = "check", interval = "1s" }
    "#,
    );
    for ok in [true, true, false, false, true] {
        s.fire("web", TimerKind::HealthTick).await;
        s.input("web", Input::HealthResult { ok });
    }
    let health: Vec<&String> = s.events.iter().filter(|e| e.contains("ealthy")).collect();
    assert_eq!(health, ["web.healthy", "web.unhealthy", "web.healthy"]);
}

#[tokio::test(start_paused = true)]
async fn a_running_health_check_is_never_doubled() {
    let mut s = Sim::new(
        r#"
        [[jobs]]
        name = "web"
        exec = "web"
        health = { exec = "slow-check", interval = "1s", timeout = "30s" }
    "#,
    );
    s.fire("web", TimerKind::HealthTick).await;
    s.fire("web", TimerKind::HealthTick).await;
    s.fire("web", TimerKind::HealthTick).await;
    assert_eq!(
        s.health_checks.len(),
        1,
        "checks still in flight are skipped, not queued"
    );
}

#[tokio::test(start_paused = true)]
async fn all_and_any_conditions() {
    let mut s = Sim::new(
        r#"
        [[watches]]
        name = "backend"
        [[jobs]]
        name = "a"
        exec = "a"
        [[jobs]]
        name = "b"
        exec = "b"
        [[jobs]]
        name = "both"
        exec = "both"
        when = { all = [{ source = "a", once = "exitSuccess" }, { source = "b", once = "exitSuccess" }] }
        [[jobs]]
        name = "either"
        exec = "either"
        when = { any = [{ source = "a", once = "exitFailed" }, { source = "watch.backend", each = "changed" }] }
    "#,
    );
    s.exit("a", ExitStatus::Code(0));
    assert_eq!(s.spawn_count("both"), 0, "waits for b too");
    assert_eq!(s.spawn_count("either"), 0);
    s.exit("b", ExitStatus::Code(0));
    assert_eq!(s.spawn_count("both"), 1);
    // `either` still listens to the watch, even though a can no longer fail.
    let id = s.id("either");
    let e = s.sup.job_input(
        id,
        Input::Event(Event::new(
            EventKind::Changed,
            crate::config::Source::Watch("backend".into()),
        )),
        Instant::now(),
    );
    s.apply(e);
    assert_eq!(s.spawn_count("either"), 1);
}

#[tokio::test(start_paused = true)]
async fn a_failed_prestart_ends_pilotfish_instead_of_idling() {
    let mut s = Sim::new(
        r#"
        [[jobs]]
        name = "prestart"
        exec = "setup"
        [[jobs]]
        name = "app"
        exec = "app"
        when = { source = "prestart", once = "exitSuccess" }
    "#,
    );
    s.exit("prestart", ExitStatus::Code(2));
    assert_eq!(s.spawn_count("app"), 0);
    assert_eq!(s.finished, Some(1));
}

#[tokio::test(start_paused = true)]
async fn primary_exit_code_and_signal_death_propagate() {
    let mut s = Sim::new(
        r#"
        [[jobs]]
        name = "app"
        exec = "app"
        primary = true
        [[jobs]]
        name = "sidecar"
        exec = "sidecar"
    "#,
    );
    s.exit("app", ExitStatus::Code(3));
    assert_eq!(s.signals, [("sidecar".to_string(), Signal::SIGTERM)]);
    s.exit("sidecar", ExitStatus::Signal(15));
    assert_eq!(s.finished, Some(3));

    let mut s = Sim::new(
        r#"
        [[jobs]]
        name = "app"
        exec = "app"
        primary = true
    "#,
    );
    s.signal(Signal::SIGTERM);
    s.exit("app", ExitStatus::Signal(15));
    assert_eq!(s.finished, Some(143));
}

#[tokio::test(start_paused = true)]
async fn forwarded_signals_reach_only_jobs_that_ask() {
    let mut s = Sim::new(
        r#"
        [[jobs]]
        name = "nginx"
        exec = "nginx"
        forward_signals = ["SIGHUP"]
        [[jobs]]
        name = "other"
        exec = "other"
        [[jobs]]
        name = "on-hup"
        exec = "reload"
        when = { source = "SIGHUP" }
    "#,
    );
    s.signal(Signal::SIGHUP);
    assert_eq!(s.signals, [("nginx".to_string(), Signal::SIGHUP)]);
    assert_eq!(s.spawn_count("on-hup"), 1);
}

#[tokio::test(start_paused = true)]
async fn reload_applies_a_per_job_diff() {
    let mut s = Sim::new(
        r#"
        [[jobs]]
        name = "keep"
        exec = "keep"
        [[jobs]]
        name = "change"
        exec = "old"
        [[jobs]]
        name = "remove"
        exec = "remove"
    "#,
    );
    let keep_pid = s.pid("keep");
    let new = config(
        r#"
        [[jobs]]
        name = "keep"
        exec = "keep"
        [[jobs]]
        name = "change"
        exec = "new"
        [[jobs]]
        name = "add"
        exec = "add"
    "#,
    );
    let (summary, e) = s.sup.reload(new.jobs, Instant::now());
    s.apply(e);
    assert_eq!(summary.unchanged, ["keep"]);
    assert_eq!(summary.restarted, ["change"]);
    assert_eq!(summary.stopped, ["remove"]);
    assert_eq!(summary.started, ["add"]);
    assert_eq!(s.spawn_count("add"), 1);
    let mut signalled: Vec<&str> = s.signals.iter().map(|(n, _)| n.as_str()).collect();
    signalled.sort();
    assert_eq!(signalled, ["change", "remove"]);
    s.exit("change", ExitStatus::Signal(15));
    assert_eq!(
        s.spawn_count("change"),
        2,
        "the changed job starts again with its new config"
    );
    assert_eq!(s.pid("keep"), keep_pid);
    assert!(s.finished.is_none());
}

#[tokio::test(start_paused = true)]
async fn once_shutdown_jobs_run_at_shutdown() {
    let mut s = Sim::new(
        r#"
        [[jobs]]
        name = "app"
        exec = "app"
        [[jobs]]
        name = "goodbye"
        exec = "say-bye"
        when = { once = "shutdown" }
    "#,
    );
    assert_eq!(s.spawn_count("goodbye"), 0);
    s.signal(Signal::SIGTERM);
    assert_eq!(s.spawn_count("goodbye"), 1);
    s.exit("app", ExitStatus::Code(0));
    assert_eq!(s.finished, None);
    s.exit("goodbye", ExitStatus::Code(0));
    assert_eq!(s.finished, Some(0));
}

#[tokio::test(start_paused = true)]
async fn wait_timeout_gives_up() {
    let mut s = Sim::new(
        r#"
        [[jobs]]
        name = "db"
        exec = "db"
        health = { exec = "check", interval = "1s" }
        [[jobs]]
        name = "app"
        exec = "app"
        when = { source = "db", once = "healthy", timeout = "5s" }
    "#,
    );
    s.fire("app", TimerKind::WaitTimeout).await;
    assert_eq!(s.state("app"), "completed");
    assert_eq!(s.spawn_count("app"), 0);
}

#[tokio::test(start_paused = true)]
async fn a_reloaded_job_finds_what_already_happened() {
    let text = |pre: &str, app: &str, more: &str| {
        format!(
            r#"
        [[watches]]
        name = "backend"
        service = "backend"

        [[jobs]]
        name = "preStart"
        exec = "{pre}"

        [[jobs]]
        name = "app"
        exec = "{app}"
        primary = true
        when = {{ source = "preStart", once = "exitSuccess" }}
        {more}
    "#
        )
    };
    let watch_changed = |s: &mut Sim| {
        let e = s.sup.publish(
            Event::new(
                EventKind::Changed,
                crate::config::Source::Watch("backend".into()),
            ),
            Instant::now(),
        );
        s.apply(e);
    };
    let mut s = Sim::new(&text("setup", "v1", ""));
    s.exit("preStart", ExitStatus::Code(0));
    watch_changed(&mut s);
    assert_eq!(s.spawn_count("app"), 1);

    // The application changes: it stops and starts again, though preStart
    // succeeded before the reload; added jobs waiting on preStart or the
    // watch's first change start too; one waiting on every change waits.
    let more = r#"
        [[jobs]]
        name = "after-setup"
        exec = "x"
        when = { source = "preStart", once = "exitSuccess" }
        [[jobs]]
        name = "first-change"
        exec = "y"
        when = { source = "watch.backend", once = "changed" }
        [[jobs]]
        name = "every-change"
        exec = "z"
        when = { source = "watch.backend", each = "changed" }
    "#;
    let (summary, e) = s
        .sup
        .reload(config(&text("setup", "v2", more)).jobs, Instant::now());
    s.apply(e);
    assert_eq!(summary.restarted, ["app"]);
    assert_eq!(s.spawn_count("after-setup"), 1);
    assert_eq!(s.spawn_count("first-change"), 1);
    assert_eq!(s.spawn_count("every-change"), 0);
    s.exit("app", ExitStatus::Signal(15));
    assert_eq!(s.spawn_count("app"), 2, "the new application runs");
    assert!(s.finished.is_none());
    watch_changed(&mut s);
    assert_eq!(s.spawn_count("every-change"), 1);

    // preStart changes too: it runs again, and the new application waits
    // for the new preStart, not the old one's success.
    let (summary, e) = s
        .sup
        .reload(config(&text("setup2", "v3", more)).jobs, Instant::now());
    s.apply(e);
    assert_eq!(summary.restarted, ["preStart", "app"]);
    assert_eq!(s.spawn_count("preStart"), 2);
    s.exit("app", ExitStatus::Signal(15));
    assert_eq!(s.spawn_count("app"), 2, "waits for the new preStart");
    s.exit("preStart", ExitStatus::Code(0));
    assert_eq!(s.spawn_count("app"), 3);
    assert!(s.finished.is_none());
}
