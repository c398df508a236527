//! Processes: spawn a job's command in its own process group with its
//! environment, user and working directory; relay its output line by line with a
//! `job[pid]` prefix (or hand it the real stdout/stderr when `logging.raw`), in
//! pieces of at most `MAX_LINE` bytes and decoded lossily, so no output costs
//! more memory than one piece and no line is dropped; report its exit; signal
//! its whole group; run a health check under a timeout.
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

/// The longest piece of job output held and logged as one line. A longer line
/// is logged in pieces of this size, each but the last marked `continued`, so a
/// job that writes without newlines costs the supervisor this much per stream
/// and no more. 16 KiB is where Docker's log drivers split lines too, and it
/// keeps the log queue (`logging::QUEUED_LINES` lines) small when the log
/// reader stalls.
pub const MAX_LINE: usize = 16 * 1024;

/// Cuts a byte stream into lines of at most `cap` bytes, holding at most `cap`
/// bytes itself. Pure, so the cutting rules are tested without processes.
struct LineSplitter {
    pending: Vec<u8>,
    cap: usize,
}

impl LineSplitter {
    fn new(cap: usize) -> LineSplitter {
        // Allocated on first use: most jobs write lines that arrive whole in
        // one read and are logged from the read buffer.
        LineSplitter {
            pending: Vec::new(),
            cap,
        }
    }

    /// Take what it can from `data` and hand a finished piece, if any, to
    /// `emit(bytes, continued)`; returns how many bytes it took. Call again
    /// with the rest.
    fn push(&mut self, data: &[u8], emit: &mut impl FnMut(&[u8], bool)) -> usize {
        let room = self.cap - self.pending.len();
        // One byte past the room: a newline there still ends a line that fits.
        let window = &data[..data.len().min(room + 1)];
        if let Some(i) = window.iter().position(|&b| b == b'\n') {
            if self.pending.is_empty() {
                // The common case: a whole line in the buffer, logged from it.
                emit(strip_cr(&data[..i]), false);
            } else {
                // i <= room, so this fits in what was reserved.
                self.pending.extend_from_slice(&data[..i]);
                emit(strip_cr(&self.pending), false);
                self.pending.clear();
            }
            return i + 1;
        }
        let n = data.len().min(room);
        // Exactly the cap, once: growing by doubling could overshoot it.
        self.pending.reserve_exact(self.cap - self.pending.len());
        self.pending.extend_from_slice(&data[..n]);
        if data.len() > room {
            // Full, and the next byte is not a newline: the line goes on.
            self.cut(emit);
        }
        n
    }

    /// The stream ended: whatever is held is the last line.
    fn finish(&mut self, emit: &mut impl FnMut(&[u8], bool)) {
        if !self.pending.is_empty() {
            emit(&self.pending, false);
            self.pending.clear();
        }
    }

    /// Emit a full buffer that is not a whole line. A UTF-8 character cut in
    /// two by the cap is carried over to the next piece, so neither piece
    /// shows a replacement character for it.
    fn cut(&mut self, emit: &mut impl FnMut(&[u8], bool)) {
        let len = self.pending.len();
        let split = (len.saturating_sub(3)..len)
            .rev()
            .find(|&i| self.pending[i] & 0xC0 != 0x80)
            .filter(|&i| i > 0)
            .filter(|&i| {
                matches!(std::str::from_utf8(&self.pending[i..]), Err(e) if e.error_len().is_none())
            })
            .unwrap_or(len);
        let mut carry = [0u8; 3];
        let carried = len - split;
        carry[..carried].copy_from_slice(&self.pending[split..]);
        emit(&self.pending[..split], true);
        self.pending.clear();
        self.pending.extend_from_slice(&carry[..carried]);
    }
}

