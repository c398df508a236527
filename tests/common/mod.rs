//! The harness of `tests/cluster.rs`: real `pilotfish agent --server`
//! processes, one per loopback address `127.0.<subnet>.<n>`, all on the same
//! port triple (HTTP, DNS, server) chosen free on every address; a plain
//! HTTP/1.1 client over `TcpStream`; and a network partition made of
//! iptables rules (see [`Partition`]). Everything a test starts is killed
//! on drop, and a failing test prints the tail of every server's log.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub mod agent;
#[allow(dead_code)] // the supervisor suites use it; the agent suites do not
pub mod runner;

// ---------------------------------------------------------------- HTTP

/// Whether something listens on `addr`. A connection to itself does not
/// count: connecting again and again to a loopback port nobody listens on
/// yet can pick that very port as the source and succeed (TCP simultaneous
/// open), and a test would then talk to nothing.
#[allow(dead_code)] // the suites that start single agents use it; cluster.rs does not
pub fn accepts(addr: SocketAddr) -> bool {
    TcpStream::connect(addr).is_ok_and(|c| c.local_addr().ok() != c.peer_addr().ok())
}

/// Status, lower-cased headers, body.
pub type Response = (u16, Vec<(String, String)>, Vec<u8>);

/// Why a request got no answer. The difference matters to a history: a
/// request that was never sent cannot have taken effect.
#[derive(Debug)]
pub enum HttpError {
    /// The connection was refused or timed out: nothing was sent.
    NotSent(std::io::Error),
    /// Sent, but no (complete) answer: the request may have taken effect.
    NoAnswer(std::io::Error),
}

impl std::fmt::Display for HttpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HttpError::NotSent(e) => write!(f, "not sent: {e}"),
            HttpError::NoAnswer(e) => write!(f, "no answer: {e}"),
        }
    }
}

/// Long enough for a write's 7 s hold for a leader plus a forward; an upper
/// bound, never an expectation.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(20);

/// One HTTP/1.1 request on its own connection.
pub fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &[u8],
) -> Result<Response, HttpError> {
    http_with_timeout(addr, method, path, body, ANSWER_TIMEOUT)
}

pub fn http_with_timeout(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &[u8],
    timeout: Duration,
) -> Result<Response, HttpError> {
    let mut conn =
        TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map_err(HttpError::NotSent)?;
    let exchange = |conn: &mut TcpStream| -> std::io::Result<Response> {
        conn.set_read_timeout(Some(timeout))?;
        conn.set_write_timeout(Some(timeout))?;
        write!(
            conn,
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )?;
        conn.write_all(body)?;
        let mut raw = Vec::new();
        conn.read_to_end(&mut raw)?;
        parse_response(&raw)
    };
    exchange(&mut conn).map_err(HttpError::NoAnswer)
}

