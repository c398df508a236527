//! The discovery cluster under pilotfish, as an image runs it: three
//! `pilotfish run` supervisors of the real `config-examples/consul-server.toml`,
//! driven only through environment variables, each with its agent on its own
//! loopback address (`127.0.41.1`-`3`, the same ports on each), finding each
//! other only through one DNS name that a real dnsmasq answers with all three
//! addresses. They bootstrap and every health hook turns healthy; backups
//! appear and rotate; a stopped agent fails its hook; a crashed supervisor
//! (SIGKILL to everything it ran, as a container dies) leaves the other two
//! healthy with a leader and rejoins when started again on its data dir; a
//! lone agent's `pilotfish rejoin` joins the name.
//!
//! Needs `dnsmasq` (Debian's `dnsmasq-base`; `tests/run.sh` installs it).
//! The times from start to healthy are printed (`--nocapture` shows them).

#[allow(dead_code, unused_imports)]
mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;
use serde_json::Value;

use common::agent::Agent;
use common::runner::{Pilotfish, BIN};
use common::{eventually, free_port, http, text, Ports, CLUSTER_KEY};

const SUBNET: u8 = 41;
/// The one name the servers know each other by.
const NAME: &str = "consul.test";
/// An upper bound for anything cluster-wide, never an expectation: two
/// cores, other suites running alongside.
const LIMIT: Duration = Duration::from_secs(90);
/// What the example is told to keep, and how often it backs up.
const KEEP: usize = 3;
const BACKUP_EVERY: &str = "2s";

fn ip(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, SUBNET, n)
}

// ---------------------------------------------------------------- DNS

/// dnsmasq answering `NAME` with every server's address; killed on drop.
struct Dnsmasq {
    child: Child,
    addr: SocketAddr,
}

impl Dnsmasq {
    fn start(ips: &[Ipv4Addr]) -> Dnsmasq {
        let listen = ip(53);
        let port = free_port(&[listen], true, &[]);
        let mut cmd = Command::new("dnsmasq");
        cmd.args([
            "--no-daemon",
            "--conf-file=/dev/null",
            "--no-resolv",
            "--no-hosts",
        ])
        .args(["--pid-file=", "--bind-interfaces"])
        .arg(format!("--listen-address={listen}"))
        .arg(format!("--port={port}"));
        for a in ips {
            cmd.arg(format!("--host-record={NAME},{a}"));
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start dnsmasq ({e}): install Debian's dnsmasq-base (tests/run.sh does)"
                )
            });
        let mut dns = Dnsmasq {
            child,
            addr: SocketAddr::from((listen, port)),
        };
        let want: Vec<IpAddr> = ips.iter().map(|a| IpAddr::V4(*a)).collect();
        eventually("dnsmasq answers with every address", LIMIT, || {
            if let Ok(Some(status)) = dns.child.try_wait() {
                panic!("dnsmasq exited at start: {status}");
            }
            let got = resolve(NAME, dns.addr)?;
            if got == want {
                Ok(())
            } else {
                Err(format!("{NAME} is {got:?}"))
            }
        });
        dns
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// All addresses of `name` as the agent resolves it (sorted).
fn resolve(name: &str, server: SocketAddr) -> Result<Vec<IpAddr>, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?
        .block_on(pilotfish::discovery::resolve::resolve_all(
            name,
            Some(server),
        ))
}

// ---------------------------------------------------------------- the servers

/// The example as shipped; the tests change only the environment.
fn example() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config-examples/consul-server.toml");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Three supervisors of the example (index `i` runs server `s{i+1}` on
/// `127.0.41.{i+1}`), a fourth address for a client agent, one dnsmasq.
struct Servers {
    ports: Ports,
    dns: Dnsmasq,
    running: Vec<Option<Pilotfish>>,
    /// Holds every server's data dir and backups across restarts.
    data: tempfile::TempDir,
}

impl Servers {
    fn new() -> Servers {
        let ips: Vec<Ipv4Addr> = (1..=4).map(ip).collect();
        let http = free_port(&ips, false, &[]);
        let dns = free_port(&ips, true, &[http]);
        let server = free_port(&ips, false, &[http, dns]);
        Servers {
            ports: Ports { http, dns, server },
            dns: Dnsmasq::start(&ips[..3]),
            running: (0..3).map(|_| None).collect(),
            data: tempfile::tempdir().expect("temp dir"),
        }
    }

    fn backups(&self, i: usize) -> PathBuf {
        self.data.path().join(format!("s{}-backups", i + 1))
    }

    fn http_addr(&self, i: usize) -> SocketAddr {
        SocketAddr::from((ip(i as u8 + 1), self.ports.http))
    }

