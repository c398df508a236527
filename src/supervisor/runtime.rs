//! The I/O shell around `Supervisor`: one task owns the coordinator and feeds it
//! inputs from one channel (process exits, timers, health results, signals,
//! control requests). Every effect that does I/O either completes at once
//! (spawn, kill) or runs in its own task that reports back through the channel,
//! so the loop never waits on a job.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::job::{Action, ExitStatus, Input};
use super::process::{self, EnvOverlay};
use super::registration::{RegInput, Registration};
use super::watch::Watch;
use super::{Effect, JobId, Supervisor};
use crate::config::{self, Config, ServiceConfig, Source};
use crate::control::{ControlRequest, StatusSnapshot};
use crate::discovery::client::{self as consul, Client};
use crate::events::{Event, EventKind};
use crate::telemetry::{self, UserMetrics};
use crate::template::{self, TemplateSet};

/// How long shutdown waits for the agent to confirm deregistrations before
/// the jobs get their stop signals anyway.
const DEREGISTER_DEADLINE: Duration = Duration::from_secs(3);

/// HAProxy's master ignores a SIGUSR2 that arrives while it is still
/// finishing the previous reload (seen with 2.6: about 1 in 40 reloads sent
/// back to back), and a process just started may not handle the signal yet
/// (its default action ends it). So a template reload signal waits until
/// the job has run this long, and, for a master with workers, until the
/// previous reload has forked a new worker (plus `RELOAD_SETTLE`, at most
/// `RELOAD_CONFIRM`); reloads asked for meanwhile become one.
const RELOAD_AFTER_START: Duration = Duration::from_secs(1);
const RELOAD_SETTLE: Duration = Duration::from_millis(100);
const RELOAD_CONFIRM: Duration = Duration::from_secs(3);
const RELOAD_POLL: Duration = Duration::from_millis(20);

/// One job's template reloads: the one not yet confirmed, the one waiting.
#[derive(Debug, Default)]
struct ReloadPace {
    /// (master pid, its children when signalled, when) of the last reload
    /// of a master with workers, until a new worker shows.
    inflight: Option<(i32, std::collections::BTreeSet<i32>, Instant)>,
    /// A reload asked for while one was in flight or too early.
    waiting: Option<Signal>,
}

/// Everything the loop reacts to.
#[derive(Debug)]
pub enum RuntimeInput {
    Job(JobId, Input),
    /// A health check (or a check-less service's heartbeat) ended.
    Health {
        id: JobId,
        ok: bool,
        output: String,
    },
    /// A watch saw a change: its events, in order.
    Watch(String, Vec<EventKind>),
    /// The template watcher installed a file or asks for a reload signal.
    Template(template::Notice),
    /// Look again whether a job's reload has forked its new worker, or
    /// whether a held-back reload may go out.
    ReloadPace(String),
    /// The telemetry service's heartbeat is due.
    TelemetryHeartbeat,
    Signal(Signal),
    Control(ControlRequest),
    ShutdownDeadline,
    /// Processes did not go away even after SIGKILL: give up on them.
    HardDeadline,
}

pub struct Runtime {
    sup: Supervisor,
    config: Config,
    config_path: Option<PathBuf>,
    overlay: EnvOverlay,
    metrics: UserMetrics,
    tx: mpsc::UnboundedSender<RuntimeInput>,
    rx: mpsc::UnboundedReceiver<RuntimeInput>,
    /// Applies a new logging level on reload.
    on_reload: Box<dyn Fn(&Config) + Send>,
    discovery: Option<Discovery>,
    /// When each job's current process was started.
    spawned: std::collections::HashMap<JobId, Instant>,
    /// Per job: template reload signals in flight and waiting.
    reloads: std::collections::HashMap<String, ReloadPace>,
}

/// Everything that talks to the discovery agent: service registrations by
/// job, the telemetry service, the watches.
struct Discovery {
    client: Client,
    services: std::collections::BTreeMap<JobId, Registration>,
    telemetry: Option<Registration>,
    watches: Vec<Watch>,
    /// The `[[templates]]` watcher, when there are templates.
    templates: Option<TemplateSet>,
    /// Services left the catalog for shutdown.
    deregistered: bool,
}

