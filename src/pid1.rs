//! The PID-1 keeper. When pilotfish is PID 1 it stays a tiny synchronous process
//! that starts a copy of itself (same argv) as the worker, forwards every
//! catchable signal to it, reaps every process that is re-parented to it, and
//! exits with the worker's status (128+N if the worker died of signal N).
//!
//! Why two processes: a global `waitpid(-1)` in the process that also waits on its
//! own children through tokio steals their exit statuses (measured: up to 49 of
//! 300 `wait()` calls failed with ECHILD). Here only the keeper calls
//! `waitpid(-1)`, and the worker's children are never its children: they are the
//! worker's, so only the worker waits for them. Orphans re-parent to PID 1, the
//! keeper. This runs before any thread or runtime exists.

use std::process::Command;

use nix::errno::Errno;
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use signal_hook::iterator::Signals;

use crate::signals::FORWARDED;

pub fn is_pid1() -> bool {
    std::process::id() == 1
}

/// Run as the keeper; returns the worker's exit status.
pub fn keep() -> i32 {
    // Handlers first, so a signal that arrives while the worker starts is queued
    // and forwarded, never lost.
    let wanted = FORWARDED
        .iter()
        .map(|s| *s as i32)
        .chain(std::iter::once(Signal::SIGCHLD as i32));
    let mut signals = match Signals::new(wanted) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("pilotfish: cannot install signal handlers as PID 1: {e}");
            return 1;
        }
    };
    let exe = std::env::current_exe().unwrap_or_else(|_| "/proc/self/exe".into());
    let worker = match Command::new(&exe).args(std::env::args_os().skip(1)).spawn() {
        Ok(child) => child.id(),
        Err(e) => {
            eprintln!("pilotfish: cannot start the worker {}: {e}", exe.display());
            return 1;
        }
    };
    let Ok(worker) = i32::try_from(worker).map(Pid::from_raw) else {
        return 1;
    };
    loop {
        for sig in signals.wait() {
            if sig == Signal::SIGCHLD as i32 {
                if let Some(code) = reap(worker) {
                    return code;
                }
            } else if let Ok(s) = Signal::try_from(sig) {
                // The worker may already be gone; its exit arrives as SIGCHLD.
                let _ = kill(worker, s);
            }
        }
    }
}

/// Reap every exited child; Some(status) once the worker is among them.
fn reap(worker: Pid) -> Option<i32> {
    let mut worker_status = None;
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, code)) if pid == worker => worker_status = Some(code),
            Ok(WaitStatus::Signaled(pid, sig, _)) if pid == worker => {
                worker_status = Some(128 + sig as i32)
            }
            Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => break,
            Ok(_) => continue,
            Err(Errno::EINTR) => continue,
            Err(_) => break,
        }
    }
    worker_status
}
