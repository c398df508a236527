//! One `pilotfish agent` process as the suites start it: a builder for its
//! flags, free ports on its own address, its output in a log file of its
//! own, killed on drop (the log's tail is printed when the test failed).

// Each suite uses a part of it.
#![allow(dead_code)]

use std::ffi::OsString;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::Duration;

use super::{eventually, http, HttpError, Response};

pub const BIN: &str = env!("CARGO_BIN_EXE_pilotfish");

/// A TCP port free on `ip` right now.
pub fn free_port(ip: &str) -> u16 {
    TcpListener::bind((ip, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// The `X-Consul-Index` of an answer (panics naming the headers without one).
pub fn consul_index(headers: &[(String, String)]) -> u64 {
    let (_, v) = headers
        .iter()
        .find(|(k, _)| k == "x-consul-index")
        .unwrap_or_else(|| panic!("no X-Consul-Index in {headers:?}"));
    v.parse()
        .unwrap_or_else(|e| panic!("X-Consul-Index {v:?} is not a number: {e}"))
}

/// What to start; see [`Agent::dev`] and [`Agent::on`].
pub struct AgentBuilder {
    ip: String,
    args: Vec<OsString>,
    env: Vec<(String, Option<String>)>,
    http: Option<u16>,
    dns: Option<u16>,
    server: Option<u16>,
    leader: bool,
}

impl AgentBuilder {
    pub fn arg(mut self, a: impl Into<OsString>) -> AgentBuilder {
        self.args.push(a.into());
        self
    }

    pub fn args<I: IntoIterator<Item = S>, S: Into<OsString>>(mut self, args: I) -> AgentBuilder {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Fixed HTTP, DNS and server ports (a restart keeps its addresses).
    pub fn ports(mut self, http: u16, dns: u16, server: u16) -> AgentBuilder {
        (self.http, self.dns, self.server) = (Some(http), Some(dns), Some(server));
        self
    }

    /// A fixed server port (agents that join by address alone share one).
    pub fn server_port(mut self, port: u16) -> AgentBuilder {
        self.server = Some(port);
        self
    }

    /// The three ports, free ones where none was fixed.
    fn pick_ports(&self) -> (u16, u16, u16) {
        let ip = self.ip.as_str();
        (
            self.http.unwrap_or_else(|| free_port(ip)),
            self.dns.unwrap_or_else(|| free_port(ip)),
            self.server.unwrap_or_else(|| free_port(ip)),
        )
    }

    /// Set (`Some`) or remove (`None`) an environment variable.
    pub fn env(mut self, key: &str, value: Option<&str>) -> AgentBuilder {
        self.env.push((key.to_string(), value.map(String::from)));
        self
    }

    /// Also wait until the agent knows a leader (a server that forms alone).
    pub fn wait_for_leader(mut self) -> AgentBuilder {
        self.leader = true;
        self
    }

    fn command(&self, log: &std::fs::File, ports: (u16, u16, u16)) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.arg("agent")
            .args(["--client", &self.ip])
            .args(["--http-port", &ports.0.to_string()])
            .args(["--dns-port", &ports.1.to_string()])
            .args(["--server-port", &ports.2.to_string()])
            .args(&self.args)
            .env_remove("PILOTFISH_ACL_TOKEN")
            .env_remove("PILOTFISH_ENCRYPT")
            .env_remove("PILOTFISH_LOG")
            .env_remove("PILOTFISH_NODE")
            .env_remove("PILOTFISH_ADVERTISE")
            .env_remove("PILOTFISH_RESOLVER")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log.try_clone().expect("log handle"));
        for (k, v) in &self.env {
            match v {
                Some(v) => cmd.env(k, v),
                None => cmd.env_remove(k),
            };
        }
        cmd
    }

    /// Start it and wait until its HTTP API answers. Free ports are picked
    /// by binding port 0 and letting go, so another test (or an outgoing
    /// connection) can take one before the agent binds it: an agent that
    /// exits at start with a port in use is started again on fresh ports.
    pub fn start(self) -> Agent {
        for attempt in 1.. {
            match self.try_start() {
                Ok(agent) => return agent,
                Err(log) if attempt < 5 && self.may_repick() => {
                    eprintln!(
                        "a port was taken before the agent bound it; again on fresh ports:\n{log}"
                    );
                }
                Err(log) => panic!("the agent exited at start:\n{log}"),
            }
        }
        unreachable!("the loop returns or panics")
    }

    /// Whether every port was picked here (none fixed by the test).
    fn may_repick(&self) -> bool {
        self.http.is_none() && self.dns.is_none() && self.server.is_none()
    }

    /// Start once: the agent once it answers, or its log when it exited at
    /// start with an address in use.
    fn try_start(&self) -> Result<Agent, String> {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = dir.path().join("agent.log");
        let file = std::fs::File::create(&log).expect("the agent's log");
        let ip = self.ip.as_str();
        let ports = self.pick_ports();
        let child = self
            .command(&file, ports)
            .spawn()
            .expect("start pilotfish agent");
        let mut agent = Agent {
            child: Some(child),
            http: format!("{ip}:{}", ports.0).parse().expect("an address"),
            ip: self.ip.clone(),
            dns: ports.1,
            server_port: ports.2,
            log,
            _dir: dir,
        };
        let leader = self.leader;
        let mut in_use = None;
        eventually("the agent answers HTTP", Duration::from_secs(30), || {
            if let Some(Ok(Some(s))) = agent.child.as_mut().map(Child::try_wait) {
                let log = agent.log();
                if log.contains("Address already in use") {
                    in_use = Some(log);
                    return Ok(());
                }
                panic!("the agent exited at start: {s}\n{log}");
            }
            match agent.request("GET", "/v1/status/leader", b"") {
                Ok((200, _, body)) if !leader || body.len() > 2 => Ok(()),
                other => Err(format!("{other:?}")),
            }
        });
        match in_use {
            Some(log) => {
                agent.child = None;
                Err(log)
            }
            None => Ok(agent),
        }
    }

    /// Run it to its end (it must stop by itself within 20 s): its output.
    pub fn run_to_exit(self) -> Output {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = std::fs::File::create(dir.path().join("agent.log")).expect("log");
        let ports = self.pick_ports();
        let mut cmd = self.command(&file, ports);
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start pilotfish agent");
        eventually("the agent exits", Duration::from_secs(20), || {
            match child.try_wait() {
                Ok(Some(_)) => Ok(()),
                Ok(None) => Err("still running".to_string()),
                Err(e) => Err(e.to_string()),
            }
        });
        child.wait_with_output().expect("the agent's output")
    }
}

impl AgentBuilder {
    /// It must refuse to start (exit 1 at once): its stderr.
    pub fn refused(self) -> String {
        let args = format!("{:?}", self.args);
        let o = self.run_to_exit();
        let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
        assert_eq!(
            o.status.code(),
            Some(1),
            "{args} did not fail at start: {stderr}"
        );
        stderr
    }
}

/// A running agent.
pub struct Agent {
    child: Option<Child>,
    pub ip: String,
    pub http: SocketAddr,
    pub dns: u16,
    pub server_port: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Agent {
    /// `--dev` on 127.0.0.1 (its output goes to its log file).
    pub fn dev() -> AgentBuilder {
        Agent::on("127.0.0.1").arg("--dev")
    }

    /// An agent whose HTTP, DNS (and, with `--bind`, cluster) ports are on
    /// `ip`; add the role and the rest.
    pub fn on(ip: &str) -> AgentBuilder {
        AgentBuilder {
            ip: ip.to_string(),
            args: Vec::new(),
            env: Vec::new(),
            http: None,
            dns: None,
            server: None,
            leader: false,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http)
    }

    pub fn request(&self, method: &str, path: &str, body: &[u8]) -> Result<Response, HttpError> {
        http(self.http, method, path, body)
    }

    /// `pilotfish ARGS` against this agent (CONSUL_HTTP_ADDR), no token.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .args(args)
            .env("CONSUL_HTTP_ADDR", self.http.to_string())
            .env_remove("CONSUL_HTTP_TOKEN")
            .output()
            .expect("run pilotfish")
    }

    /// Everything the agent wrote so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> nix::unistd::Pid {
        let id = self.child.as_ref().expect("a running agent").id();
        nix::unistd::Pid::from_raw(i32::try_from(id).expect("a pid"))
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(self.pid(), sig).expect("signal the agent");
    }

    pub fn running(&mut self) -> bool {
        matches!(self.child.as_mut().map(Child::try_wait), Some(Ok(None)))
    }

    /// Wait for the agent to exit by itself.
    pub fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let child = self.child.as_mut().expect("a running agent");
        let status = eventually("the agent exits", limit, || match child.try_wait() {
            Ok(Some(s)) => Ok(s),
            Ok(None) => Err("still running".to_string()),
            Err(e) => Err(e.to_string()),
        });
        self.child = None;
        status
    }

    /// SIGKILL it now.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            let log = self.log();
            let lines: Vec<&str> = log.lines().collect();
            eprintln!(
                "----- agent on {} log, last 40 lines -----\n{}",
                self.http,
                lines[lines.len().saturating_sub(40)..].join("\n")
            );
        }
    }
}

