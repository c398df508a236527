//! `pilotfish run` as users start it: a config written to a temp dir, the
//! real binary in its own process group, its output drained continuously,
//! its control socket, and SIGTERM then SIGKILL to the group on drop.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use std::os::unix::process::CommandExt;

pub const BIN: &str = env!("CARGO_BIN_EXE_pilotfish");

/// A running pilotfish, killed (with its process group) when dropped.
pub struct Pilotfish {
    pub child: Child,
    pub dir: tempfile::TempDir,
    /// Everything pilotfish wrote, drained continuously so it never blocks on a full pipe.
    pub output: std::sync::Arc<std::sync::Mutex<String>>,
}

fn drain(stream: impl Read + Send + 'static, into: std::sync::Arc<std::sync::Mutex<String>>) {
    std::thread::spawn(move || {
        let mut reader = std::io::BufReader::new(stream);
        let mut line = String::new();
        while std::io::BufRead::read_line(&mut reader, &mut line)
            .map(|n| n > 0)
            .unwrap_or(false)
        {
            if let Ok(mut out) = into.lock() {
                out.push_str(&line);
            }
            line.clear();
        }
    });
}

impl Pilotfish {
    /// Start `pilotfish run` on `config`; `{dir}` in the config becomes the temp dir.
    pub fn start(config: &str) -> Pilotfish {
        Self::start_with(config, &[])
    }

    /// Start with a command prefix (e.g. `unshare --pid --fork --mount-proc`).
    pub fn start_with(config: &str, prefix: &[&str]) -> Pilotfish {
        Self::spawn(config, prefix, &[])
    }

    /// Start with these variables added to pilotfish's environment (which
    /// its `${VAR}`s and its jobs see).
    pub fn start_with_env(config: &str, env: &[(&str, &str)]) -> Pilotfish {
        Self::spawn(config, &[], env)
    }

    fn spawn(config: &str, prefix: &[&str], env: &[(&str, &str)]) -> Pilotfish {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = write_config(dir.path(), config);
        let mut argv: Vec<String> = prefix.iter().map(|s| s.to_string()).collect();
        argv.extend([
            BIN.to_string(),
            "run".into(),
            "--config".into(),
            path.display().to_string(),
        ]);
        let mut child = Command::new(&argv[0])
            .args(&argv[1..])
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .expect("start pilotfish");
        let output = std::sync::Arc::default();
        if let Some(e) = child.stderr.take() {
            drain(e, std::sync::Arc::clone(&output));
        }
        if let Some(o) = child.stdout.take() {
            drain(o, std::sync::Arc::clone(&output));
        }
        Pilotfish { child, dir, output }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("pf.sock")
    }

    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        Command::new(BIN)
            .args(args)
            .arg("--socket")
            .arg(self.socket())
            .output()
            .expect("run pilotfish client")
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .expect("kill")
            .success();
        assert!(ok, "kill -{sig} failed");
    }

    /// Wait for exit (up to `limit`); returns the status and everything logged.
    pub fn wait(&mut self, limit: Duration) -> (ExitStatus, String) {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                // Let the drain threads reach the end of both pipes.
                std::thread::sleep(Duration::from_millis(100));
                let out = self.output.lock().map(|o| o.clone()).unwrap_or_default();
                return (status, out);
            }
            assert!(
                start.elapsed() < limit,
                "pilotfish did not exit within {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Poll until the control socket answers.
    pub fn wait_ready(&self) {
        let start = Instant::now();
        while !self.cli(&["ping"]).status.success() {
            if start.elapsed() > Duration::from_secs(60) {
                let log = self.output.lock().map(|o| o.clone()).unwrap_or_default();
                panic!("control socket never answered; pilotfish said:\n{log}");
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    pub fn status_json(&self) -> serde_json::Value {
        let out = self.cli(&["status", "--json"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("status json")
    }

    pub fn pid_of(&self, job: &str) -> Option<u64> {
        let s = self.status_json();
        s["jobs"].as_array()?.iter().find(|j| j["name"] == job)?["pid"].as_u64()
    }
}

impl Drop for Pilotfish {
    fn drop(&mut self) {
        if let Ok(pgid) = i32::try_from(self.child.id()) {
            let group = nix::unistd::Pid::from_raw(pgid);
            // SIGTERM first, so pilotfish stops its jobs: they run in their
            // own process groups and outside a pid namespace a SIGKILLed
            // pilotfish would leave them running after the test.
            let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline && matches!(self.child.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(20));
            }
            // The whole group: pilotfish, and with unshare the namespace's init.
            let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
        }
        let _ = self.child.wait();
    }
}

pub fn write_config(dir: &Path, config: &str) -> PathBuf {
    let path = dir.join("pilotfish.toml");
    // The control table goes last so top-level keys of `config` stay top-level.
    let text = format!(
        "{}\n\n[control]\nsocket = \"{}/pf.sock\"\n",
        config.replace("{dir}", &dir.display().to_string()),
        dir.display()
    );
    std::fs::write(&path, text).expect("write config");
    path
}

pub fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(25));
    }
}

pub fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

impl Pilotfish {
    /// Everything pilotfish has written so far.
    pub fn log(&self) -> String {
        self.output.lock().map(|o| o.clone()).unwrap_or_default()
    }
}
