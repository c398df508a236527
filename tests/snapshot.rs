//! `pilotfish snapshot save|restore` and `GET|PUT /v1/snapshot` against the
//! real binary: a saved state comes back after deletes and overwrites, a
//! damaged file is refused without changing anything, and a restore sent to
//! a follower is applied by every server of a 3-server cluster.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

// Only parts of the cluster harness are used here.
#[allow(dead_code, unused_imports)]
mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::agent::{consul_index, free_port, Agent, BIN};
use reqwest::StatusCode;
use serde_json::{json, Value};

/// reqwest is built without a default rustls provider: install pilotfish's.
fn client() -> reqwest::Client {
    pilotfish::discovery::server::tls::install_default_provider();
    reqwest::Client::new()
}

/// A `--dev` agent on a loopback address of its own (127.0.94.n), so
/// agents of tests running in parallel never race for one port: a test
/// would otherwise talk to another test's agent.
fn dev() -> Agent {
    static NEXT: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(1);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let ip = format!("127.0.94.{n}");
    Agent::on(&ip)
        .args(["--dev", "--node", "snap", "--bind", &ip])
        .args(["--log-level", "warn"])
        .start()
}

fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `Saved and verified snapshot to index N` → N.
fn saved_index(o: &Output) -> u64 {
    assert!(o.status.success(), "save failed: {}", err(o));
    out(o)
        .trim_end()
        .strip_prefix("Saved and verified snapshot to index ")
        .unwrap_or_else(|| panic!("unexpected output {:?}", out(o)))
        .parse()
        .unwrap()
}

async fn put(http: &reqwest::Client, url: String, body: &str) {
    let r = http.put(url).body(body.to_string()).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK, "{}", r.text().await.unwrap());
}

