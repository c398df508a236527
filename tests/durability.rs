//! Crash tests for the data dir (the raft log in `raft-log/`, the state
//! snapshot in `raft-snapshot`).
//!
//! Library level: a lone server on a data dir, written to through
//! `Server::write`, stopped without a leave and reopened: the same state,
//! indexes included, from the log alone and from a snapshot plus the log.
//! Process level: the real `pilotfish agent --data-dir`, killed with SIGKILL
//! in the middle of a PUT loop and restarted.

// Only the HTTP client of the cluster harness is used here.
#[allow(dead_code, unused_imports)]
mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command as Process, Stdio};
use std::time::{Duration, Instant};

use common::agent::{free_port, Agent};
use common::Response;
use pilotfish::discovery::server::raft::snapshot_file::SNAPSHOT_FILE;
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

/// Snapshots are taken by the log's size in bytes, not its entry count:
/// with a data dir and in memory (`--dev`), none below the threshold, and
/// past it snapshots follow and the log they cover is purged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_past_the_threshold_in_bytes_is_snapshotted_and_purged() {
    for dev in [false, true] {
        let tmp = tempfile::tempdir().expect("temp dir");
        let cfg = ServerConfig {
            snapshot_threshold: 16 * 1024,
            data_dir: (!dev).then(|| tmp.path().to_path_buf()),
            ..config(tmp.path())
        };
        let server = Server::open(cfg).await.expect("open");
        // About 1.5 KiB an entry: 12 KiB of log, under the threshold.
        let value = "v".repeat(1024);
        for i in 0..8 {
            write(&server, set(&format!("big/{i}"), &value)).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            server.raft().metrics().borrow().snapshot,
            None,
            "dev: {dev}"
        );
        // Small entries, more than a snapshot keeps of the log (1024).
        for i in 0..1500 {
            write(&server, set(&format!("small/{i}"), "x")).await;
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (snapshot, purged) = {
                let m = server.raft().metrics();
                let m = m.borrow();
                (m.snapshot, m.purged)
            };
            if snapshot.is_some_and(|s| s.index > 1024) && purged.is_some() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "dev: {dev}: snapshot {snapshot:?}, purged {purged:?} after 30 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if !dev {
            assert!(tmp.path().join(SNAPSHOT_FILE).is_file());
            let server = restart_and_compare(server, tmp.path()).await;
            assert_eq!(server.read(|s| s.kv_list("small/").0.len()), 1500);
        }
    }
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