pub fn parse_response(raw: &[u8]) -> std::io::Result<Response> {
    let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string());
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| bad("no end of headers"))?;
    let head = std::str::from_utf8(&raw[..end]).map_err(|_| bad("headers not text"))?;
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("no status"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let mut body = raw[end + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    if chunked {
        let mut out = Vec::new();
        let mut rest = body.as_slice();
        loop {
            let nl = rest
                .windows(2)
                .position(|w| w == b"\r\n")
                .ok_or_else(|| bad("bad chunk"))?;
            let size = std::str::from_utf8(&rest[..nl])
                .ok()
                .and_then(|s| {
                    usize::from_str_radix(s.split(';').next().unwrap_or("").trim(), 16).ok()
                })
                .ok_or_else(|| bad("bad chunk size"))?;
            rest = &rest[nl + 2..];
            if size == 0 {
                break;
            }
            out.extend_from_slice(rest.get(..size).ok_or_else(|| bad("short chunk"))?);
            rest = rest.get(size + 2..).unwrap_or(&[]);
        }
        body = out;
    }
    Ok((status, headers, body))
}

pub fn text(body: &[u8]) -> String {
    String::from_utf8_lossy(body).trim().to_string()
}

/// Standard base64 with padding (Consul's KV `Value` and txn values).
pub use pilotfish::discovery::api::kv::base64_encode as base64;

// ---------------------------------------------------------------- waiting

/// Poll `f` until it answers `Some`, for at most `limit` (an upper bound
/// for "eventually", never a speed expectation); panics naming `what` and
/// the last observation otherwise.
pub fn eventually<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + limit;
    let mut last;
    loop {
        match f() {
            Ok(v) => return v,
            Err(e) => last = e,
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not within {limit:?}; last seen: {last}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

// ---------------------------------------------------------------- the cluster

/// The cluster key (`--encrypt`) the test clusters run with, as `pilotfish
/// keygen` prints one.
pub const CLUSTER_KEY: &str = "cGlsb3RmaXNoLXRlc3QtY2x1c3Rlci1rZXktMzJieXQ=";

/// The port triple every server of one cluster listens on (each on its
/// own address).
#[derive(Debug, Clone, Copy)]
pub struct Ports {
    pub http: u16,
    pub dns: u16,
    pub server: u16,
}

/// A TCP port that is free on every address in `ips` (and free for UDP
/// too when `udp`), so each server can bind it on its own address.
pub fn free_port(ips: &[Ipv4Addr], udp: bool, taken: &[u16]) -> u16 {
    for _ in 0..200 {
        let port = TcpListener::bind((ips[0], 0))
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        if taken.contains(&port) {
            continue;
        }
        let free_everywhere = ips.iter().all(|ip| {
            TcpListener::bind((*ip, port)).is_ok() && (!udp || UdpSocket::bind((*ip, port)).is_ok())
        });
        if free_everywhere {
            return port;
        }
    }
    panic!("no port free on all of {ips:?}");
}

/// One `pilotfish agent --server` process and where it keeps things.
pub struct Node {
    pub name: String,
    pub ip: Ipv4Addr,
    pub data_dir: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    /// Starts so far (the log keeps every run's output).
    starts: u32,
}

/// A cluster of `n` servers on `127.0.<subnet>.1..=n`, each told to expect
/// `expect` servers and to retry-join the first three addresses.
pub struct Cluster {
    pub subnet: u8,
    pub expect: usize,
    pub ports: Ports,
    pub nodes: Vec<Node>,
    /// When set, server `i` runs with the primary group `gid_base + i` (still
    /// as root), so iptables' owner match can tell the servers' own
    /// connections apart: on loopback every connection's source address is
    /// 127.0.0.1, whatever the server binds.
    pub gid_base: Option<u32>,
    /// More `pilotfish agent` flags for every server.
    pub args: Vec<String>,
    /// Holds the data dirs and logs; removed on drop.
    _tmp: tempfile::TempDir,
}

impl Cluster {
    /// Describe the cluster (nothing is started).
    pub fn new(subnet: u8, n: usize, expect: usize) -> Cluster {
        let dir = tempfile::tempdir().expect("temp dir");
        let ips: Vec<Ipv4Addr> = (1..=n)
            .map(|i| Ipv4Addr::new(127, 0, subnet, u8::try_from(i).expect("few servers")))
            .collect();
        let http = free_port(&ips, false, &[]);
        let dns = free_port(&ips, true, &[http]);
        let server = free_port(&ips, false, &[http, dns]);
        let nodes = ips
            .iter()
            .enumerate()
            .map(|(i, ip)| Node {
                name: format!("s{}", i + 1),
                ip: *ip,
                data_dir: dir.path().join(format!("s{}", i + 1)),
                log: dir.path().join(format!("s{}.log", i + 1)),
                child: None,
                starts: 0,
            })
            .collect();
        Cluster {
            subnet,
            expect,
            ports: Ports { http, dns, server },
            nodes,
            gid_base: None,
            args: Vec::new(),
            _tmp: dir,
        }
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn http_addr(&self, i: usize) -> SocketAddr {
        SocketAddr::from((self.nodes[i].ip, self.ports.http))
    }

    /// `ip:server-port`, as `/v1/status/leader` and `/v1/status/peers` show a server.
    pub fn rpc_addr(&self, i: usize) -> String {
        format!("{}:{}", self.nodes[i].ip, self.ports.server)
    }

    pub fn is_running(&mut self, i: usize) -> bool {
        match self.nodes[i].child.as_mut() {
            None => false,
            Some(c) => matches!(c.try_wait(), Ok(None)),
        }
    }

    pub fn running(&mut self) -> Vec<usize> {
        (0..self.len()).filter(|&i| self.is_running(i)).collect()
    }

    pub fn pid(&self, i: usize) -> Option<u32> {
        self.nodes[i].child.as_ref().map(Child::id)
    }

    /// Start server `i` on its data dir and wait until its HTTP API answers.
    pub fn start(&mut self, i: usize) {
        assert!(
            !self.is_running(i),
            "{} is already running",
            self.nodes[i].name
        );
        let bin = env!("CARGO_BIN_EXE_pilotfish");
        let node = &self.nodes[i];
        let mut cmd = match self.gid_base {
            None => Command::new(bin),
            Some(base) => {
                let mut c = Command::new("setpriv");
                c.arg(format!(
                    "--regid={}",
                    base + u32::try_from(i).expect("small")
                ))
                .args(["--clear-groups", "--"])
                .arg(bin);
                c
            }
        };
        cmd.args(["agent", "--server", "--log-level", "info"])
            .args(["--bootstrap-expect", &self.expect.to_string()])
            .arg("--data-dir")
            .arg(&node.data_dir)
            .args(["--node", &node.name])
            .args(["--bind", &node.ip.to_string()])
            .args(["--client", &node.ip.to_string()])
            .args(["--http-port", &self.ports.http.to_string()])
            .args(["--dns-port", &self.ports.dns.to_string()])
            .args(["--server-port", &self.ports.server.to_string()])
            .args(["--encrypt", CLUSTER_KEY])
            .args(&self.args);
        for j in 0..self.len().min(3) {
            cmd.args(["--retry-join", &self.nodes[j].ip.to_string()]);
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)
            .expect("open the server log");
        let mut marker = log.try_clone().expect("log handle");
        let _ = writeln!(
            marker,
            "===== test harness: start #{} =====",
            node.starts + 1
        );
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .expect("start pilotfish agent");
        self.nodes[i].child = Some(child);
        self.nodes[i].starts += 1;
        let addr = self.http_addr(i);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(Ok(Some(status))) = self.nodes[i].child.as_mut().map(Child::try_wait) {
                panic!(
                    "{} exited at start: {status}\n{}",
                    self.nodes[i].name,
                    self.log_tail(i, 40)
                );
            }
            if let Ok((200, _, _)) = http_with_timeout(
                addr,
                "GET",
                "/v1/status/leader",
                b"",
                Duration::from_secs(2),
            ) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not answer HTTP within 30 s",
                self.nodes[i].name
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn start_all(&mut self) {
        for i in 0..self.len() {
            self.start(i);
        }
    }

    /// SIGKILL server `i` and reap it.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.nodes[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM server `i` (a graceful leave) and wait for it to exit.
    pub fn terminate(&mut self, i: usize) {
        let pid = self.pid(i).expect("a running server");
        let pid = nix::unistd::Pid::from_raw(i32::try_from(pid).expect("a pid"));
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
        self.wait_exit(i, Duration::from_secs(30));
    }

    /// Wait for server `i` to exit by itself; answers its exit status.
    pub fn wait_exit(&mut self, i: usize, limit: Duration) -> std::process::ExitStatus {
        let name = self.nodes[i].name.clone();
        let child = self.nodes[i].child.as_mut().expect("a started server");
        let status = eventually(&format!("{name} exits"), limit, || match child.try_wait() {
            Ok(Some(s)) => Ok(s),
            Ok(None) => Err("still running".to_string()),
            Err(e) => Err(e.to_string()),
        });
        self.nodes[i].child = None;
        status
    }

    pub fn request(
        &self,
        i: usize,
        method: &str,
        path: &str,
        body: &[u8],
    ) -> Result<Response, HttpError> {
        http(self.http_addr(i), method, path, body)
    }

    /// GET a JSON document from server `i`.
    pub fn get_json(&self, i: usize, path: &str) -> Result<Value, String> {
        match self.request(i, "GET", path, b"") {
            Ok((200, _, body)) => serde_json::from_slice(&body).map_err(|e| format!("{e}")),
            Ok((status, _, body)) => Err(format!("GET {path}: HTTP {status} {}", text(&body))),
            Err(e) => Err(format!("GET {path}: {e}")),
        }
    }

    /// PUT `value` at `key` on server `i`: `Ok` once acknowledged (`true`).
    pub fn put(&self, i: usize, key: &str, value: &str) -> Result<(), String> {
        match self.request(i, "PUT", &format!("/v1/kv/{key}"), value.as_bytes()) {
            Ok((200, _, body)) if text(&body) == "true" => Ok(()),
            Ok((status, _, body)) => Err(format!("PUT {key}: HTTP {status} {}", text(&body))),
            Err(e) => Err(format!("PUT {key}: {e}")),
        }
    }

    /// GET `key` raw with a read mode (`consistent`, `stale` or `` for the
    /// default): `Ok(None)` on 404.
    pub fn get(&self, i: usize, key: &str, mode: &str) -> Result<Option<String>, String> {
        let mode = if mode.is_empty() {
            String::new()
        } else {
            format!("&{mode}")
        };
        match self.request(i, "GET", &format!("/v1/kv/{key}?raw{mode}"), b"") {
            Ok((200, _, body)) => Ok(Some(String::from_utf8_lossy(&body).to_string())),
            Ok((404, _, _)) => Ok(None),
            Ok((status, _, body)) => Err(format!("HTTP {status} {}", text(&body))),
            Err(e) => Err(e.to_string()),
        }
    }

    /// `Stats.raft` of `/v1/agent/self`.
    pub fn raft_stats(&self, i: usize) -> Result<Value, String> {
        let me = self.get_json(i, "/v1/agent/self")?;
        Ok(me["Stats"]["raft"].clone())
    }

    /// `/v1/status/peers` of server `i`.
    pub fn peers(&self, i: usize) -> Result<Vec<String>, String> {
        let v = self.get_json(i, "/v1/status/peers")?;
        let mut peers: Vec<String> = v
            .as_array()
            .ok_or_else(|| format!("peers is not a list: {v}"))?
            .iter()
            .filter_map(|p| p.as_str().map(String::from))
            .collect();
        peers.sort();
        Ok(peers)
    }

    /// `/v1/status/leader` of server `i` (`""` when none).
    pub fn status_leader(&self, i: usize) -> Result<String, String> {
        let v = self.get_json(i, "/v1/status/leader")?;
        v.as_str()
            .map(String::from)
            .ok_or_else(|| format!("leader is not a string: {v}"))
    }

    /// The running servers whose raft state is `Leader` right now.
    pub fn leaders(&mut self) -> Vec<usize> {
        self.running()
            .into_iter()
            .filter(|&i| {
                self.raft_stats(i)
                    .is_ok_and(|r| r["state"].as_str() == Some("Leader"))
            })
            .collect()
    }

    /// Wait until exactly one of `among` is leader and every one of them
    /// names it in `/v1/status/leader`; answers its index.
    pub fn agreed_leader(&mut self, among: &[usize], limit: Duration) -> usize {
        let among = among.to_vec();
        eventually("one leader every server agrees on", limit, || {
            let leaders: Vec<usize> = among
                .iter()
                .copied()
                .filter(|&i| {
                    self.raft_stats(i)
                        .is_ok_and(|r| r["state"].as_str() == Some("Leader"))
                })
                .collect();
            let [leader] = leaders[..] else {
                return Err(format!("leaders among {among:?}: {leaders:?}"));
            };
            let want = self.rpc_addr(leader);
            for &i in &among {
                let seen = self.status_leader(i)?;
                if seen != want {
                    return Err(format!(
                        "{} sees leader {seen:?}, not {want}",
                        self.nodes[i].name
                    ));
                }
            }
            Ok(leader)
        })
    }

    /// `/v1/agent/members` of server `i`: name to Consul's status number.
    pub fn member_statuses(&self, i: usize) -> Result<Vec<(String, u64)>, String> {
        let v = self.get_json(i, "/v1/agent/members")?;
        let mut out: Vec<(String, u64)> = v
            .as_array()
            .ok_or_else(|| format!("members is not a list: {v}"))?
            .iter()
            .map(|m| {
                (
                    m["Name"].as_str().unwrap_or_default().to_string(),
                    m["Status"].as_u64().unwrap_or(0),
                )
            })
            .collect();
        out.sort();
        Ok(out)
    }

    /// Run `pilotfish <args> --http-addr <server i>`; answers stdout
    /// (panics on a failed command, with its stderr).
    pub fn cli(&self, i: usize, args: &[&str]) -> Result<String, String> {
        let out = Command::new(env!("CARGO_BIN_EXE_pilotfish"))
            .args(args)
            .args(["--http-addr", &self.http_addr(i).to_string()])
            .output()
            .expect("run pilotfish");
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).to_string())
        } else {
            Err(format!(
                "pilotfish {args:?} on {}: {}: {}",
                self.nodes[i].name,
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }

    /// The last `n` lines of server `i`'s log (every run of it).
    pub fn log_tail(&self, i: usize, n: usize) -> String {
        let log = std::fs::read_to_string(&self.nodes[i].log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.len() {
            self.kill(i);
        }
        if std::thread::panicking() {
            let lines: usize = std::env::var("CLUSTER_LOG_LINES")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(60);
            for i in 0..self.len() {
                eprintln!(
                    "----- {} ({}) log, last {lines} lines -----\n{}",
                    self.nodes[i].name,
                    self.nodes[i].ip,
                    self.log_tail(i, lines)
                );
            }
        }
    }
}

// ---------------------------------------------------------------- partitions

/// A network partition between two groups of a [`Cluster`]'s servers,
/// made of iptables rules in a chain of its own (jumped to from OUTPUT),
/// removed on drop, panics included.
///
/// On loopback every outgoing connection has the source address
/// 127.0.0.1, whatever address the server binds, so the rules cannot match
/// on the source. Each server instead runs with a group of its own
/// ([`Cluster::gid_base`]), and the owner match drops what server `a`
/// sends to server `b`'s server port, both ways for every pair across the
/// cut. The client side (this test, as root) is untouched: the HTTP API of
/// every server stays reachable, like a client next to each side.
pub struct Partition {
    chain: String,
}

impl Partition {
    /// Whether this process can make partitions (root and iptables).
    pub fn available() -> Result<(), String> {
        if !nix::unistd::Uid::effective().is_root() {
            return Err("partitions need root (iptables)".to_string());
        }
        let out = Command::new("iptables")
            .args(["-w", "-S", "OUTPUT"])
            .output();
        match out {
            Ok(o) if o.status.success() => Ok(()),
            Ok(o) => Err(format!(
                "iptables -S OUTPUT failed: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            )),
            Err(e) => Err(format!("iptables: {e} (apt-get install iptables)")),
        }
    }

    /// Cut `side_a` from `side_b` (indexes into `cluster.nodes`).
    pub fn new(cluster: &Cluster, side_a: &[usize], side_b: &[usize]) -> Partition {
        let base = cluster
            .gid_base
            .expect("partitions need a cluster started with gid_base");
        let chain = format!("PF-CTEST-{}-{}", std::process::id(), cluster.subnet);
        let partition = Partition { chain };
        partition.iptables(&["-N", &partition.chain]);
        let port = cluster.ports.server.to_string();
        for (from, to) in side_a
            .iter()
            .flat_map(|a| side_b.iter().flat_map(move |b| [(*a, *b), (*b, *a)]))
        {
            let gid = (base + u32::try_from(from).expect("small")).to_string();
            let dst = cluster.nodes[to].ip.to_string();
            partition.iptables(&[
                "-A",
                &partition.chain,
                "-p",
                "tcp",
                "-d",
                &dst,
                "--dport",
                &port,
                "-m",
                "owner",
                "--gid-owner",
                &gid,
                "-j",
                "DROP",
            ]);
        }
        partition.iptables(&["-I", "OUTPUT", "-j", &partition.chain]);
        partition
    }

    fn iptables(&self, args: &[&str]) {
        let out = Command::new("iptables")
            .arg("-w")
            .args(args)
            .output()
            .expect("run iptables");
        assert!(
            out.status.success(),
            "iptables {args:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }

    /// Remove the rules (heal).
    pub fn heal(self) {
        drop(self);
    }
}

impl Drop for Partition {
    fn drop(&mut self) {
        for args in [
            vec!["-D", "OUTPUT", "-j", &self.chain],
            vec!["-F", &self.chain],
            vec!["-X", &self.chain],
        ] {
            let ok = Command::new("iptables")
                .arg("-w")
                .args(&args)
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                eprintln!("removing the partition: iptables {args:?} failed");
            }
        }
    }
}
