//! Crash tests for the data dir (the raft log in `raft-log/`, the state
//! snapshot in `raft-snapshot.json`).
//!
//! Library level: a lone server on a data dir, written to through
//! `Server::write`, stopped without a leave and reopened: the same state,
//! indexes included, from the log alone and from a snapshot plus the log.
//! Process level: the real `pilotfish agent --data-dir`, killed with SIGKILL
//! in the middle of a PUT loop and restarted.

// Only the HTTP client of the cluster harness is used here.
#[allow(dead_code, unused_imports)]
mod common;

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command as Process, Stdio};
use std::time::{Duration, Instant};

use common::Response;
use pilotfish::discovery::server::raft::state_machine::SNAPSHOT_FILE;
use pilotfish::discovery::server::state::session::{SessionBehavior, SessionRequest};
use pilotfish::discovery::server::state::{catalog::Registration, Command, State};
use pilotfish::discovery::server::{Server, ServerConfig};

fn config(dir: &Path) -> ServerConfig {
    ServerConfig {
        node: "n1".into(),
        data_dir: Some(dir.to_path_buf()),
        ..ServerConfig::default()
    }
}

async fn open(dir: &Path) -> Server {
    Server::open(config(dir)).await.expect("open the data dir")
}

/// Apply `cmd`; a refused command still used an index, so answer the last one.
async fn write(server: &Server, cmd: Command) -> u64 {
    match server.write(cmd).await {
        Ok(w) => w.index,
        Err(_) => server.last_index(),
    }
}

fn set(key: &str, value: &str) -> Command {
    Command::KvSet {
        key: key.into(),
        value: value.as_bytes().to_vec(),
        flags: 0,
    }
}

fn register(node: &str) -> Command {
    Command::Register(Registration {
        node: node.into(),
        node_id: String::new(),
        address: "127.0.0.1".into(),
        tagged_addresses: Default::default(),
        node_meta: Default::default(),
        skip_node_update: false,
        service: None,
        checks: Vec::new(),
    })
}

fn session(id: &str, node: &str) -> Command {
    Command::SessionCreate(SessionRequest {
        id: id.into(),
        name: "lock".into(),
        node: node.into(),
        node_checks: Some(Vec::new()),
        service_checks: Vec::new(),
        lock_delay_ns: None,
        behavior: SessionBehavior::Delete,
        ttl: "30s".into(),
        ttl_ns: 30_000_000_000,
    })
}

/// A mixed workload: KV sets, overwrites, deletes, a tree delete, a node,
/// a session holding a lock, and a refused CAS.
async fn workload(server: &Server, rounds: usize) {
    write(server, register("n2")).await;
    write(
        server,
        session("11111111-2222-3333-4444-555555555555", "n2"),
    )
    .await;
    let acquired = server
        .write(Command::KvAcquire {
            key: "service/leader".into(),
            value: b"n2".to_vec(),
            flags: 0,
            session: "11111111-2222-3333-4444-555555555555".into(),
        })
        .await
        .expect("acquire");
    assert_eq!(
        acquired.outcome,
        pilotfish::discovery::server::state::Outcome::Bool(true),
        "the lock was taken (or is still held by the same session)"
    );
    for i in 0..rounds {
        write(server, set(&format!("k{i}"), &format!("v{i}"))).await;
        if i % 3 == 0 {
            write(server, set(&format!("k{i}"), &format!("v{i}-again"))).await;
        }
        if i % 5 == 0 {
            write(
                server,
                Command::KvDelete {
                    key: format!("k{i}"),
                },
            )
            .await;
        }
        if i % 50 == 0 {
            write(server, set(&format!("tree/{i}/a"), "x")).await;
            write(
                server,
                Command::KvDeleteTree {
                    prefix: format!("tree/{i}/"),
                },
            )
            .await;
        }
    }
    let refused = server
        .write(Command::KvCas {
            key: "k1".into(),
            value: b"never".to_vec(),
            flags: 0,
            index: 1,
        })
        .await;
    assert!(
        matches!(refused, Ok(ref w) if w.outcome == pilotfish::discovery::server::state::Outcome::Bool(false)),
        "{refused:?}"
    );
}

