//! Processes: spawn a job's command in its own process group with its
//! environment, user and working directory; relay its output line by line with a
//! `job[pid]` prefix (or hand it the real stdout/stderr when `logging.raw`); report
//! its exit; signal its whole group; run a health check under a timeout.
//!
//! The worker only ever waits on its own children (through tokio). Orphans are
//! reaped by the PID-1 keeper in another process (`pid1`), so no exit status is
//! ever stolen.

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};

use super::job::ExitStatus;
use crate::config::{Exec, JobConfig};

/// Environment changes made at run time through `/v3/environ`.
#[derive(Debug, Clone, Default)]
pub struct EnvOverlay {
    pub vars: BTreeMap<String, Option<String>>,
}

fn command(exec: &Exec, job: &JobConfig, overlay: &EnvOverlay) -> Command {
    let mut cmd = Command::new(&exec.argv[0]);
    cmd.args(&exec.argv[1..]);
    for (k, v) in &overlay.vars {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    cmd.envs(&job.env);
    cmd.env("PILOTFISH_PID", std::process::id().to_string());
    if let Some(dir) = &job.working_dir {
        cmd.current_dir(dir);
    }
    if let Some(gid) = job.group {
        cmd.gid(gid.as_raw());
    }
    if let Some(uid) = job.user {
        cmd.uid(uid.as_raw());
    }
    // Own process group: stop and timeout signals reach the whole subtree, and a
    // terminal's Ctrl-C reaches pilotfish, which decides what the jobs get.
    cmd.process_group(0);
    cmd.stdin(Stdio::null());
    cmd.kill_on_drop(false);
    cmd
}

fn convert(status: std::process::ExitStatus) -> ExitStatus {
    match (status.code(), status.signal()) {
        (Some(c), _) => ExitStatus::Code(c),
        (None, Some(s)) => ExitStatus::Signal(s),
        (None, None) => ExitStatus::Code(1),
    }
}

/// Start a job's process. The returned future resolves with its exit status.
pub fn spawn_job(
    job: &JobConfig,
    overlay: &EnvOverlay,
) -> std::io::Result<(u32, impl std::future::Future<Output = ExitStatus>)> {
    let exec = job
        .exec
        .as_ref()
        .ok_or_else(|| std::io::Error::other("job has no exec"))?;
    let mut cmd = command(exec, job, overlay);
    if job.raw_logging {
        cmd.stdout(Stdio::inherit()).stderr(Stdio::inherit());
    } else {
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    }
    let mut child = cmd.spawn()?;
    let pid = child.id().unwrap_or(0);
    relay_output(&mut child, &job.name, pid);
    Ok((pid, async move { wait(child).await }))
}

async fn wait(mut child: Child) -> ExitStatus {
    match child.wait().await {
        Ok(s) => convert(s),
        Err(e) => {
            tracing::error!("waiting for pid {:?}: {e}", child.id());
            ExitStatus::Code(1)
        }
    }
}

fn relay_output(child: &mut Child, name: &str, pid: u32) {
    if let Some(out) = child.stdout.take() {
        tokio::spawn(relay_lines(out, format!("{name}[{pid}]"), false));
    }
    if let Some(err) = child.stderr.take() {
        tokio::spawn(relay_lines(err, format!("{name}[{pid}]"), true));
    }
}

async fn relay_lines(stream: impl AsyncRead + Unpin, prefix: String, stderr: bool) {
    let mut lines = BufReader::new(stream).lines();
    loop {
        match lines.next_line().await {
            Ok(Some(line)) => {
                if stderr {
                    tracing::warn!(target: "job", "{prefix} {line}");
                } else {
                    tracing::info!(target: "job", "{prefix} {line}");
                }
            }
            Ok(None) => break,
            // Not UTF-8 or a read error: keep going with the rest of the stream.
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => continue,
            Err(_) => break,
        }
    }
}

/// Signal a job's whole process group. A group that is already gone is not an error.
pub fn signal_group(pid: u32, signal: Signal) {
    let Ok(raw) = i32::try_from(pid) else { return };
    if raw <= 1 {
        return;
    }
    match killpg(Pid::from_raw(raw), signal) {
        Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
        Err(e) => tracing::warn!("signalling process group {pid} with {signal}: {e}"),
    }
}

/// Run a job's health check: true when it exits 0 within `timeout`. On timeout
/// its whole process group is killed and the check counts as failed.
pub async fn run_health_check(job: &JobConfig, overlay: &EnvOverlay, timeout: Duration) -> bool {
    let Some(exec) = job.health.as_ref().and_then(|h| h.exec.as_ref()) else {
        return true;
    };
    let mut cmd = command(exec, job, overlay);
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!("job {}: health check cannot start: {e}", job.name);
            return false;
        }
    };
    let pid = child.id().unwrap_or(0);
    relay_output(&mut child, &format!("check.{}", job.name), pid);
    match tokio::time::timeout(timeout, child.wait()).await {
        Ok(Ok(status)) => status.success(),
        Ok(Err(_)) => false,
        Err(_) => {
            tracing::warn!(
                "job {}: health check timed out after {}; killing it",
                job.name,
                crate::config::duration::format_duration(timeout)
            );
            signal_group(pid, Signal::SIGKILL);
            let _ = child.wait().await;
            false
        }
    }
}