/// A key's raw value (`None` on 404) and `X-Consul-Index`.
async fn get_raw(http: &reqwest::Client, url: String) -> (Option<String>, u64) {
    let r = http.get(url).send().await.unwrap();
    let index = r.headers()["x-consul-index"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    if r.status() == StatusCode::NOT_FOUND {
        return (None, index);
    }
    assert_eq!(r.status(), StatusCode::OK);
    (Some(r.text().await.unwrap()), index)
}

async fn kv(a: &Agent, http: &reqwest::Client, key: &str) -> Option<String> {
    get_raw(http, a.url(&format!("/v1/kv/{key}?raw"))).await.0
}

async fn services(a: &Agent, http: &reqwest::Client) -> Value {
    let r = http
        .get(a.url("/v1/catalog/services"))
        .send()
        .await
        .unwrap();
    r.json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saved_state_comes_back_after_deletes_and_overwrites() {
    let a = dev();
    let http = client();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("backup.snap");
    let file_s = file.to_str().unwrap();

    put(&http, a.url("/v1/kv/app/config"), "v1").await;
    put(&http, a.url("/v1/kv/app/keep"), "keep").await;
    put(
        &http,
        a.url("/v1/agent/service/register"),
        &json!({"Name": "web", "Port": 80}).to_string(),
    )
    .await;
    let (_, config_index) = get_raw(&http, a.url("/v1/kv/app/config")).await;

    // An older file at the path is replaced, with nothing left beside it.
    std::fs::write(&file, "old").unwrap();
    let saved = a.cli(&["snapshot", "save", file_s]);
    let index = saved_index(&saved);
    assert!(index >= config_index, "{index} < {config_index}");
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, ["backup.snap"]);
    let meta = std::fs::metadata(&file).unwrap();
    assert_eq!(
        meta.permissions().mode() & 0o777,
        0o600,
        "KV values are private"
    );
    let head = std::fs::read(&file).unwrap();
    assert!(head.starts_with(format!("pilotfish-snapshot format=1 index={index} ").as_bytes()));

    // Change everything after the save.
    put(&http, a.url("/v1/kv/app/config"), "v2").await;
    let r = http.delete(a.url("/v1/kv/app/keep")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    put(&http, a.url("/v1/kv/app/new"), "new").await;
    put(&http, a.url("/v1/agent/service/deregister/web"), "").await;
    assert!(services(&a, &http).await.get("web").is_none());
    let (_, before_restore) = get_raw(&http, a.url("/v1/kv/app/new")).await;
    // Queries parked before the restore (a minute's wait)...
    let parked_kv = a.pending(
        "GET",
        &format!("/v1/kv/app/?recurse&index={before_restore}&wait=60s"),
    );
    let (_, services_index) = get_raw(&http, a.url("/v1/catalog/services")).await;
    let parked_catalog = a.pending(
        "GET",
        &format!("/v1/catalog/services?index={services_index}&wait=60s"),
    );
    assert!(!parked_kv.is_finished() && !parked_catalog.is_finished());

    let restored = a.cli(&["snapshot", "restore", file_s]);
    assert!(restored.status.success(), "{}", err(&restored));
    assert_eq!(out(&restored), "Restored snapshot\n");

    assert_eq!(kv(&a, &http, "app/config").await.as_deref(), Some("v1"));
    assert_eq!(kv(&a, &http, "app/keep").await.as_deref(), Some("keep"));
    assert_eq!(kv(&a, &http, "app/new").await, None);
    assert!(services(&a, &http).await.get("web").is_some());
    // ...answer at once with the restored data and a higher index: the
    // restore counts as a write to every table.
    let within = Duration::from_secs(10);
    let (_, headers, body) = parked_kv.answer(within);
    let kv_index = consul_index(&headers);
    assert!(kv_index > before_restore, "{kv_index} <= {before_restore}");
    let entries: Value = serde_json::from_slice(&body).unwrap();
    let keys: Vec<&str> = entries
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["Key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["app/config", "app/keep"]);
    let (_, headers, body) = parked_catalog.answer(within);
    let catalog_index = consul_index(&headers);
    assert!(catalog_index > services_index);
    let catalog: Value = serde_json::from_slice(&body).unwrap();
    assert!(catalog.get("web").is_some());
    // A present key's index stays its ModifyIndex, as saved (clients block
    // on ModifyIndex values read from bodies)...
    let (_, restored_index) = get_raw(&http, a.url("/v1/kv/app/config")).await;
    assert_eq!(restored_index, config_index);
    let body: Value = http
        .get(a.url("/v1/kv/app/config"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body[0]["ModifyIndex"], config_index);
    // ...and the next write is above everything handed out before.
    put(&http, a.url("/v1/kv/app/config"), "v3").await;
    let (_, after) = get_raw(&http, a.url("/v1/kv/app/config")).await;
    assert!(after > kv_index, "{after} <= {kv_index}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_snapshot_is_refused_and_changes_nothing() {
    let a = dev();
    let http = client();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("s.snap");
    let file_s = file.to_str().unwrap();
    put(&http, a.url("/v1/kv/k"), "saved").await;
    saved_index(&a.cli(&["snapshot", "save", file_s]));
    put(&http, a.url("/v1/kv/k"), "current").await;
    let good = std::fs::read(&file).unwrap();

    // One byte flipped in the body: the CLI names the file and refuses.
    let mut flipped = good.clone();
    let at = flipped.len() - 10;
    flipped[at] ^= 0x20;
    std::fs::write(&file, &flipped).unwrap();
    let r = a.cli(&["snapshot", "restore", file_s]);
    assert_eq!(r.status.code(), Some(1));
    assert!(out(&r).is_empty());
    let e = err(&r);
    assert!(
        e.starts_with(&format!(
            "Error verifying snapshot file {file_s}: checksum mismatch"
        )),
        "{e}"
    );
    assert!(e.contains("Nothing was restored"), "{e}");

    // The agent refuses it too, whatever the client: 400 and why.
    let cases: [(&str, Vec<u8>, &str); 4] = [
        ("flipped", flipped, "checksum mismatch"),
        (
            "truncated",
            good[..good.len() - 100].to_vec(),
            "the file is truncated",
        ),
        (
            "not a snapshot",
            b"{\"format\":1}".to_vec(),
            "does not start with",
        ),
        (
            "newer format",
            String::from_utf8(good.clone())
                .unwrap()
                .replacen("format=1", "format=2", 1)
                .into_bytes(),
            "file format 2 is not supported",
        ),
    ];
    for (what, body, expected) in cases {
        let r = http
            .put(a.url("/v1/snapshot"))
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{what}");
        let text = r.text().await.unwrap();
        assert!(text.starts_with("Invalid snapshot: "), "{what}: {text}");
        assert!(text.contains(expected), "{what}: {text}");
        assert!(text.ends_with("Nothing was restored."), "{what}: {text}");
    }
    assert_eq!(kv(&a, &http, "k").await.as_deref(), Some("current"));

    // The intact file still restores.
    std::fs::write(&file, &good).unwrap();
    let r = a.cli(&["snapshot", "restore", file_s]);
    assert!(r.status.success(), "{}", err(&r));
    assert_eq!(kv(&a, &http, "k").await.as_deref(), Some("saved"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_endpoint_and_cli_errors() {
    let a = dev();
    let http = client();
    put(&http, a.url("/v1/kv/x"), "1").await;

    for path in [
        "/v1/snapshot",
        "/v1/snapshot?stale",
        "/v1/snapshot?consistent",
    ] {
        let r = http.get(a.url(path)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{path}");
        let index: u64 = r.headers()["x-consul-index"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(r.headers()["x-consul-knownleader"], "true");
        let body = r.bytes().await.unwrap();
        let head = format!("pilotfish-snapshot format=1 index={index} length=");
        assert!(body.starts_with(head.as_bytes()), "{path}");
    }
    let r = http.post(a.url("/v1/snapshot")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);

    // Saving into a missing directory names the file; nothing is left.
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no/such/dir/s.snap");
    let r = a.cli(&["snapshot", "save", missing.to_str().unwrap()]);
    assert_eq!(r.status.code(), Some(1));
    assert!(
        err(&r).starts_with(&format!(
            "Error writing snapshot file {}: ",
            missing.display()
        )),
        "{}",
        err(&r)
    );
    // Restoring a file that is not there says so.
    let r = a.cli(&["snapshot", "restore", missing.to_str().unwrap()]);
    assert_eq!(r.status.code(), Some(1));
    assert!(
        err(&r).starts_with(&format!(
            "Error opening snapshot file {}: ",
            missing.display()
        )),
        "{}",
        err(&r)
    );
    // No agent: the address to fix is named.
    let nobody = format!("127.0.0.1:{}", free_port("127.0.0.1"));
    let r = Command::new(BIN)
        .args(["snapshot", "save", "--http-addr", &nobody])
        .arg(dir.path().join("s.snap"))
        .output()
        .unwrap();
    assert_eq!(r.status.code(), Some(1));
    assert!(err(&r).starts_with("Error saving snapshot: Error connecting to the agent at http://"));
    assert!(!dir.path().join("s.snap").exists());
}

/// A 3-server cluster on 127.0.91.{1,2,3}, killed when dropped.
struct Cluster {
    nodes: Vec<Agent>,
    _dirs: Vec<tempfile::TempDir>,
}

impl Cluster {
    fn start() -> Cluster {
        let ips: Vec<String> = (1..=3).map(|n| format!("127.0.91.{n}")).collect();
        let mut nodes = Vec::new();
        let mut dirs = Vec::new();
        for (n, ip) in ips.iter().enumerate() {
            let dir = tempfile::tempdir().unwrap();
            let mut node = Agent::on(ip)
                .ports(8500, 8600, 8300)
                .args(["--server", "--bootstrap-expect", "3"])
                .args(["--node", &format!("s{}", n + 1)])
                .arg("--data-dir")
                .arg(dir.path())
                .args(["--bind", ip, "--log-level", "warn"]);
            for peer in &ips {
                node = node.args(["--retry-join", peer]);
            }
            nodes.push(node.start());
            dirs.push(dir);
        }
        Cluster { nodes, _dirs: dirs }
    }
}

async fn peers(http: &reqwest::Client, a: &Agent) -> usize {
    match http.get(a.url("/v1/status/peers")).send().await {
        Ok(r) => r.json::<Vec<String>>().await.map_or(0, |p| p.len()),
        Err(_) => 0,
    }
}

async fn leader(http: &reqwest::Client, a: &Agent) -> String {
    match http.get(a.url("/v1/status/leader")).send().await {
        Ok(r) => r.json::<String>().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// Wait until every node of the cluster reads `expected` at `key` (`?stale`:
/// its own replica).
async fn converge(c: &Cluster, http: &reqwest::Client, key: &str, expected: Option<&str>) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut seen = Vec::new();
        for node in &c.nodes {
            seen.push(
                get_raw(http, node.url(&format!("/v1/kv/{key}?raw&stale")))
                    .await
                    .0,
            );
        }
        if seen.iter().all(|v| v.as_deref() == expected) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{key}: servers hold {seen:?}, expected {expected:?} everywhere"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_through_a_follower_reaches_every_server() {
    let c = Cluster::start();
    let http = client();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut ready = !leader(&http, &c.nodes[0]).await.is_empty();
        for n in &c.nodes {
            ready &= peers(&http, n).await == 3;
        }
        if ready {
            break;
        }
        assert!(Instant::now() < deadline, "the cluster did not form");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let leader_addr = leader(&http, &c.nodes[0]).await;
    let follower = c
        .nodes
        .iter()
        .find(|n| !leader_addr.starts_with(&format!("{}:", n.http.ip())))
        .unwrap();

    put(&http, follower.url("/v1/kv/shared"), "saved").await;
    converge(&c, &http, "shared", Some("saved")).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cluster.snap");
    saved_index(&follower.cli(&["snapshot", "save", file.to_str().unwrap()]));

    put(&http, c.nodes[0].url("/v1/kv/shared"), "changed").await;
    put(&http, c.nodes[1].url("/v1/kv/extra"), "x").await;
    converge(&c, &http, "shared", Some("changed")).await;

    let r = follower.cli(&["snapshot", "restore", file.to_str().unwrap()]);
    assert!(r.status.success(), "{}", err(&r));
    converge(&c, &http, "shared", Some("saved")).await;
    converge(&c, &http, "extra", None).await;
}

#[test]
fn restore_without_a_file_argument_is_a_usage_error() {
    let r = Command::new(BIN)
        .args(["snapshot", "restore"])
        .output()
        .unwrap();
    assert_eq!(r.status.code(), Some(2));
    assert!(err(&r).contains("<FILE>"), "{}", err(&r));
}
