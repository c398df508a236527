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

use super::job::{Action, Input};
use super::process::{self, EnvOverlay};
use super::{Effect, JobId, Supervisor};
use crate::config::{self, Config};
use crate::control::{ControlRequest, StatusSnapshot};
use crate::events::EventKind;
use crate::telemetry::{self, UserMetrics};

/// Everything the loop reacts to.
#[derive(Debug)]
pub enum RuntimeInput {
    Job(JobId, Input),
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
}

impl Runtime {
    pub fn new(
        config: Config,
        config_path: Option<PathBuf>,
        on_reload: Box<dyn Fn(&Config) + Send>,
    ) -> Runtime {
        let (tx, rx) = mpsc::unbounded_channel();
        let seed = u64::from(std::process::id()) ^ 0x5851_F42D_4C95_7F2D;
        let defs = config
            .telemetry
            .as_ref()
            .map(|t| t.metrics.clone())
            .unwrap_or_default();
        Runtime {
            sup: Supervisor::new(config.jobs.clone(), seed),
            config,
            config_path,
            overlay: EnvOverlay::default(),
            metrics: UserMetrics::new(&defs),
            tx,
            rx,
            on_reload,
        }
    }

    /// A sender for signals and control requests.
    pub fn sender(&self) -> mpsc::UnboundedSender<RuntimeInput> {
        self.tx.clone()
    }

    /// Run until every job has stopped; returns the exit status.
    pub async fn run(mut self) -> i32 {
        let effects = self.sup.start(Instant::now());
        if let Some(code) = self.apply(effects) {
            return code;
        }
        while let Some(input) = self.rx.recv().await {
            let now = Instant::now();
            let effects = match input {
                RuntimeInput::Job(id, input) => {
                    if let Input::Exited { status, .. } = &input {
                        if let Some(job) = self.sup.job(id) {
                            telemetry::record_job_exit(job.name(), status.code());
                        }
                    }
                    self.sup.job_input(id, input, now)
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
            if let Some(code) = self.apply(effects) {
                return code;
            }
        }
        1
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
                    let ok = process::run_health_check(&cfg, &overlay, timeout).await;
                    let _ = tx.send(RuntimeInput::Job(id, Input::HealthResult { ok }));
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
            watches: self.config.watches.iter().map(|w| w.name.clone()).collect(),
        }
    }
}