    /// Start supervisor `i` (again) on its data dir.
    fn start(&mut self, i: usize) {
        assert!(self.running[i].is_none(), "s{} runs already", i + 1);
        let n = i as u8 + 1;
        let (addr, node) = (ip(n).to_string(), format!("s{n}"));
        let data = self.data.path().join(&node);
        let backups = self.backups(i);
        let (http, dns, server) = (
            self.ports.http.to_string(),
            self.ports.dns.to_string(),
            self.ports.server.to_string(),
        );
        let resolver = self.dns.addr.to_string();
        let env = [
            ("CONSUL", NAME),
            ("CONSUL_BOOTSTRAP_EXPECT", "3"),
            ("CONSUL_DATA_DIR", data.to_str().expect("UTF-8 path")),
            ("CONSUL_BIND", &addr),
            ("CONSUL_CLIENT", &addr),
            ("CONSUL_HTTP_PORT", &http),
            ("CONSUL_DNS_PORT", &dns),
            ("CONSUL_SERVER_PORT", &server),
            ("CONSUL_BACKUP_DIR", backups.to_str().expect("UTF-8 path")),
            ("CONSUL_BACKUP_KEEP", &KEEP.to_string()),
            ("CONSUL_BACKUP_INTERVAL", BACKUP_EVERY),
            ("PILOTFISH_NODE", &node),
            ("PILOTFISH_RESOLVER", &resolver),
            ("PILOTFISH_ENCRYPT", CLUSTER_KEY),
        ];
        let pf = Pilotfish::start_with_env(&example(), &env);
        pf.wait_ready();
        self.running[i] = Some(pf);
    }

    fn supervisor(&self, i: usize) -> &Pilotfish {
        self.running[i].as_ref().expect("a running supervisor")
    }

    /// The `consul` job's health (`unknown` before its first check) and pid.
    fn consul_job(&self, i: usize) -> Result<(String, Option<u64>), String> {
        let out = self.supervisor(i).cli(&["status", "--json"]);
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        let status: Value = serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
        let job = status["jobs"]
            .as_array()
            .and_then(|jobs| jobs.iter().find(|j| j["name"] == "consul"))
            .ok_or_else(|| format!("no consul job in {status}"))?;
        Ok((
            job["health"].as_str().unwrap_or("none").to_string(),
            job["pid"].as_u64(),
        ))
    }

    fn health(&self, i: usize) -> Result<String, String> {
        self.consul_job(i).map(|(h, _)| h)
    }

    /// Wait until every one of `among` answers with a leader and three
    /// voters (what the hook checks, asked directly).
    fn wait_formed(&self, among: &[usize]) {
        eventually("a leader and three voters on every server", LIMIT, || {
            for &i in among {
                let leader = self.get_json(i, "/v1/status/leader")?;
                let peers = self.peers(i)?;
                if leader.as_str().unwrap_or_default().is_empty() || peers != 3 {
                    return Err(format!("s{}: leader {leader}, {peers} peers", i + 1));
                }
            }
            Ok(())
        });
    }

    /// Wait until the `consul` job of every one of `among` is healthy.
    fn wait_healthy(&self, among: &[usize]) {
        eventually("every consul job healthy", LIMIT, || {
            let seen: Vec<String> = among
                .iter()
                .map(|&i| self.health(i).unwrap_or_else(|e| e))
                .collect();
            if seen.iter().all(|h| h == "healthy") {
                Ok(())
            } else {
                Err(format!("{among:?}: {seen:?}"))
            }
        });
    }

    fn get_json(&self, i: usize, path: &str) -> Result<Value, String> {
        match http(self.http_addr(i), "GET", path, b"") {
            Ok((200, _, body)) => serde_json::from_slice(&body).map_err(|e| e.to_string()),
            Ok((status, _, body)) => Err(format!("GET {path}: {status} {}", text(&body))),
            Err(e) => Err(format!("GET {path}: {e}")),
        }
    }

    /// The server every one of `among` names as leader (the same one, and
    /// one of them); index into the servers.
    fn agreed_leader(&self, among: &[usize]) -> usize {
        eventually("one leader every server names", LIMIT, || {
            let seen: Vec<String> = among
                .iter()
                .map(|&i| {
                    self.get_json(i, "/v1/status/leader")
                        .map(|v| v.as_str().unwrap_or_default().to_string())
                })
                .collect::<Result<_, _>>()?;
            let leader = seen[0]
                .split(':')
                .next()
                .and_then(|a| a.parse::<Ipv4Addr>().ok())
                .map(|a| usize::from(a.octets()[3]) - 1);
            match leader {
                Some(l) if among.contains(&l) && seen.iter().all(|s| *s == seen[0]) => Ok(l),
                _ => Err(format!("{among:?} see leaders {seen:?}")),
            }
        })
    }