/// Take a snapshot and wait until its file is written.
async fn snapshot_now(server: &Server, dir: &Path) {
    let before = server.raft().metrics().borrow().snapshot;
    server.raft().trigger().snapshot().await.expect("snapshot");
    let deadline = Instant::now() + Duration::from_secs(30);
    while server.raft().metrics().borrow().snapshot == before || !dir.join(SNAPSHOT_FILE).is_file()
    {
        assert!(Instant::now() < deadline, "no snapshot file within 30 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `n` keys `key/<i>` = `value-<i>`, written concurrently (so that group
/// commit puts many in one entry).
async fn many_keys(server: &Server, n: usize) {
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..n {
        let server = server.clone();
        tasks.spawn(async move {
            write(&server, set(&format!("key/{i}"), &format!("value-{i}"))).await
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("a write task");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flipped_byte_in_the_snapshot_fails_its_checksum() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let server = open(tmp.path()).await;
    write(&server, set("flipme-aaaa", "x")).await;
    snapshot_now(&server, tmp.path()).await;
    server.shutdown().await;
    drop(server);
    // Rename the key by one byte, keeping the JSON valid: in the state's
    // JSON as written now, or in an earlier build's array of byte numbers.
    let path = tmp.path().join(SNAPSHOT_FILE);
    let text = String::from_utf8(std::fs::read(&path).expect("read")).expect("UTF-8");
    let flipped = if text.contains("flipme-aaaa") {
        text.replacen("flipme-aaaa", "flipme-abaa", 1)
    } else {
        text.replacen("97,97,97,97", "97,98,97,97", 1)
    };
    assert_ne!(text, flipped, "the key is not in {}", path.display());
    std::fs::write(&path, flipped).expect("damage");
    let e = Server::open(config(tmp.path()))
        .await
        .err()
        .expect("a snapshot that fails its checksum must be refused")
        .to_string();
    assert!(e.contains(SNAPSHOT_FILE) && e.contains("checksum"), "{e}");
    assert!(e.contains("rejoin"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_of_small_keys_takes_about_their_json_size() {
    const KEYS: usize = 20_000;
    let tmp = tempfile::tempdir().expect("temp dir");
    let server = open(tmp.path()).await;
    many_keys(&server, KEYS).await;
    snapshot_now(&server, tmp.path()).await;
    let bytes = std::fs::metadata(tmp.path().join(SNAPSHOT_FILE))
        .expect("the snapshot file")
        .len();
    eprintln!(
        "snapshot of {KEYS} keys: {bytes} bytes, {} per key",
        bytes / KEYS as u64
    );
    // A key's JSON (key, base64 value, flags, session, three indexes) is
    // about 120 bytes; the state's JSON as an array of byte numbers took
    // about 4 times that.
    assert!(bytes < 200 * KEYS as u64, "{bytes} bytes for {KEYS} keys");
    // And it loads.
    let server = restart_and_compare(server, tmp.path()).await;
    assert_eq!(server.read(|s| s.kv_list("key/").0.len()), KEYS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_meta_json_or_log_segment_is_a_clear_error() {
    // meta.json: the vote and the purge point.
    let tmp = tempfile::tempdir().expect("temp dir");
    let server = open(tmp.path()).await;
    workload(&server, 10).await;
    server.shutdown().await;
    drop(server);
    std::fs::remove_file(tmp.path().join("raft-log/meta.json")).expect("remove meta.json");
    let e = Server::open(config(tmp.path()))
        .await
        .err()
        .expect("a log without meta.json must be refused")
        .to_string();
    assert!(e.contains("meta.json is missing"), "{e}");

    // A segment: values of 512 KiB fill the first one (16 MiB) quickly.
    let tmp = tempfile::tempdir().expect("temp dir");
    let server = open(tmp.path()).await;
    let value = "v".repeat(512 * 1024);
    for i in 0..40 {
        write(&server, set(&format!("big/{i}"), &value)).await;
    }
    server.shutdown().await;
    drop(server);
    let mut segments: Vec<PathBuf> = std::fs::read_dir(tmp.path().join("raft-log"))
        .expect("the log dir")
        .map(|e| e.expect("an entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "wal"))
        .collect();
    segments.sort();
    assert!(segments.len() >= 2, "{segments:?}");
    std::fs::remove_file(&segments[0]).expect("remove the first segment");
    let e = Server::open(config(tmp.path()))
        .await
        .err()
        .expect("a log without its first segment must be refused")
        .to_string();
    assert!(e.contains("are missing") && e.contains("segment"), "{e}");
}

// ---------------------------------------------------------------- SIGKILL, the agent

/// The real agent on fixed loopback ports (a restart keeps its
/// addresses), killed with SIGKILL on drop.
fn start(data_dir: &Path, ports: (u16, u16, u16)) -> Agent {
    Agent::on("127.0.0.1")
        .ports(ports.0, ports.1, ports.2)
        .args(["--server", "--bind", "127.0.0.1", "--node", "n1"])
        .arg("--data-dir")
        .arg(data_dir)
        .start()
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
    let ip = "127.0.0.1";
    let ports = (free_port(ip), free_port(ip), free_port(ip));
    let agent = start(&data, ports);

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
    let index_of = |key: &str| -> Result<u64, String> {
        match agent.request("GET", &format!("/v1/kv/{key}"), b"") {
            Ok((200, headers, _)) => header(&headers, "x-consul-index")
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| format!("{key}: no X-Consul-Index")),
            other => Err(format!("{key}: {other:?}")),
        }
    };
    let before_kill_index =
        common::eventually("k0 is written", Duration::from_secs(20), || index_of("k0"));
    // Let the loop run well past the first read: the kill lands on a
    // loop that has acknowledged many writes and is making more.
    common::eventually("k50 is written", Duration::from_secs(30), || {
        index_of("k50")
    });
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

    let agent = start(&data, ports);
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

// ---------------------------------------------------------------- damage and a full disk, the agent

/// `pilotfish agent` on loopback ports with `data_dir`, run through
/// `prefix` (e.g. `nsenter`), its stderr in a file.
fn spawn_agent(prefix: &[&str], data_dir: &Path, http_port: u16, stderr: &Path) -> Child {
    let mut args: Vec<String> = prefix.iter().map(|s| s.to_string()).collect();
    args.push(env!("CARGO_BIN_EXE_pilotfish").to_string());
    let command = args.remove(0);
    Process::new(command)
        .args(args)
        .args(["agent", "--server", "--node", "n1"])
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--http-port", &http_port.to_string()])
        .args(["--dns-port", &free_port("127.0.0.1").to_string()])
        .args(["--server-port", &free_port("127.0.0.1").to_string()])
        .args(["--client", "127.0.0.1", "--bind", "127.0.0.1"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(stderr).expect("the stderr file"))
        .spawn()
        .expect("start pilotfish agent")
}

/// Wait until `child` exits; `None` if it still runs after `limit`.
fn exit_within(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

fn wait_for_http(child: &mut Child, addr: SocketAddr, stderr: &Path) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            panic!(
                "the agent exited at start ({status}): {}",
                std::fs::read_to_string(stderr).unwrap_or_default()
            );
        }
        if let Ok((200, _, _)) = http(addr, "GET", "/v1/status/leader", b"") {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the agent did not answer within 20 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_byte_flipped_mid_log_stops_the_agent_naming_the_file_and_offset() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let data = tmp.path().join("data");
    let port = free_port("127.0.0.1");
    let log = tmp.path().join("agent.log");
    let mut child = spawn_agent(&[], &data, port, &log);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    wait_for_http(&mut child, addr, &log);
    // One PUT at a time: every key is its own batch, synced and
    // acknowledged before the next one is written.
    for i in 0..300 {
        let (status, _, _) = http(addr, "PUT", &format!("/v1/kv/k{i}"), b"v").expect("PUT");
        assert_eq!(status, 200);
    }
    let _ = child.kill();
    let _ = child.wait();

    // Flip one byte of k100's entry, in the first segment.
    let segment = std::fs::read_dir(data.join("raft-log"))
        .expect("the log dir")
        .map(|e| e.expect("an entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "wal"))
        .min()
        .expect("a segment");
    let mut bytes = std::fs::read(&segment).expect("read the segment");
    let needle = br#""key":"k100""#;
    let at = bytes
        .windows(needle.len())
        .position(|w| w == needle)
        .expect("k100 in the log");
    bytes[at + 8] ^= 0x01;
    std::fs::write(&segment, &bytes).expect("damage the segment");

    let mut child = spawn_agent(&[], &data, port, &log);
    let status = exit_within(&mut child, Duration::from_secs(20));
    let output = std::fs::read_to_string(&log).unwrap_or_default();
    if status.is_none() {
        let lost = (100..300)
            .filter(|i| {
                !matches!(
                    http(addr, "GET", &format!("/v1/kv/k{i}"), b""),
                    Ok((200, _, _))
                )
            })
            .count();
        let _ = child.kill();
        let _ = child.wait();
        panic!("the agent started on a damaged log; {lost} acknowledged keys are gone");
    }
    assert!(!status.expect("exited").success());
    assert!(output.contains("the raft log is damaged"), "{output}");
    assert!(output.contains(&segment.display().to_string()), "{output}");
    assert!(output.contains("at offset "), "{output}");
    assert!(output.contains("rejoin"), "{output}");
}

/// Whether this process may mount file systems in a mount namespace of
/// its own (root, `unshare` and `nsenter` present).
fn can_mount() -> bool {
    nix::unistd::Uid::effective().is_root()
        && Process::new("unshare")
            .args(["-m", "--propagation", "private", "true"])
            .status()
            .is_ok_and(|s| s.success())
}

/// A 24 MiB tmpfs at `dir`, mounted in a private mount namespace kept by a
/// `sleep` (killed on drop, which unmounts it). Reach it as
/// `/proc/<pid>/root/<dir>`, run in it with `nsenter -t <pid> -m`.
struct SmallDisk {
    holder: Child,
}

impl SmallDisk {
    fn mount(dir: &Path) -> SmallDisk {
        let script = format!(
            "mount -t tmpfs -o size=24m tmpfs '{}' && echo mounted && exec sleep 600",
            dir.display()
        );
        let mut holder = Process::new("unshare")
            .args(["-m", "--propagation", "private", "sh", "-c", &script])
            .stdout(Stdio::piped())
            .spawn()
            .expect("unshare");
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(holder.stdout.take().expect("stdout")),
            &mut line,
        )
        .expect("read");
        assert_eq!(line.trim(), "mounted", "mounting a tmpfs failed");
        SmallDisk { holder }
    }

    fn path(&self, inside: &Path) -> PathBuf {
        let inside = inside.strip_prefix("/").unwrap_or(inside);
        PathBuf::from(format!("/proc/{}/root", self.holder.id())).join(inside)
    }

    fn nsenter(&self) -> Vec<String> {
        ["nsenter", "-t", &self.holder.id().to_string(), "-m", "--"]
            .map(String::from)
            .to_vec()
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}

#[test]
fn a_full_disk_stops_the_agent_naming_the_cause_once_and_a_restart_recovers() {
    if !can_mount() {
        eprintln!("skipped: mounting a small tmpfs needs root and unshare -m");
        return;
    }
    let tmp = tempfile::tempdir().expect("temp dir");
    let disk = SmallDisk::mount(tmp.path());
    // 6 of the 24 MiB taken: the first segment (16 MiB, preallocated)
    // fits, the second does not.
    let filler = disk.path(&tmp.path().join("filler"));
    std::fs::write(&filler, vec![1u8; 6 << 20]).expect("the filler");
    let data = tmp.path().join("data");
    let port = free_port("127.0.0.1");
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let log = std::env::temp_dir().join(format!("pilotfish-enospc-{}.log", std::process::id()));
    let nsenter = disk.nsenter();
    let prefix: Vec<&str> = nsenter.iter().map(String::as_str).collect();
    let mut child = spawn_agent(&prefix, &data, port, &log);
    wait_for_http(&mut child, addr, &log);

    // Four writers of 192 KiB values until the disk is full.
    let value = vec![b'x'; 192 << 10];
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let value = value.clone();
            std::thread::spawn(move || {
                let (mut acked, mut refused) = (Vec::new(), Vec::new());
                for i in 0..200 {
                    let key = format!("w{w}/{i}");
                    match http(addr, "PUT", &format!("/v1/kv/{key}"), &value) {
                        Ok((200, _, _)) => acked.push(key),
                        Ok((status, _, body)) => {
                            refused.push((status, String::from_utf8_lossy(&body).into_owned()))
                        }
                        Err(_) => break, // the agent is gone
                    }
                }
                (acked, refused)
            })
        })
        .collect();
    let mut acked = Vec::new();
    let mut refused = Vec::new();
    for w in writers {
        let (a, r) = w.join().expect("a writer");
        acked.extend(a);
        refused.extend(r);
    }
    let status = exit_within(&mut child, Duration::from_secs(20));
    let output = std::fs::read_to_string(&log).unwrap_or_default();
    let _ = std::fs::remove_file(&log);
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    let segment_dir = data.join("raft-log").display().to_string();
    assert!(!refused.is_empty(), "no write was refused; log:\n{output}");
    for (status, body) in &refused {
        assert_eq!(*status, 500, "{body}");
        assert!(
            body.contains("no space left on device at ") && body.contains(&segment_dir),
            "the error hides the cause: {body}"
        );
    }
    let status = status.unwrap_or_else(|| panic!("the agent still runs on a full disk:\n{output}"));
    assert_eq!(status.code(), Some(1), "{output}");
    let named: Vec<&str> = output
        .lines()
        .filter(|l| l.contains("no space left on device"))
        .collect();
    assert_eq!(
        named.iter().filter(|l| l.contains("ERROR")).count(),
        1,
        "the cause must be logged once:\n{output}"
    );
    assert!(named.iter().all(|l| l.contains(&segment_dir)), "{output}");

    // Space freed, the agent starts again (as a supervisor would restart
    // it) with every acknowledged write, and takes new ones.
    std::fs::remove_file(&filler).expect("free space");
    let mut child = spawn_agent(&prefix, &data, port, &log);
    wait_for_http(&mut child, addr, &log);
    for key in &acked {
        let (status, _, body) = http(addr, "GET", &format!("/v1/kv/{key}?raw"), b"").expect("GET");
        assert_eq!(
            (status, body.len()),
            (200, value.len()),
            "acknowledged {key}"
        );
    }
    let (status, _, _) = http(addr, "PUT", "/v1/kv/after", b"y").expect("PUT");
    assert_eq!(status, 200);
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_file(&log);
}
