//! Wiring and the one written-down startup and shutdown order.
//!
//! Startup: signal handlers → control socket → telemetry listener → jobs
//! (`startup` event). Shutdown (SIGTERM/SIGINT, the primary job ending, or every
//! job completing): the supervisor runs preStop hooks, stops jobs in reverse
//! dependency order (each: stop signal, its grace, SIGKILL), runs postStop hooks,
//! all under the top-level `stop_timeout`, after which every remaining process
//! group is killed. Then the control and telemetry listeners stop and `run`
//! returns the exit status for `main`.

use std::path::PathBuf;
use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::control::{self, ControlRequest};
use crate::supervisor::runtime::{Runtime, RuntimeInput};
use crate::telemetry;

/// Signals the worker handles itself: shutdown, the signal events users can
/// name in `when`, and whatever a job asks to have forwarded.
fn handled_signals(config: &Config) -> Vec<Signal> {
    let mut sigs = vec![
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
        Signal::SIGQUIT,
        Signal::SIGUSR1,
        Signal::SIGUSR2,
        Signal::SIGWINCH,
    ];
    for job in &config.jobs {
        for s in &job.forward_signals {
            if !sigs.contains(s) {
                sigs.push(*s);
            }
        }
    }
    sigs
}

/// Run the supervisor until it finishes; returns the process exit status.
pub async fn run(
    config: Config,
    config_path: Option<PathBuf>,
    on_reload: Box<dyn Fn(&Config) + Send>,
) -> i32 {
    let shutdown = CancellationToken::new();
    let tasks = TaskTracker::new();
    let runtime = match Runtime::new(config.clone(), config_path, on_reload) {
        Ok(r) => r,
        Err(e) => {
            tracing::error!("{e}");
            return i32::from(crate::config::EXIT_CONFIG);
        }
    };
    let tx = runtime.sender();

    for sig in handled_signals(&config) {
        match tokio::signal::unix::signal((sig as i32).into()) {
            Ok(mut stream) => {
                let tx = tx.clone();
                let shutdown = shutdown.clone();
                tasks.spawn(async move {
                    loop {
                        tokio::select! {
                            _ = shutdown.cancelled() => break,
                            got = stream.recv() => {
                                if got.is_none() || tx.send(RuntimeInput::Signal(sig)).is_err() {
                                    break;
                                }
                            }
                        }
                    }
                });
            }
            Err(e) => tracing::warn!("cannot handle {sig}: {e}"),
        }
    }

    let (req_tx, mut req_rx) = mpsc::channel::<ControlRequest>(64);
    {
        let tx = tx.clone();
        tasks.spawn(async move {
            while let Some(req) = req_rx.recv().await {
                if tx.send(RuntimeInput::Control(req)).is_err() {
                    break;
                }
            }
        });
    }

    let socket = config.control.socket.clone();
    match control::server::bind(&socket) {
        Ok(listener) => {
            tasks.spawn(control::server::serve(listener, socket.clone(), req_tx.clone(), shutdown.clone()));
        }
        // The jobs matter more than the control plane: keep supervising.
        Err(e) => tracing::error!(
            "control socket {} unavailable ({e}); running without the control plane (set control.socket to a writable path)",
            socket.display()
        ),
    }

    if let Some(t) = &config.telemetry {
        let handle = telemetry::install_recorder(&t.metrics);
        match crate::interfaces::resolve(&t.interfaces) {
            Ok(ip) => match tokio::net::TcpListener::bind((ip, t.port)).await {
                Ok(listener) => {
                    tasks.spawn(telemetry::serve(
                        listener,
                        handle,
                        req_tx.clone(),
                        shutdown.clone(),
                    ));
                }
                Err(e) => tracing::error!("telemetry: cannot listen on {ip}:{}: {e}", t.port),
            },
            Err(e) => tracing::error!("telemetry: {e}"),
        }
    }
    drop(req_tx);

    let code = runtime.run().await;
    shutdown.cancel();
    tasks.close();
    // Listeners stop promptly; never let them hold the exit hostage.
    let _ = tokio::time::timeout(Duration::from_millis(500), tasks.wait()).await;
    code
}

/// `pilotfish template`: the `[[templates]]` of a config without the
/// supervisor. `once` returns when every template went in (0) or one failed
/// (1); otherwise it runs until SIGINT or SIGTERM. A `reload.job` has no
/// job to signal here and is skipped with a warning.
pub async fn run_templates(config: Config, mode: crate::template::Mode) -> i32 {
    use crate::template::{Notice, TemplateSet};
    if config.templates.is_empty() {
        tracing::error!("the config has no [[templates]]");
        return i32::from(crate::config::EXIT_CONFIG);
    }
    let client = match crate::supervisor::runtime::discovery_client(&config) {
        Ok(Some(c)) => c,
        // discovery_client always makes one when there are templates.
        Ok(None) => return i32::from(crate::config::EXIT_CONFIG),
        Err(e) => {
            tracing::error!("{e}");
            return i32::from(crate::config::EXIT_CONFIG);
        }
    };
    let (tx, mut rx) = mpsc::unbounded_channel();
    let set = TemplateSet::spawn(config.templates, client, mode, tx);
    tokio::spawn(async move {
        while let Some(n) = rx.recv().await {
            if let Notice::Signal { job, signal, .. } = n {
                tracing::warn!(
                    "reload = {{ job = \"{job}\" }} needs the supervisor (pilotfish run); {signal} not sent"
                );
            }
        }
    });
    if mode.once {
        return if set.finished().await { 0 } else { 1 };
    }
    let stop = async {
        let (Ok(mut term), Ok(mut int)) = (
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()),
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt()),
        ) else {
            return std::future::pending().await;
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    };
    tokio::select! {
        ok = set.finished() => i32::from(!ok),
        () = stop => 0,
    }
}