/// The KV and session parts of the state (the node's own catalog entry is
/// re-registered at every start, which is a no-op when unchanged).
/// Key, value, CreateIndex, ModifyIndex.
type KvRow = (String, Vec<u8>, u64, u64);

fn kv_view(s: &State) -> (Vec<KvRow>, u64, usize) {
    let (entries, index) = s.kv_list("");
    (
        entries
            .iter()
            .map(|e| {
                (
                    e.key.clone(),
                    e.value.clone(),
                    e.create_index,
                    e.modify_index,
                )
            })
            .collect(),
        index,
        s.sessions().0.len(),
    )
}

/// Stop `server`, reopen its dir, check the KV and sessions match.
async fn restart_and_compare(server: Server, dir: &Path) -> Server {
    let before = server.read(kv_view);
    let applied = server.read(|s| s.last_applied());
    server.shutdown().await;
    drop(server);
    let server = open(dir).await;
    assert_eq!(server.read(kv_view), before, "recovered state differs");
    assert!(
        server.read(|s| s.last_applied()) >= applied,
        "the applied index went back"
    );
    server
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_server_has_the_same_state_and_indexes() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let server = open(tmp.path()).await;
    workload(&server, 300).await;
    let server = restart_and_compare(server, tmp.path()).await;
    // And again after more writes on the reopened log.
    workload(&server, 50).await;
    restart_and_compare(server, tmp.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_then_more_writes_recover_and_the_log_is_purged() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let server = open(tmp.path()).await;
    workload(&server, 200).await;
    server
        .raft()
        .trigger()
        .snapshot()
        .await
        .expect("trigger a snapshot");
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.raft().metrics().borrow().snapshot.is_none() {
        assert!(Instant::now() < deadline, "no snapshot within 10 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(tmp.path().join(SNAPSHOT_FILE).is_file());
    for i in 0..20 {
        write(&server, set(&format!("after/{i}"), "y")).await;
    }
    let server = restart_and_compare(server, tmp.path()).await;
    assert_eq!(server.read(|s| s.kv_list("after/").0.len()), 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_snapshot_is_a_clear_error_naming_the_file() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let server = open(tmp.path()).await;
    workload(&server, 10).await;
    server.raft().trigger().snapshot().await.expect("snapshot");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !tmp.path().join(SNAPSHOT_FILE).is_file() {
        assert!(Instant::now() < deadline, "no snapshot file within 10 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.shutdown().await;
    drop(server);
    std::fs::write(tmp.path().join(SNAPSHOT_FILE), b"{\"meta\": garbage").expect("damage");
    let e = Server::open(config(tmp.path()))
        .await
        .err()
        .expect("a damaged snapshot must be refused")
        .to_string();
    assert!(e.contains(SNAPSHOT_FILE) && e.contains("damaged"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_open_of_the_same_data_dir_is_refused_as_in_use() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let _first = open(tmp.path()).await;
    let e = Server::open(config(tmp.path()))
        .await
        .err()
        .expect("the second open must fail")
        .to_string();
    assert!(e.contains("in use by another process"), "{e}");
}

#[tokio::test]
async fn an_unusable_data_dir_path_is_a_clear_error() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let file = tmp.path().join("a-file");
    std::fs::write(&file, b"x").expect("write");
    let e = Server::open(config(&file))
        .await
        .err()
        .expect("a file is not a data dir")
        .to_string();
    assert!(e.contains("a-file"), "{e}");
}

// ---------------------------------------------------------------- SIGKILL, the agent

/// The real agent on loopback ports, killed with SIGKILL on drop.
struct Agent {
    child: Child,
    http: SocketAddr,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl Agent {
    fn start(data_dir: &Path, http_port: u16, server_port: u16) -> Agent {
        let dns_port = free_port();
        let child = Process::new(env!("CARGO_BIN_EXE_pilotfish"))
            .args(["agent", "--server"])
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--http-port", &http_port.to_string()])
            .args(["--dns-port", &dns_port.to_string()])
            .args([
                "--client",
                "127.0.0.1",
                "--bind",
                "127.0.0.1",
                "--node",
                "n1",
            ])
            .args(["--server-port", &server_port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start pilotfish agent");
        let mut agent = Agent {
            child,
            http: SocketAddr::from(([127, 0, 0, 1], http_port)),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = agent.child.try_wait() {
                panic!("pilotfish agent exited at start: {status}");
            }
            if let Ok((200, _, _)) = agent.request("GET", "/v1/status/leader", b"") {
                return agent;
            }
            assert!(
                Instant::now() < deadline,
                "the agent did not answer within 20 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn request(&self, method: &str, path: &str, body: &[u8]) -> std::io::Result<Response> {
        http(self.http, method, path, body)
    }
}

/// One HTTP/1.1 request on its own connection (the cluster tests' client).
fn http(addr: SocketAddr, method: &str, path: &str, body: &[u8]) -> std::io::Result<Response> {
    common::http_with_timeout(addr, method, path, body, Duration::from_secs(10))
        .map_err(|e| std::io::Error::other(e.to_string()))
}

fn header(headers: &[(String, String)], name: &str) -> Option<String> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.clone())
}

fn agent_has_data_dir() -> bool {
    Process::new(env!("CARGO_BIN_EXE_pilotfish"))
        .args(["agent", "--help"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("--data-dir"))
        .unwrap_or(false)
}

#[test]
fn agent_killed_mid_write_loop_keeps_every_acknowledged_put() {
    assert!(
        agent_has_data_dir(),
        "`pilotfish agent --help` does not list --data-dir"
    );
    let tmp = tempfile::tempdir().expect("temp dir");
    let data: PathBuf = tmp.path().join("data");
    let port = free_port();
    let server_port = free_port();
    let agent = Agent::start(&data, port, server_port);

    // PUT k0, k1, ... from a thread; kill -9 the agent while it runs.
    let addr = agent.http;
    let writer = std::thread::spawn(move || {
        let mut acked = Vec::new();
        for i in 0.. {
            match http(
                addr,
                "PUT",
                &format!("/v1/kv/k{i}"),
                format!("v{i}").as_bytes(),
            ) {
                Ok((200, _, body)) if body.trim_ascii() == b"true" => acked.push(i),
                Ok((status, _, body)) => {
                    panic!("PUT k{i}: HTTP {status} {}", String::from_utf8_lossy(&body))
                }
                Err(_) => break, // the agent is gone
            }
        }
        acked
    });
    let before_kill_index = loop {
        std::thread::sleep(Duration::from_millis(100));
        let (status, headers, _) = agent.request("GET", "/v1/kv/k0", b"").expect("GET k0");
        if status == 200 {
            let index: u64 = header(&headers, "x-consul-index")
                .and_then(|v| v.parse().ok())
                .expect("X-Consul-Index");
            // Let the loop run a little past the first read.
            std::thread::sleep(Duration::from_millis(1500));
            break index;
        }
    };
    drop(agent); // SIGKILL
    let acked = writer.join().expect("writer thread");
    assert!(
        acked.len() > 10,
        "only {} writes were acknowledged",
        acked.len()
    );
    eprintln!(
        "{} PUTs acknowledged before SIGKILL; k0 was at index {before_kill_index}",
        acked.len()
    );

    let agent = Agent::start(&data, port, server_port);
    for &i in &acked {
        let (status, _, body) = agent
            .request("GET", &format!("/v1/kv/k{i}?raw"), b"")
            .expect("GET");
        assert_eq!(
            (status, body),
            (200, format!("v{i}").into_bytes()),
            "acknowledged k{i} after the restart"
        );
    }
    // A blocking query with the pre-crash index answers at once (k0's
    // ModifyIndex is unchanged) and the index did not go backwards.
    let started = Instant::now();
    let (status, headers, _) = agent
        .request(
            "GET",
            &format!("/v1/kv/k0?index={}&wait=5s", before_kill_index - 1),
            b"",
        )
        .expect("blocking GET");
    assert_eq!(status, 200);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "the blocking GET waited"
    );
    let index: u64 = header(&headers, "x-consul-index")
        .and_then(|v| v.parse().ok())
        .expect("X-Consul-Index");
    assert!(
        index >= before_kill_index,
        "index went back: {index} < {before_kill_index}"
    );
}