/// The client for `[consul]`; without the table, `$CONSUL_HTTP_ADDR` or
/// 127.0.0.1:8500 when something needs an agent (a service job or a watch).
pub fn discovery_client(config: &Config) -> Result<Option<Client>, String> {
    let opts = match &config.consul {
        Some(c) => consul::Options {
            address: c.address.clone(),
            token: c.token.clone(),
            tls: consul::TlsOptions {
                ca_file: c.tls.ca_file.clone(),
                cert_file: c.tls.cert_file.clone(),
                key_file: c.tls.key_file.clone(),
                server_name: c.tls.server_name.clone(),
                verify: c.tls.verify,
            },
        },
        None if config.jobs.iter().any(|j| j.service.is_some())
            || !config.watches.is_empty()
            || !config.templates.is_empty() =>
        {
            consul::Options {
                address: std::env::var("CONSUL_HTTP_ADDR")
                    .unwrap_or_else(|_| "127.0.0.1:8500".into()),
                token: std::env::var("CONSUL_HTTP_TOKEN").ok(),
                tls: consul::TlsOptions::default(),
            }
        }
        None => return Ok(None),
    };
    Client::new(&opts).map(Some).map_err(|e| e.to_string())
}

/// `PILOTFISH_<JOB>_IP` / `_PORT` for every service job,
/// `CONSUL_HTTP_ADDR` (and `CONSUL_HTTP_TOKEN`) naming the agent, and
/// `PILOTFISH_SOCKET` and `PILOTFISH_BIN` (so `"$PILOTFISH_BIN" putmetric`,
/// `putenv`, `reload` run by a job reach this supervisor wherever its binary
/// is), for every job's environment.
fn discovery_env(config: &Config, client: Option<&Client>) -> Vec<(String, String)> {
    let mut vars = vec![(
        "PILOTFISH_SOCKET".to_string(),
        config.control.socket.display().to_string(),
    )];
    if let Ok(me) = std::env::current_exe() {
        vars.push(("PILOTFISH_BIN".to_string(), me.display().to_string()));
    }
    if let Some(c) = client {
        vars.push(("CONSUL_HTTP_ADDR".to_string(), c.address().to_string()));
        if let Some(t) = c.token() {
            vars.push(("CONSUL_HTTP_TOKEN".to_string(), t.to_string()));
        }
    }
    for job in &config.jobs {
        let Some(svc) = &job.service else { continue };
        let var: String = job
            .name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_uppercase()
                } else {
                    '_'
                }
            })
            .collect();
        if let Ok(ip) = crate::interfaces::resolve(&svc.interfaces) {
            vars.push((format!("PILOTFISH_{var}_IP"), ip.to_string()));
        }
        vars.push((format!("PILOTFISH_{var}_PORT"), svc.port.to_string()));
    }
    vars
}

