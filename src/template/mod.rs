//! The template watcher: `[[templates]]` rendered from the catalog and KV
//! (consul-template's job, inside the supervisor or standalone as
//! `pilotfish template`).
//!
//! One task owns everything (`run`): the handlebars `Engine`, the `Brain` of
//! dependency data, the pure `Schedule` (which templates a change dirties,
//! quiescence) and one `DepWatch` per distinct query. A batch renders every
//! due template, writes each changed one as a candidate beside its
//! destination, runs its `check`, installs it atomically, and only then fires
//! each distinct reload action once. A failure at any step keeps the last
//! good file and is reported (log, `/v3/status`, telemetry). In reload-free
//! mode (`haproxy.socket`) a change that only moves servers is applied over
//! HAProxy's Runtime API instead of a reload.

pub mod deps;
pub mod haproxy;
pub mod helpers;
pub mod install;
pub mod watch;

use std::collections::{BTreeMap, HashMap};
use std::process::Stdio;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use nix::sys::signal::Signal;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::config::{Reload, TemplateConfig};
use crate::control::TemplateStatus;
use crate::discovery::client::Client;
use crate::telemetry;
use deps::{Dep, Schedule};
use helpers::{Brain, Engine};
use watch::{DepWatch, Update};

pub use helpers::check_syntax;

/// What the watcher tells its owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// A template's file is in place: `first` the first time (the job
    /// event `rendered`), else it changed (`changed`).
    Installed { template: String, first: bool },
    /// Send `signal` to the main process of supervised job `job`, unless
    /// that process started after `installed` (it read the new file).
    Signal {
        job: String,
        signal: Signal,
        installed: Instant,
    },
}

/// How the watcher runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Mode {
    /// Render once every query has answered, then return.
    pub once: bool,
    /// Print what would be written instead of writing; run no commands.
    pub dry: bool,
}

/// The running watcher's shared status.
#[derive(Default)]
struct Shared {
    templates: Vec<TemplateStatus>,
    /// Each template's queries' states, for `stale_since`.
    deps: Vec<Vec<Arc<Mutex<watch::WatchState>>>>,
}

/// A handle on the watcher task; dropping it stops the watcher.
pub struct TemplateSet {
    shared: Arc<Mutex<Shared>>,
    task: tokio::task::JoinHandle<bool>,
}

impl Drop for TemplateSet {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TemplateSet {
    /// Start watching and rendering. Notices go to `out`.
    pub fn spawn(
        templates: Vec<TemplateConfig>,
        client: Client,
        mode: Mode,
        out: mpsc::UnboundedSender<Notice>,
    ) -> TemplateSet {
        let shared = Arc::new(Mutex::new(Shared::default()));
        let task = tokio::spawn(run(templates, client, mode, out, Arc::clone(&shared)));
        TemplateSet { shared, task }
    }

    /// Wait for a `once` run to end: true when every template went in.
    pub async fn finished(mut self) -> bool {
        (&mut self.task).await.unwrap_or(false)
    }