    /// Every member's status as server `i` sees it (`1` alive, `4` failed).
    fn member_status(&self, i: usize, name: &str) -> Result<u64, String> {
        let members = self.get_json(i, "/v1/agent/members")?;
        members
            .as_array()
            .and_then(|ms| ms.iter().find(|m| m["Name"] == name))
            .and_then(|m| m["Status"].as_u64())
            .ok_or_else(|| format!("s{} does not list {name}: {members}", i + 1))
    }

    fn peers(&self, i: usize) -> Result<usize, String> {
        let peers = self.get_json(i, "/v1/status/peers")?;
        peers
            .as_array()
            .map(Vec::len)
            .ok_or_else(|| format!("peers: {peers}"))
    }

    /// The container dies: SIGKILL to the supervisor and to everything it
    /// started (each job runs in a process group of its own), read from
    /// /proc before anything is killed.
    fn crash(&mut self, i: usize) {
        let mut pf = self.running[i].take().expect("a running supervisor");
        let pid = i32::try_from(pf.child.id()).expect("a pid");
        let family = descendants(pid);
        let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
        for p in family {
            let _ = killpg(Pid::from_raw(p), Signal::SIGKILL);
            let _ = kill(Pid::from_raw(p), Signal::SIGKILL);
        }
        let _ = pf.child.wait();
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        for (i, pf) in self.running.iter().enumerate() {
            if let Some(pf) = pf {
                let log = pf.log();
                let lines: Vec<&str> = log.lines().collect();
                eprintln!(
                    "----- supervisor s{}, last 80 lines -----\n{}",
                    i + 1,
                    lines[lines.len().saturating_sub(80)..].join("\n")
                );
            }
        }
    }
}

/// Every process below `pid` (children, theirs, ...), from /proc.
fn descendants(pid: i32) -> Vec<i32> {
    let mut parents = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(p) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // `pid (comm) state ppid ...`; comm may hold spaces and parentheses.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|s| s.parse::<i32>().ok());
        if let Some(ppid) = ppid {
            parents.push((p, ppid));
        }
    }
    let (mut out, mut frontier) = (Vec::new(), vec![pid]);
    while let Some(p) = frontier.pop() {
        for &(child, parent) in &parents {
            if parent == p {
                out.push(child);
                frontier.push(child);
            }
        }
    }
    out
}

/// SIGSTOP now, SIGCONT on drop (a failing test leaves nothing stopped).
struct Stopped(Pid);

impl Stopped {
    fn new(pid: u64) -> Stopped {
        let pid = Pid::from_raw(i32::try_from(pid).expect("a pid"));
        kill(pid, Signal::SIGSTOP).expect("SIGSTOP the agent");
        Stopped(pid)
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        let _ = kill(self.0, Signal::SIGCONT);
    }
}

/// The backups in `dir`, oldest first.
fn backups(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.ends_with(".snap"))
        .collect();
    names.sort();
    names
}

fn cli(args: &[&str], http_addr: SocketAddr) -> Output {
    Command::new(BIN)
        .args(args)
        .args(["--http-addr", &http_addr.to_string()])
        .env_remove("CONSUL_HTTP_TOKEN")
        .output()
        .expect("run pilotfish")
}