impl Runtime {
    /// Fails only when the `[consul]` settings cannot make a client (a CA
    /// file that does not exist, a bad address).
    pub fn new(
        config: Config,
        config_path: Option<PathBuf>,
        on_reload: Box<dyn Fn(&Config) + Send>,
    ) -> Result<Runtime, String> {
        let client = discovery_client(&config)?;
        let mut overlay = EnvOverlay::default();
        for (k, v) in discovery_env(&config, client.as_ref()) {
            overlay.vars.insert(k, Some(v));
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let seed = u64::from(std::process::id()) ^ 0x5851_F42D_4C95_7F2D;
        let defs = config
            .telemetry
            .as_ref()
            .map(|t| t.metrics.clone())
            .unwrap_or_default();
        let discovery = client.map(|client| Discovery {
            client,
            services: Default::default(),
            telemetry: None,
            watches: Vec::new(),
            templates: None,
            deregistered: false,
        });
        Ok(Runtime {
            sup: Supervisor::new(config.jobs.clone(), seed),
            config,
            config_path,
            overlay,
            metrics: UserMetrics::new(&defs),
            tx,
            rx,
            on_reload,
            discovery,
            spawned: Default::default(),
            reloads: Default::default(),
        })
    }

    /// Start the watches and the telemetry service's registration.
    fn start_discovery(&mut self) {
        self.start_templates();
        let Some(d) = &mut self.discovery else { return };
        let (wtx, mut wrx) = mpsc::unbounded_channel::<(String, Vec<EventKind>)>();
        for w in &self.config.watches {
            d.watches
                .push(Watch::spawn(w.clone(), d.client.clone(), wtx.clone()));
        }
        let tx = self.tx.clone();
        tokio::spawn(async move {
            while let Some((name, kinds)) = wrx.recv().await {
                if tx.send(RuntimeInput::Watch(name, kinds)).is_err() {
                    break;
                }
            }
        });
        if let Some(t) = &self.config.telemetry {
            // ContainerPilot registered its telemetry endpoint as a service,
            // so Prometheus can find every container through Consul.
            let svc = ServiceConfig {
                port: t.port,
                id: None,
                meta: Default::default(),
                tags: t.tags.clone(),
                interfaces: t.interfaces.clone(),
                initial_status: Some(config::CheckStatus::Passing),
                deregister_critical_service_after: None,
                enable_tag_override: false,
            };
            let reg = Registration::spawn(
                &t.service,
                &svc,
                config::SERVICE_TTL,
                false,
                d.client.clone(),
            );
            reg.send(RegInput::Started);
            d.telemetry = Some(reg);
            self.after(Duration::ZERO, RuntimeInput::TelemetryHeartbeat);
        }
        self.sync_registrations();
    }

    /// (Re)start the template watcher on the current `[[templates]]`.
    fn start_templates(&mut self) {
        let Some(d) = &mut self.discovery else { return };
        d.templates = None;
        if self.config.templates.is_empty() {
            return;
        }
        let (ntx, mut nrx) = mpsc::unbounded_channel();
        d.templates = Some(TemplateSet::spawn(
            self.config.templates.clone(),
            d.client.clone(),
            template::Mode::default(),
            ntx,
        ));
        let tx = self.tx.clone();
        tokio::spawn(async move {
            while let Some(n) = nrx.recv().await {
                if tx.send(RuntimeInput::Template(n)).is_err() {
                    break;
                }
            }
        });
    }

    /// What the template watcher said: an installed file is an event on the
    /// bus (`rendered` the first time, `changed` after); a reload signal goes
    /// to the job's main process only (HAProxy's master, not its workers).
    fn template_notice(&mut self, n: template::Notice, now: Instant) -> Vec<Effect> {
        match n {
            template::Notice::Installed { template, first } => {
                let kind = if first {
                    EventKind::Rendered
                } else {
                    EventKind::Changed
                };
                self.sup
                    .publish(Event::new(kind, Source::Template(template)), now)
            }
            template::Notice::Signal {
                job,
                signal,
                installed,
            } => {
                let started = self
                    .sup
                    .jobs()
                    .find(|(_, j)| j.name() == job)
                    .and_then(|(id, _)| self.spawned.get(&id))
                    .copied();
                if started.is_some_and(|at| at >= installed) {
                    // Started after the install (after_templates): it read the new file.
                    return Vec::new();
                }
                let pace = self.reloads.entry(job.clone()).or_default();
                if pace.inflight.is_some() || pace.waiting.is_some() {
                    // It reads this file too when it goes out.
                    pace.waiting = Some(signal);
                } else if let Some(wait) = started
                    .map(|at| at + RELOAD_AFTER_START)
                    .filter(|due| *due > now)
                {
                    pace.waiting = Some(signal);
                    self.after(wait - now, RuntimeInput::ReloadPace(job));
                } else {
                    self.send_reload(&job, signal, now);
                }
                Vec::new()
            }
        }
    }

    /// A template's reload signal to a job's main process (HAProxy's
    /// master, not its workers), if it runs.
    fn send_reload(&mut self, job: &str, signal: Signal, now: Instant) {
        let pid = self
            .sup
            .jobs()
            .find(|(_, j)| j.name() == job)
            .and_then(|(_, j)| j.pid())
            .and_then(|p| i32::try_from(p).ok());
        let Some(pid) = pid else {
            tracing::info!(
                "templates: job {job} is not running; it reads the new file when it starts"
            );
            return;
        };
        let workers = process::children(pid);
        tracing::info!("templates: {signal} to job {job} (pid {pid})");
        if let Err(e) = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal) {
            tracing::warn!("templates: {signal} to job {job} (pid {pid}): {e}");
            return;
        }
        if !workers.is_empty() {
            // A master with workers: done when a new worker shows.
            self.reloads.entry(job.to_string()).or_default().inflight = Some((pid, workers, now));
            self.after(RELOAD_POLL, RuntimeInput::ReloadPace(job.to_string()));
        }
    }