    pub fn status(&self) -> Vec<TemplateStatus> {
        let s = self.shared.lock().unwrap_or_else(PoisonError::into_inner);
        let mut out = s.templates.clone();
        for (t, deps) in out.iter_mut().zip(&s.deps) {
            let since = deps
                .iter()
                .filter_map(|d| d.lock().unwrap_or_else(PoisonError::into_inner).stale_since)
                .min();
            t.stale_since = since.map(unix);
            if t.stale_since.is_some() && t.state == "ok" {
                t.state = "stale".into();
            }
        }
        out
    }
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// One template's runtime state.
struct Tpl {
    cfg: TemplateConfig,
    /// A render with complete data went through (installed, unchanged or refused).
    handled: bool,
    /// `rendered` was announced: its file is in place.
    announced: bool,
}

struct Watcher {
    tpls: Vec<Tpl>,
    engine: Engine,
    brain: Arc<Brain>,
    schedule: Schedule,
    watches: HashMap<Dep, DepWatch>,
    client: Client,
    updates: mpsc::UnboundedSender<Update>,
    out: mpsc::UnboundedSender<Notice>,
    shared: Arc<Mutex<Shared>>,
    mode: Mode,
    warned_many: bool,
    /// Open blocking queries, bounded for the whole set.
    slots: watch::Slots,
    failed: bool,
}

async fn run(
    templates: Vec<TemplateConfig>,
    client: Client,
    mode: Mode,
    out: mpsc::UnboundedSender<Notice>,
    shared: Arc<Mutex<Shared>>,
) -> bool {
    let mut engine = Engine::new();
    for t in &templates {
        // Parsed once already when the config loaded.
        if let Err(e) = engine.add(&t.name, &t.text) {
            tracing::error!("template {}: {e}", t.name);
            return false;
        }
    }
    {
        let mut s = shared.lock().unwrap_or_else(PoisonError::into_inner);
        s.templates = templates
            .iter()
            .map(|t| TemplateStatus {
                name: t.name.clone(),
                destination: t.destination.display().to_string(),
                state: "waiting".into(),
                ..TemplateStatus::default()
            })
            .collect();
        s.deps = vec![Vec::new(); templates.len()];
    }
    let (utx, mut urx) = mpsc::unbounded_channel();
    let mut w = Watcher {
        schedule: Schedule::new(
            templates
                .iter()
                .map(|t| if mode.once { None } else { t.wait }),
        ),
        tpls: templates
            .into_iter()
            .map(|cfg| Tpl {
                cfg,
                handled: false,
                announced: false,
            })
            .collect(),
        engine,
        brain: Arc::default(),
        watches: HashMap::new(),
        client,
        updates: utx,
        out,
        shared,
        mode,
        warned_many: false,
        slots: watch::Slots::default(),
        failed: false,
    };
    loop {
        let due = w.schedule.due(Instant::now());
        if !due.is_empty() {
            w.batch(due).await;
        }
        if mode.once && w.tpls.iter().all(|t| t.handled) {
            return !w.failed;
        }
        let timer = w.schedule.next_timer();
        tokio::select! {
            u = urx.recv() => {
                let Some(first) = u else { return !w.failed };
                let now = Instant::now();
                w.update(first, now);
                // Everything already queued joins this batch.
                while let Ok(u) = urx.try_recv() {
                    w.update(u, now);
                }
            }
            () = sleep_until(timer) => {}
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The outcome of one template in a batch.
enum Step {
    /// Not all of its queries have answered.
    Incomplete,
    /// Failed at `stage`; the last good file stays.
    Failed { stage: &'static str, error: String },
    /// The file already holds this render.
    Unchanged,
    /// Installed; `reload` false when applied without one (Runtime API).
    Installed { reload: bool },
}

impl Watcher {
    fn update(&mut self, (dep, value): Update, now: Instant) {
        Arc::make_mut(&mut self.brain).insert(dep.clone(), value);
        self.schedule.changed(&dep, now);
    }

    /// Render, check and install every due template, then fire each
    /// distinct reload action once.
    async fn batch(&mut self, due: Vec<usize>) {
        let mut reloads: Vec<(Reload, String)> = Vec::new();
        let mut installed_at = Instant::now();
        for t in due {
            let step = self.step(t).await;
            let name = self.tpls[t].cfg.name.clone();
            let installed = match step {
                Step::Incomplete => continue,
                Step::Failed { stage, error } => {
                    self.failed = true;
                    tracing::error!(
                        "template {name}: {error}; {} keeps its last good contents",
                        self.tpls[t].cfg.destination.display()
                    );
                    metrics::counter!(telemetry::TEMPLATE_ERRORS, "template" => name.clone(), "stage" => stage)
                        .increment(1);
                    self.set_status(t, |s| {
                        s.state = "failed".into();
                        s.last_error = Some(format!("{stage}: {error}"));
                    });
                    // Quiescence applies to the next attempt as to any change.
                    self.schedule.rendered(t);
                    self.tpls[t].handled = true;
                    continue;
                }
                Step::Unchanged => false,
                Step::Installed { reload } => {
                    installed_at = Instant::now();
                    if let (true, Some(r)) = (reload, &self.tpls[t].cfg.reload) {
                        if !reloads.iter().any(|(x, _)| x == r) {
                            reloads.push((r.clone(), name.clone()));
                        }
                    }
                    true
                }
            };
            self.schedule.rendered(t);
            self.tpls[t].handled = true;
            self.set_status(t, |s| {
                s.state = "ok".into();
                s.last_error = None;
                s.renders += 1;
            });
            let first = !self.tpls[t].announced;
            self.tpls[t].announced = true;
            if installed || first {
                let _ = self.out.send(Notice::Installed {
                    template: name,
                    first,
                });
            }
        }
        self.sync_watches();
        if self.mode.dry {
            return;
        }
        for (r, name) in reloads {
            self.fire(&r, &name, installed_at).await;
        }
    }

    fn set_status(&self, t: usize, f: impl FnOnce(&mut TemplateStatus)) {
        let mut s = self.shared.lock().unwrap_or_else(PoisonError::into_inner);
        f(&mut s.templates[t]);
    }

    /// Start a watch for every query some template reads, stop the rest.
    fn sync_watches(&mut self) {
        let wanted = self.schedule.all_deps();
        self.slots.set_watched(wanted.len());
        self.watches.retain(|d, _| wanted.contains(d));
        for d in &wanted {
            if !self.watches.contains_key(d) {
                self.watches.insert(
                    d.clone(),
                    DepWatch::spawn(
                        d.clone(),
                        self.client.clone(),
                        self.slots.clone(),
                        self.updates.clone(),
                    ),
                );
            }
        }
        if wanted.len() > watch::MAX_LONG_POLLS && !self.warned_many {
            self.warned_many = true;
            tracing::warn!(
                "templates read {} distinct Consul queries, more than the {} held open at once: each is asked again every few seconds instead of answered at once; prefer fewer, broader ones",
                wanted.len(),
                watch::MAX_LONG_POLLS
            );
        }
        metrics::gauge!(telemetry::TEMPLATE_QUERIES).set(wanted.len() as f64);
        let mut s = self.shared.lock().unwrap_or_else(PoisonError::into_inner);
        let Shared { templates, deps } = &mut *s;
        for (t, (status, tpl_deps)) in templates.iter_mut().zip(deps.iter_mut()).enumerate() {
            let mine = self.schedule.deps(t);
            *tpl_deps = mine
                .iter()
                .filter_map(|d| self.watches.get(d).map(|w| Arc::clone(&w.state)))
                .collect();
            status.queries = mine.len();
        }
    }

    async fn step(&mut self, t: usize) -> Step {
        let cfg = self.tpls[t].cfg.clone();
        let r = self.engine.render(&cfg.name, &self.brain);
        self.schedule.set_deps(t, r.deps.clone());
        if !r.missing.is_empty() {
            // The watches started below answer, and their answers dirty it
            // again. An error now may be the missing data's fault.
            return Step::Incomplete;
        }
        let text = match r.text {
            Ok(t) => t,
            Err(error) => {
                return Step::Failed {
                    stage: "render",
                    error,
                }
            }
        };
        if let Err(error) = guard(&cfg.min_instances, &r.counts) {
            return Step::Failed {
                stage: "guard",
                error,
            };
        }
        let old = match install::current(&cfg.destination) {
            Ok(o) => o,
            Err(e) => {
                return Step::Failed {
                    stage: "install",
                    error: e.to_string(),
                }
            }
        };
        if old.as_deref() == Some(text.as_bytes()) {
            return Step::Unchanged;
        }
        if self.mode.dry {
            println!("> {}\n{}", cfg.destination.display(), text);
            return Step::Installed { reload: false };
        }
        let opts = install::Options {
            perms: cfg.perms,
            backup: cfg.backup,
            create_dest_dirs: cfg.create_dest_dirs,
        };
        let cand = match install::write_candidate(&cfg.destination, text.as_bytes(), &opts) {
            Ok(c) => c,
            Err(e) => {
                return Step::Failed {
                    stage: "install",
                    error: e.to_string(),
                }
            }
        };
        if let Some(check) = &cfg.check {
            let path = cand.path().display().to_string();
            let argv: Vec<String> = check
                .iter()
                .map(|a| a.replace("{candidate}", &path))
                .collect();
            if let Err(error) = run_command(&argv, cfg.check_timeout).await {
                return Step::Failed {
                    stage: "check",
                    error: format!("the check refused the new file: {error}"),
                };
            }
        }
        // Reload-free mode: servers that only moved go in over the Runtime API.
        let mut reload = true;
        if let (Some(socket), Some(old)) = (&cfg.haproxy_socket, &old) {
            let old = String::from_utf8_lossy(old);
            match haproxy::diff(&old, &text) {
                // Only comments or spacing differ: HAProxy reads the same config.
                Ok(cmds) if cmds.is_empty() => reload = false,
                Ok(cmds) => match haproxy::apply(socket, &cmds).await {
                    Ok(()) => {
                        reload = false;
                        metrics::counter!(telemetry::TEMPLATE_RELOADS, "template" => cfg.name.clone(), "how" => "runtime_api").increment(1);
                        tracing::info!(
                            "template {}: {} Runtime API command{} applied the server changes, no reload",
                            cfg.name,
                            cmds.len(),
                            if cmds.len() == 1 { "" } else { "s" }
                        );
                    }
                    Err(e) => tracing::warn!(
                        "template {}: the Runtime API refused the server changes ({e}); reloading instead",
                        cfg.name
                    ),
                },
                Err(why) => tracing::info!("template {}: reloading: {why}", cfg.name),
            }
        }
        match install::install(cand, &cfg.destination, &opts) {
            Ok(how) => {
                if how == install::Installed::InPlace {
                    tracing::info!(
                        "template {}: {} could not be replaced by rename (a bind mount?); rewrote it in place",
                        cfg.name,
                        cfg.destination.display()
                    );
                }
                metrics::counter!(telemetry::TEMPLATE_INSTALLS, "template" => cfg.name.clone())
                    .increment(1);
                tracing::info!(
                    "template {}: installed {}",
                    cfg.name,
                    cfg.destination.display()
                );
                self.set_status(t, |s| {
                    s.installs += 1;
                    s.last_install = Some(unix(SystemTime::now()));
                });
                Step::Installed { reload }
            }
            Err(e) => Step::Failed {
                stage: "install",
                error: e.to_string(),
            },
        }
    }

    async fn fire(&mut self, r: &Reload, template: &str, installed: Instant) {
        match r {
            Reload::Job { job, signal } => {
                metrics::counter!(telemetry::TEMPLATE_RELOADS, "template" => template.to_string(), "how" => "signal").increment(1);
                let _ = self.out.send(Notice::Signal {
                    job: job.clone(),
                    signal: *signal,
                    installed,
                });
            }
            Reload::Exec { argv, timeout } => {
                metrics::counter!(telemetry::TEMPLATE_RELOADS, "template" => template.to_string(), "how" => "exec").increment(1);
                if let Err(e) = run_command(argv, *timeout).await {
                    self.failed = true;
                    metrics::counter!(telemetry::TEMPLATE_ERRORS, "template" => template.to_string(), "stage" => "reload").increment(1);
                    tracing::error!("template {template}: the reload command failed: {e}");
                    if let Some(i) = self.tpls.iter().position(|t| t.cfg.name == template) {
                        self.set_status(i, |s| s.last_error = Some(format!("reload: {e}")));
                    }
                }
            }
        }
    }
}

/// `min_instances`: refuse a render that would leave a service with fewer
/// instances than its floor (an empty catalog during an incident must not
/// empty a load balancer).
fn guard(floors: &BTreeMap<String, usize>, counts: &BTreeMap<String, usize>) -> Result<(), String> {
    let mut low = Vec::new();
    for (svc, &min) in floors {
        match counts.get(svc) {
            Some(&n) if n >= min => {}
            Some(&n) => low.push(format!(
                "service {svc} has {n} instance(s), min_instances is {min}"
            )),
            None => low.push(format!(
                "the template never reads service {svc} (min_instances names it); check the name"
            )),
        }
    }
    if low.is_empty() {
        Ok(())
    } else {
        Err(format!("refused the render: {}", low.join("; ")))
    }
}

/// Run a command in its own process group under a timeout; Err carries the
/// exit status and what it printed.
async fn run_command(argv: &[String], timeout: Duration) -> Result<(), String> {
    let Some((prog, args)) = argv.split_first() else {
        return Err("empty command".into());
    };
    let child = tokio::process::Command::new(prog)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot run {prog}: {e}"))?;
    let pid = child.id();
    match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Ok(Ok(out)) if out.status.success() => Ok(()),
        Ok(Ok(out)) => {
            let mut text = String::from_utf8_lossy(&out.stderr).trim().to_string();
            let stdout = String::from_utf8_lossy(&out.stdout).trim().to_string();
            if !stdout.is_empty() {
                if !text.is_empty() {
                    text.push('\n');
                }
                text.push_str(&stdout);
            }
            let status = match out.status.code() {
                Some(c) => format!("exit status {c}"),
                None => "killed by a signal".to_string(),
            };
            Err(if text.is_empty() {
                format!("{} ended with {status}", argv.join(" "))
            } else {
                format!("{} ended with {status}: {text}", argv.join(" "))
            })
        }
        Ok(Err(e)) => Err(format!("waiting for {prog}: {e}")),
        Err(_) => {
            if let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()) {
                let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL);
            }
            Err(format!(
                "{} did not finish within {}; killed it",
                argv.join(" "),
                crate::config::duration::format_duration(timeout)
            ))
        }
    }
}