/// A request on its own connection whose answer is read on a thread of its
/// own (a blocking query), see [`Agent::pending`].
pub struct Pending {
    answer: std::thread::JoinHandle<Result<Response, HttpError>>,
}

impl Pending {
    pub fn is_finished(&self) -> bool {
        self.answer.is_finished()
    }

    /// Its answer (panics when there was none within `limit`).
    pub fn answer(self, limit: Duration) -> Response {
        let answer = &self.answer;
        eventually("the pending request is answered", limit, || {
            if answer.is_finished() {
                Ok(())
            } else {
                Err("no answer yet".to_string())
            }
        });
        self.answer
            .join()
            .expect("the request's thread")
            .expect("an answer")
    }
}

impl Agent {
    /// Send `method path` and return once the agent has read all of it (its
    /// receive queue for the connection is empty and it acknowledged every
    /// byte, `/proc/net/tcp`). A blocking GET needs no more input from then
    /// on, and the server parks it in the same poll that parsed it: this is
    /// as close to "the query is parked" as the outside can see. A write
    /// that still raced ahead of the park would make the query answer at
    /// once with the moved index, the same answer a wake gives.
    pub fn pending(&self, method: &str, path: &str) -> Pending {
        use std::io::{Read, Write};
        let addr = self.http;
        let mut conn = std::net::TcpStream::connect(addr).expect("connect to the agent");
        let client = conn.local_addr().expect("a local address");
        write!(
            conn,
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )
        .expect("send the request");
        let answer = std::thread::spawn(move || {
            conn.set_read_timeout(Some(super::ANSWER_TIMEOUT))
                .map_err(HttpError::NoAnswer)?;
            let mut raw = Vec::new();
            conn.read_to_end(&mut raw).map_err(HttpError::NoAnswer)?;
            super::parse_response(&raw).map_err(HttpError::NoAnswer)
        });
        eventually(
            "the agent read the whole request",
            Duration::from_secs(10),
            || {
                let unread = tcp_queues(addr, client).map(|q| q.1);
                let unacked = tcp_queues(client, addr).map(|q| q.0);
                match (unacked, unread) {
                    (Some(0), Some(0)) => Ok(()),
                    other => Err(format!("(our tx queue, its rx queue): {other:?}")),
                }
            },
        );
        Pending { answer }
    }
}