    /// A reload in flight forked its new worker (or took too long), or a
    /// held-back one may go out now.
    fn reload_pace(&mut self, job: String, now: Instant) {
        let Some(pace) = self.reloads.get_mut(&job) else {
            return;
        };
        if let Some((pid, before, sent)) = &pace.inflight {
            let new_worker = process::children(*pid).iter().any(|c| !before.contains(c));
            if !new_worker && now < *sent + RELOAD_CONFIRM {
                self.after(RELOAD_POLL, RuntimeInput::ReloadPace(job));
                return;
            }
            if !new_worker {
                tracing::warn!(
                    "templates: job {job} forked no new worker within {} of its reload signal; sending the next one anyway",
                    config::duration::format_duration(RELOAD_CONFIRM)
                );
            }
            pace.inflight = None;
            if pace.waiting.is_some() {
                self.after(RELOAD_SETTLE, RuntimeInput::ReloadPace(job));
            }
            return;
        }
        if let Some(signal) = pace.waiting.take() {
            self.send_reload(&job, signal, now);
        }
    }

    /// One registration per live service job: new jobs (start, reload) get
    /// one; a job gone for good is deregistered, unless a new job took over
    /// its service ID (a job restarted by reload).
    fn sync_registrations(&mut self) {
        let Some(d) = &mut self.discovery else { return };
        if d.deregistered {
            return;
        }
        let live: Vec<(JobId, Arc<config::JobConfig>)> = self
            .sup
            .jobs()
            .filter(|(_, j)| j.cfg.service.is_some())
            .map(|(id, j)| (id, Arc::clone(&j.cfg)))
            .collect();
        for (id, cfg) in &live {
            if !d.services.contains_key(id) {
                if let Some(svc) = &cfg.service {
                    let ttl = cfg
                        .health
                        .as_ref()
                        .and_then(|h| h.ttl)
                        .unwrap_or(config::SERVICE_TTL);
                    let checked = cfg.health.as_ref().is_some_and(|h| h.exec.is_some());
                    d.services.insert(
                        *id,
                        Registration::spawn(&cfg.name, svc, ttl, checked, d.client.clone()),
                    );
                }
            }
        }
        let gone: Vec<JobId> = d
            .services
            .keys()
            .filter(|id| !live.iter().any(|(l, _)| l == *id))
            .copied()
            .collect();
        for id in gone {
            if let Some(reg) = d.services.remove(&id) {
                let taken = d.services.values().any(|r| r.id() == reg.id());
                if !taken {
                    let done = reg.deregister();
                    tokio::spawn(async move {
                        let _ = tokio::time::timeout(DEREGISTER_DEADLINE, done).await;
                    });
                }
            }
        }
    }

    fn registration(&self, id: JobId) -> Option<&Registration> {
        self.discovery.as_ref().and_then(|d| d.services.get(&id))
    }