fn says(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

// ---------------------------------------------------------------- the tests

#[test]
fn three_supervisors_form_keep_and_heal_a_cluster_through_one_dns_name() {
    let mut servers = Servers::new();
    let started = Instant::now();
    for i in 0..3 {
        servers.start(i);
    }
    servers.wait_formed(&[0, 1, 2]);
    let formed = started.elapsed();
    servers.wait_healthy(&[0, 1, 2]);
    eprintln!(
        "autopilot_cluster: three servers formed a cluster {formed:.1?} after start; \
         all three health hooks healthy {:.1?} after start (hooks run every 5 s)",
        started.elapsed()
    );
    let leader = servers.agreed_leader(&[0, 1, 2]);
    let follower = (0..3).rev().find(|&i| i != leader).expect("a follower");

    // Backups: verified snapshots under sortable names, the oldest deleted
    // beyond KEEP.
    let dir = servers.backups(0);
    let first = eventually("a first backup", LIMIT, || {
        backups(&dir).first().cloned().ok_or("none yet".to_string())
    });
    let kept = eventually("rotation past the first backup", LIMIT, || {
        let names = backups(&dir);
        if names.len() == KEEP && !names.contains(&first) {
            Ok(names)
        } else {
            Err(format!("{names:?}"))
        }
    });
    let newest = std::fs::read(dir.join(&kept[KEEP - 1])).expect("the newest backup");
    let file = pilotfish::discovery::snapshot::decode(&newest)
        .unwrap_or_else(|e| panic!("{} is no snapshot: {e}", kept[KEEP - 1]));
    assert!(file.index > 0, "a backup of an empty state");

    // A stopped agent answers nothing: its hook fails (at its timeout), the
    // other two stay healthy; going on, it is healthy again.
    let (_, agent) = servers.consul_job(follower).expect("status");
    let stopped = Stopped::new(agent.expect("the agent's pid"));
    eventually("the stopped agent's hook fails", LIMIT, || {
        match servers.health(follower)?.as_str() {
            "unhealthy" => Ok(()),
            other => Err(other.to_string()),
        }
    });
    let others: Vec<usize> = (0..3).filter(|&i| i != follower).collect();
    servers.wait_healthy(&others);
    drop(stopped);
    servers.wait_healthy(&[0, 1, 2]);

    // The follower's container dies: the other two keep a leader and their
    // hooks stay healthy (the dead server is still one of the three voters).
    servers.crash(follower);
    let name = format!("s{}", follower + 1);
    eventually("the survivors see the crashed server failed", LIMIT, || {
        for &i in &others {
            match servers.member_status(i, &name)? {
                4 => {}
                s => return Err(format!("s{} sees {name} with status {s}", i + 1)),
            }
        }
        Ok(())
    });
    let survivors_leader = servers.agreed_leader(&others);
    assert!(others.contains(&survivors_leader));
    servers.wait_healthy(&others);
    for &i in &others {
        assert_eq!(servers.peers(i), Ok(3), "s{} peers", i + 1);
    }

    // Started again on its data dir, it rejoins through the name.
    let restarted = Instant::now();
    servers.start(follower);
    servers.wait_formed(&[0, 1, 2]);
    let rejoined = restarted.elapsed();
    servers.wait_healthy(&[0, 1, 2]);
    eprintln!(
        "autopilot_cluster: {name} restarted on its data dir: back in the cluster {rejoined:.1?} \
         after its start, all three health hooks healthy {:.1?} after its start",
        restarted.elapsed()
    );
    servers.agreed_leader(&[0, 1, 2]);
    eventually("every server sees the restarted one alive", LIMIT, || {
        for i in 0..3 {
            match servers.member_status(i, &name)? {
                1 => {}
                s => return Err(format!("s{} sees {name} with status {s}", i + 1)),
            }
        }
        Ok(())
    });
    let said = says(&cli(&["rejoin", NAME], servers.http_addr(follower)));
    assert!(said.contains("not joining"), "{said}");

    // A lone client agent (no --retry-join) on the fourth address: `rejoin`
    // fails on a name with nobody behind it, then joins the cluster's name.
    let lone_dir = servers.data.path().join("c4");
    let client = Agent::on(&ip(4).to_string())
        .ports(servers.ports.http, servers.ports.dns, servers.ports.server)
        .args(["--node", "c4", "--bind", &ip(4).to_string()])
        .arg("--data-dir")
        .arg(&lone_dir)
        .env("PILOTFISH_ENCRYPT", Some(CLUSTER_KEY))
        .env("PILOTFISH_RESOLVER", Some(&servers.dns.addr.to_string()))
        .start();
    let nobody = ip(5).to_string();
    let out = cli(&["rejoin", &nobody], client.http);
    assert_eq!(out.status.code(), Some(1), "{}", says(&out));
    assert!(
        says(&out).contains("c4 is alone and could not join"),
        "{}",
        says(&out)
    );
    let out = cli(&["rejoin", NAME], client.http);
    assert!(out.status.success(), "{}", says(&out));
    assert!(
        says(&out).contains("c4 was alone: joined consul.test"),
        "{}",
        says(&out)
    );
    eventually("the servers see c4", LIMIT, || {
        match servers.member_status(0, "c4")? {
            1 => Ok(()),
            s => Err(format!("status {s}")),
        }
    });
    let said = says(&cli(&["rejoin", NAME], client.http));
    assert!(said.contains("c4 sees 3 other alive servers"), "{said}");
}

#[test]
fn the_health_hook_fails_with_one_line_when_the_agent_is_down() {
    let addr = SocketAddr::from((ip(250), free_port(&[ip(250)], false, &[])));
    let out = cli(&["check", "peers", "--expect", "3"], addr);
    assert_eq!(out.status.code(), Some(1), "{}", says(&out));
    let said = says(&out);
    assert_eq!(said.trim().lines().count(), 1, "{said}");
    assert!(
        said.contains(&format!("cannot reach the Consul agent at http://{addr}")),
        "{said}"
    );
}