/// `(tx_queue, rx_queue)` of the IPv4 TCP socket `local` → `remote` in this
/// network namespace, from `/proc/net/tcp`.
fn tcp_queues(local: SocketAddr, remote: SocketAddr) -> Option<(u64, u64)> {
    let hex = |a: SocketAddr| match a {
        SocketAddr::V4(v4) => format!(
            "{:08X}:{:04X}",
            u32::from_le_bytes(v4.ip().octets()),
            v4.port()
        ),
        SocketAddr::V6(_) => panic!("IPv4 only: {a}"),
    };
    let (local, remote) = (hex(local), hex(remote));
    let table = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp");
    table.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.get(1) != Some(&local.as_str()) || f.get(2) != Some(&remote.as_str()) {
            return None;
        }
        let (tx, rx) = f.get(4)?.split_once(':')?;
        Some((
            u64::from_str_radix(tx, 16).ok()?,
            u64::from_str_radix(rx, 16).ok()?,
        ))
    })
}

impl Agent {
    /// A connection to the HTTP port from `source` (any 127.x address),
    /// not yet used, reads timing out after 30 s: std cannot bind before
    /// connecting, tokio's `TcpSocket` can.
    pub fn connect_from(&self, source: [u8; 4]) -> std::net::TcpStream {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .expect("a runtime");
        let stream = rt.block_on(async {
            let socket = tokio::net::TcpSocket::new_v4().expect("a socket");
            socket
                .bind(SocketAddr::from((source, 0)))
                .expect("bind the source address");
            socket
                .connect(self.http)
                .await
                .expect("connect to the agent")
        });
        let stream = stream.into_std().expect("a std stream");
        stream.set_nonblocking(false).expect("blocking mode");
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .expect("a read timeout");
        stream
    }
}
