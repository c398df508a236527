//! The PID-1 keeper. When pilotfish is PID 1 it stays a tiny synchronous process
//! that forks the worker (which goes on to do the real work), forwards every
//! catchable signal to it, reaps every process that is re-parented to it, and
//! exits with the worker's status (128+N if the worker died of signal N).
//!
//! Why two processes: a global `waitpid(-1)` in the process that also waits on its
//! own children through tokio steals their exit statuses (measured: up to 49 of
//! 300 `wait()` calls failed with ECHILD). Here only the keeper calls
//! `waitpid(-1)`, and the worker's children are never its children: they are the
//! worker's, so only the worker waits for them. Orphans re-parent to PID 1, the
//! keeper. This runs before any thread or runtime exists.

use nix::errno::Errno;
use nix::sys::signal::{kill, SigSet, SigmaskHow, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{ForkResult, Pid};
use signal_hook::iterator::Signals;

use crate::signals::FORWARDED;

pub fn is_pid1() -> bool {
    std::process::id() == 1
}

/// Split into keeper and worker. Returns `Some(status)` in the keeper, once the
/// worker has exited; returns `None` in the worker, which carries on as a normal
/// `pilotfish` process.
///
/// The worker is a `fork()` of this process rather than a re-exec: no second
/// program load, and the keeper's pages stay shared with the worker. Signals are
/// blocked across the fork so one that arrives meanwhile stays pending and is
/// forwarded once the keeper's handlers are in place, never lost.
pub fn keep() -> Option<i32> {
    let mut set = SigSet::empty();
    for s in FORWARDED.iter().chain(std::iter::once(&Signal::SIGCHLD)) {
        set.add(*s);
    }
    let mut old = SigSet::empty();
    if let Err(e) = nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&set), Some(&mut old))
    {
        eprintln!("pilotfish: cannot block signals as PID 1: {e}");
        return Some(1);
    }
    let worker = match fork_worker() {
        Ok(ForkResult::Child) => {
            let _ = nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&old), None);
            return None;
        }
        Ok(ForkResult::Parent { child }) => child,
        Err(e) => {
            eprintln!("pilotfish: cannot start the worker: {e}");
            return Some(1);
        }
    };
    let wanted = FORWARDED
        .iter()
        .map(|s| *s as i32)
        .chain(std::iter::once(Signal::SIGCHLD as i32));
    let mut signals = match Signals::new(wanted) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("pilotfish: cannot install signal handlers as PID 1: {e}");
            let _ = kill(worker, Signal::SIGKILL);
            return Some(1);
        }
    };
    let _ = nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&old), None);
    loop {
        for sig in signals.wait() {
            if sig == Signal::SIGCHLD as i32 {
                if let Some(code) = reap(worker) {
                    return Some(code);
                }
            } else if let Ok(s) = Signal::try_from(sig) {
                // The worker may already be gone; its exit arrives as SIGCHLD.
                let _ = kill(worker, s);
            }
        }
    }
}

#[allow(unsafe_code)]
fn fork_worker() -> nix::Result<ForkResult> {
    // SAFETY: called first thing in `main`, before any thread, runtime or lock
    // exists, so the child is a complete copy with nothing half-held; the child
    // returns straight into ordinary single-threaded start-up.
    unsafe { nix::unistd::fork() }
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