    /// Shutdown began: every service leaves the catalog before any job gets
    /// its stop signal, so no client is sent to a stopping instance and no
    /// stale registration outlives a discovery coprocess that stops later.
    async fn deregister_all(&mut self) {
        let Some(d) = &mut self.discovery else { return };
        if d.deregistered {
            return;
        }
        d.deregistered = true;
        // Nothing reacts to watch events any more; an agent coprocess that
        // stops soon must not read as an outage, and a stopping proxy needs
        // no reloads.
        d.watches.clear();
        d.templates = None;
        // All asked at once, then waited for under one deadline.
        let pending: Vec<_> = d
            .services
            .values()
            .chain(d.telemetry.iter())
            .map(Registration::deregister)
            .collect();
        let _ = tokio::time::timeout(DEREGISTER_DEADLINE, async {
            for done in pending {
                let _ = done.await;
            }
        })
        .await;
    }

    /// A sender for signals and control requests.
    pub fn sender(&self) -> mpsc::UnboundedSender<RuntimeInput> {
        self.tx.clone()
    }

    /// Run until every job has stopped; returns the exit status.
    pub async fn run(mut self) -> i32 {
        let effects = self.sup.start(Instant::now());
        self.start_discovery();
        if let Some(code) = self.apply_async(effects).await {
            return code;
        }
        while let Some(input) = self.rx.recv().await {
            let now = Instant::now();
            let effects = match input {
                RuntimeInput::Job(id, input) => {
                    if let Input::Exited { status, .. } = &input {
                        let how = match status {
                            ExitStatus::Code(c) => format!("exited with status {c}"),
                            ExitStatus::Signal(s) => format!("was killed by signal {s}"),
                        };
                        if let Some(job) = self.sup.job(id) {
                            telemetry::record_job_exit(job.name(), status.code());
                            tracing::info!("job {}: its process {how}", job.name());
                        }
                        if let Some(reg) = self.registration(id) {
                            reg.send(RegInput::Exited {
                                output: format!("the process {how}"),
                            });
                        }
                    }
                    self.sup.job_input(id, input, now)
                }
                RuntimeInput::Health { id, ok, output } => {
                    if let Some(reg) = self.registration(id) {
                        reg.send(RegInput::Health { ok, output });
                    }
                    self.sup.job_input(id, Input::HealthResult { ok }, now)
                }
                RuntimeInput::Watch(name, kinds) => {
                    let mut effects = Vec::new();
                    for kind in kinds {
                        effects.extend(
                            self.sup
                                .publish(Event::new(kind, Source::Watch(name.clone())), now),
                        );
                    }
                    effects
                }
                RuntimeInput::Template(n) => self.template_notice(n, now),
                RuntimeInput::ReloadPace(job) => {
                    self.reload_pace(job, now);
                    Vec::new()
                }
                RuntimeInput::TelemetryHeartbeat => {
                    if let Some(reg) = self.discovery.as_ref().and_then(|d| d.telemetry.as_ref()) {
                        reg.send(RegInput::Health {
                            ok: true,
                            output: "ok".into(),
                        });
                        self.after(config::SERVICE_HEARTBEAT, RuntimeInput::TelemetryHeartbeat);
                    }
                    Vec::new()
                }
                RuntimeInput::Signal(sig) => {
                    tracing::info!("received {sig}");
                    self.sup.signal(sig, now)
                }
                RuntimeInput::Control(req) => self.control(req, now),
                RuntimeInput::ShutdownDeadline => {
                    tracing::warn!(
                        "shutdown took longer than stop_timeout ({}); killing what is left",
                        config::duration::format_duration(self.config.stop_timeout)
                    );
                    self.after(Duration::from_secs(2), RuntimeInput::HardDeadline);
                    self.sup.deadline_expired()
                }
                RuntimeInput::HardDeadline => {
                    tracing::error!("processes survived SIGKILL; exiting anyway");
                    return 1;
                }
            };
            if let Some(code) = self.apply_async(effects).await {
                return code;
            }
        }
        1
    }

    /// `apply`, after deregistering every service when these effects begin
    /// the shutdown. Registrations follow the jobs: a job a reload added
    /// gets its registration before its first spawn is carried out (so it
    /// hears `Started`), and one that went away is deregistered after.
    async fn apply_async(&mut self, effects: Vec<Effect>) -> Option<i32> {
        if effects.contains(&Effect::ShutdownStarted) {
            self.deregister_all().await;
        }
        self.sync_registrations();
        let code = self.apply(effects);
        self.sync_registrations();
        code
    }