fn strip_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// Log a job's output line by line. Never holds more than [`MAX_LINE`] bytes of
/// it, and never drops a line: bytes that are not UTF-8 are logged as U+FFFD.
async fn relay_lines(stream: impl AsyncRead + Unpin, prefix: String, stderr: bool) {
    let mut reader = BufReader::with_capacity(MAX_LINE, stream);
    let mut lines = LineSplitter::new(MAX_LINE);
    let mut emit = |bytes: &[u8], continued: bool| log_piece(&prefix, stderr, bytes, continued);
    loop {
        let data = match reader.fill_buf().await {
            Ok(data) => data,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        if data.is_empty() {
            break;
        }
        let used = lines.push(data, &mut emit);
        reader.consume(used);
    }
    lines.finish(&mut emit);
}

fn log_piece(prefix: &str, stderr: bool, bytes: &[u8], continued: bool) {
    // Decoded inside the macros, so only when the level lets the line through.
    let line = || String::from_utf8_lossy(bytes);
    match (stderr, continued) {
        (false, false) => tracing::info!(target: "job", "{prefix} {}", line()),
        (false, true) => tracing::info!(target: "job", continued = true, "{prefix} {}", line()),
        (true, false) => tracing::warn!(target: "job", "{prefix} {}", line()),
        (true, true) => tracing::warn!(target: "job", continued = true, "{prefix} {}", line()),
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
/// Kills a process group when dropped while armed: a health check still
/// running when pilotfish stops (its task is dropped with the runtime) goes
/// with it instead of outliving the supervisor.
struct KillGroupOnDrop(Option<u32>);

impl Drop for KillGroupOnDrop {
    fn drop(&mut self) {
        if let Some(pid) = self.0.take() {
            signal_group(pid, Signal::SIGKILL);
        }
    }
}

pub async fn run_health_check(
    job: &JobConfig,
    overlay: &EnvOverlay,
    timeout: Duration,
) -> (bool, String) {
    let Some(exec) = job.health.as_ref().and_then(|h| h.exec.as_ref()) else {
        return (true, String::new());
    };
    let mut cmd = command(exec, job, overlay);
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!("job {}: health check cannot start: {e}", job.name);
            return (false, format!("health check cannot start: {e}"));
        }
    };
    let pid = child.id().unwrap_or(0);
    relay_output(&mut child, &format!("check.{}", job.name), pid);
    let mut abandoned = KillGroupOnDrop(Some(pid));
    let result = tokio::time::timeout(timeout, child.wait()).await;
    abandoned.0 = None;
    match result {
        Ok(Ok(status)) if status.success() => (true, String::new()),
        Ok(Ok(status)) => (
            false,
            format!(
                "health check {} (its output is in pilotfish's log as check.{}[{pid}])",
                match convert(status) {
                    ExitStatus::Code(c) => format!("exited with status {c}"),
                    ExitStatus::Signal(s) => format!("was killed by signal {s}"),
                },
                job.name
            ),
        ),
        Ok(Err(e)) => (false, format!("health check: {e}")),
        Err(_) => {
            let after = crate::config::duration::format_duration(timeout);
            tracing::warn!(
                "job {}: health check timed out after {after}; killing it",
                job.name
            );
            signal_group(pid, Signal::SIGKILL);
            let _ = child.wait().await;
            (false, format!("health check timed out after {after}"))
        }
    }
}

/// The processes whose parent is `pid` (HAProxy's or nginx's workers): read
/// from `/proc/<pid>/task/*/children`, or by scanning `/proc` where the
/// kernel lacks that file. Empty when the process is gone.
pub fn children(pid: i32) -> std::collections::BTreeSet<i32> {
    let mut out = std::collections::BTreeSet::new();
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        let mut found_file = false;
        for t in tasks.flatten() {
            if let Ok(text) = std::fs::read_to_string(t.path().join("children")) {
                found_file = true;
                out.extend(
                    text.split_whitespace()
                        .filter_map(|p| p.parse::<i32>().ok()),
                );
            }
        }
        if found_file {
            return out;
        }
    }
    let Ok(all) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in all.flatten() {
        let Some(child) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else {
            continue;
        };
        // pid (comm) state ppid ...: comm may hold spaces and parentheses.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<i32>().ok());
        if ppid == Some(pid) {
            out.insert(child);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn children_are_the_processes_a_master_forked() {
        let mut sh = std::process::Command::new("sh")
            .args(["-c", "sleep 30 & sleep 30 & wait"])
            .spawn()
            .expect("sh");
        let pid = i32::try_from(sh.id()).expect("a pid");
        let mut kids = std::collections::BTreeSet::new();
        for _ in 0..200 {
            kids = children(pid);
            if kids.len() == 2 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert_eq!(kids.len(), 2, "{kids:?}");
        for k in &kids {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(*k),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let _ = sh.wait();
        assert!(children(pid).is_empty(), "a reaped process has no children");
    }

    /// Feed `chunks` as reads arrive, the way the relay does; returns the
    /// pieces as (text, continued) and the most memory the splitter held.
    fn split(cap: usize, chunks: &[&[u8]]) -> (Vec<(String, bool)>, usize) {
        let mut lines = LineSplitter::new(cap);
        let mut out = Vec::new();
        let mut held = 0;
        let mut emit = |b: &[u8], c: bool| out.push((String::from_utf8_lossy(b).into_owned(), c));
        for chunk in chunks {
            let mut rest = *chunk;
            while !rest.is_empty() {
                let used = lines.push(rest, &mut emit);
                held = held.max(lines.pending.capacity());
                rest = &rest[used..];
            }
        }
        lines.finish(&mut emit);
        (out, held)
    }

    fn pieces(v: &[(&str, bool)]) -> Vec<(String, bool)> {
        v.iter().map(|(s, c)| (s.to_string(), *c)).collect()
    }

    #[test]
    fn lines_across_reads_and_a_last_line_without_newline() {
        let (out, _) = split(16, &[b"one\ntw", b"o\r\nthr", b"ee"]);
        assert_eq!(
            out,
            pieces(&[("one", false), ("two", false), ("three", false)])
        );
    }

    #[test]
    fn a_long_line_is_logged_in_capped_pieces_marked_continued() {
        let line = vec![b'x'; 10];
        let (out, held) = split(4, &[&line, b"\n", b"ok\n"]);
        assert_eq!(
            out,
            pieces(&[("xxxx", true), ("xxxx", true), ("xx", false), ("ok", false)])
        );
        assert!(held <= 4, "held {held} bytes");
    }

    #[test]
    fn a_line_of_exactly_the_cap_is_one_line() {
        let (out, _) = split(4, &[b"abcd", b"\nef\n"]);
        assert_eq!(out, pieces(&[("abcd", false), ("ef", false)]));
        let (out, _) = split(4, &[b"abcd\n"]);
        assert_eq!(out, pieces(&[("abcd", false)]));
    }

    #[test]
    fn a_character_cut_by_the_cap_moves_whole_to_the_next_piece() {
        // "aé" + "b": é is two bytes and would straddle a cap of 2.
        let (out, _) = split(2, &["aéb\n".as_bytes()]);
        assert_eq!(out, pieces(&[("a", true), ("é", true), ("b", false)]));
    }

    #[test]
    fn invalid_utf8_is_kept_not_dropped() {
        let (out, _) = split(64, &[b"bad \xff\xfe here\n", b"next\n"]);
        assert_eq!(
            out,
            pieces(&[("bad \u{fffd}\u{fffd} here", false), ("next", false)])
        );
    }
}