    fn after(&self, delay: Duration, input: RuntimeInput) {
        let tx = self.tx.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = tx.send(input);
        });
    }

    /// Carry out effects; Some(code) when pilotfish should exit. Spawn results are
    /// fed back at once so the coordinator always knows which jobs are running.
    fn apply(&mut self, effects: Vec<Effect>) -> Option<i32> {
        let mut queue: std::collections::VecDeque<Effect> = effects.into();
        let mut exit = None;
        while let Some(effect) = queue.pop_front() {
            match effect {
                Effect::Published(ev) => {
                    tracing::debug!("event {ev}");
                    metrics::counter!(telemetry::EVENTS, "kind" => ev.kind.as_str(), "source" => ev.source.to_string()).increment(1);
                    if let crate::config::Source::Job(name) = &ev.source {
                        match ev.kind {
                            EventKind::Healthy => {
                                metrics::gauge!(telemetry::JOB_HEALTHY, "job" => name.clone())
                                    .set(1.0)
                            }
                            EventKind::Unhealthy => {
                                metrics::gauge!(telemetry::JOB_HEALTHY, "job" => name.clone())
                                    .set(0.0)
                            }
                            _ => {}
                        }
                    }
                }
                Effect::ShutdownStarted => {
                    tracing::info!("shutting down");
                    self.after(self.config.stop_timeout, RuntimeInput::ShutdownDeadline);
                }
                Effect::Finished { code } => exit = Some(code),
                Effect::Job { id, action } => {
                    let more = self.job_action(id, action);
                    queue.extend(more);
                }
            }
        }
        exit
    }

    fn job_action(&mut self, id: JobId, action: Action) -> Vec<Effect> {
        let Some(job) = self.sup.job(id) else {
            return Vec::new();
        };
        let cfg = Arc::clone(&job.cfg);
        let now = Instant::now();
        match action {
            Action::Spawn => {
                let restart = job.runs() > 0;
                match process::spawn_job(&cfg, &self.overlay) {
                    Ok((pid, exited)) => {
                        tracing::info!("job {} started (pid {pid})", cfg.name);
                        self.spawned.insert(id, now);
                        if let Some(reg) = self.registration(id) {
                            reg.send(RegInput::Started);
                        }
                        metrics::counter!(telemetry::JOB_STARTS, "job" => cfg.name.clone())
                            .increment(1);
                        if restart {
                            metrics::counter!(telemetry::JOB_RESTARTS, "job" => cfg.name.clone())
                                .increment(1);
                        }
                        let tx = self.tx.clone();
                        tokio::spawn(async move {
                            let status = exited.await;
                            let _ = tx.send(RuntimeInput::Job(id, Input::Exited { pid, status }));
                        });
                        self.sup.job_input(id, Input::Spawned { pid }, now)
                    }
                    Err(e) => self.sup.job_input(
                        id,
                        Input::SpawnFailed {
                            error: e.to_string(),
                        },
                        now,
                    ),
                }
            }
            Action::Signal { pid, signal } => {
                tracing::debug!("job {}: {signal} to process group {pid}", cfg.name);
                process::signal_group(pid, signal);
                Vec::new()
            }
            Action::SetTimer {
                kind,
                generation,
                after,
            } => {
                self.after(
                    after,
                    RuntimeInput::Job(id, Input::Timer { kind, generation }),
                );
                Vec::new()
            }
            Action::RunHealthCheck => {
                let tx = self.tx.clone();
                let overlay = self.overlay.clone();
                let timeout = cfg
                    .health
                    .as_ref()
                    .map(|h| h.timeout)
                    .unwrap_or(Duration::from_secs(10));
                tokio::spawn(async move {
                    let (ok, output) = process::run_health_check(&cfg, &overlay, timeout).await;
                    let _ = tx.send(RuntimeInput::Health { id, ok, output });
                });
                Vec::new()
            }
            Action::Log { warn, message } => {
                if warn {
                    tracing::warn!("{message}");
                } else {
                    tracing::info!("{message}");
                }
                Vec::new()
            }
            // The coordinator routes Publish to the bus; it never reaches the shell.
            Action::Publish(_) => Vec::new(),
        }
    }

    fn control(&mut self, req: ControlRequest, now: Instant) -> Vec<Effect> {
        match req {
            ControlRequest::PutEnv { vars, reply } => {
                self.overlay.vars.extend(vars);
                let _ = reply.send(());
                Vec::new()
            }
            ControlRequest::Maintenance { enable, reply } => {
                tracing::info!(
                    "maintenance {}",
                    if enable { "enabled" } else { "disabled" }
                );
                let effects = self.sup.set_maintenance(enable, now);
                if let Some(d) = &self.discovery {
                    for reg in d.services.values() {
                        reg.send(RegInput::Maintenance(enable));
                    }
                }
                let _ = reply.send(());
                effects
            }
            ControlRequest::PutMetric { values, reply } => {
                let _ = reply.send(self.metrics.apply(&values));
                Vec::new()
            }
            ControlRequest::Status { reply } => {
                let _ = reply.send(self.snapshot());
                Vec::new()
            }
            ControlRequest::Reload { reply } => {
                let Some(path) = self.config_path.clone() else {
                    let _ = reply.send(Err(vec![
                        "pilotfish was started without a config file; nothing to reload".into(),
                    ]));
                    return Vec::new();
                };
                match config::load(&path) {
                    Err(e) => {
                        let errors = e.messages();
                        tracing::warn!(
                            "reload refused; every job keeps running:\n{}",
                            errors.join("\n")
                        );
                        let _ = reply.send(Err(errors));
                        Vec::new()
                    }
                    Ok(new) => {
                        let (summary, effects) = self.sup.reload(new.jobs.clone(), now);
                        let client = self.discovery.as_ref().map(|d| d.client.clone());
                        for (k, v) in discovery_env(&new, client.as_ref()) {
                            self.overlay.vars.insert(k, Some(v));
                        }
                        let templates_changed = new.templates != self.config.templates;
                        if new.watches != self.config.watches || new.consul != self.config.consul {
                            tracing::warn!(
                                "watch and [consul] changes take effect at the next start"
                            );
                        }
                        tracing::info!(
                            "reloaded {}: {} unchanged, {} started, {} stopped, {} restarted",
                            path.display(),
                            summary.unchanged.len(),
                            summary.started.len(),
                            summary.stopped.len(),
                            summary.restarted.len()
                        );
                        let defs = new
                            .telemetry
                            .as_ref()
                            .map(|t| t.metrics.clone())
                            .unwrap_or_default();
                        self.metrics = UserMetrics::new(&defs);
                        (self.on_reload)(&new);
                        if new.control != self.config.control
                            || new.telemetry != self.config.telemetry
                        {
                            tracing::warn!("control and telemetry listener changes take effect at the next start");
                        }
                        self.config = new;
                        if templates_changed
                            && self.discovery.as_ref().is_some_and(|d| !d.deregistered)
                        {
                            tracing::info!("templates changed; rendering them anew");
                            self.start_templates();
                        }
                        let _ = reply.send(Ok(summary));
                        effects
                    }
                }
            }
        }
    }

    fn snapshot(&self) -> StatusSnapshot {
        StatusSnapshot {
            version: crate::VERSION.to_string(),
            maintenance: self.sup.maintenance(),
            jobs: self.sup.status(),
            services: self
                .discovery
                .iter()
                .flat_map(|d| d.services.values().chain(d.telemetry.iter()))
                .map(Registration::status)
                .collect(),
            watches: self
                .discovery
                .iter()
                .flat_map(|d| d.watches.iter())
                .map(Watch::status)
                .collect(),
            templates: self
                .discovery
                .iter()
                .flat_map(|d| d.templates.iter())
                .flat_map(TemplateSet::status)
                .collect(),
        }
    }
}
