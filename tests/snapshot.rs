//! `pilotfish snapshot save|restore|inspect` and `GET|PUT /v1/snapshot`
//! against the real binary: the archive is Consul's (gzip'd tar of
//! `meta.json`, `state.bin`, `SHA256SUMS`), a saved state comes back after
//! deletes and overwrites, a damaged archive or file is refused without
//! changing anything (Consul's texts for the archive), the older
//! `pilotfish-snapshot` file still restores, and a restore sent to a
//! follower is applied by every server of a 3-server cluster.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

// Only parts of the cluster harness are used here.
#[allow(dead_code, unused_imports)]
mod common;

use std::io::Read;
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

/// An archive's members in order: name, mode and content.
fn members(archive: &[u8]) -> Vec<(String, u32, Vec<u8>)> {
    let mut a = tar::Archive::new(flate2::read::GzDecoder::new(archive));
    a.entries()
        .unwrap()
        .map(|e| {
            let mut e = e.unwrap();
            let name = e.path().unwrap().to_string_lossy().into_owned();
            let mode = e.header().mode().unwrap();
            let mut data = Vec::new();
            e.read_to_end(&mut data).unwrap();
            (name, mode, data)
        })
        .collect()
}

fn member<'a>(m: &'a [(String, u32, Vec<u8>)], name: &str) -> &'a [u8] {
    &m.iter().find(|(n, _, _)| n == name).unwrap().2
}

/// Pack members into a gzip'd tar, as another tool would.
fn pack(members: &[(&str, &[u8])]) -> Vec<u8> {
    let mut t = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::fast(),
    ));
    for (name, data) in members {
        let mut h = tar::Header::new_ustar();
        h.set_path(name).unwrap();
        h.set_size(data.len() as u64);
        h.set_mode(0o600);
        h.set_cksum();
        t.append(&h, *data).unwrap();
    }
    t.into_inner().unwrap().finish().unwrap()
}

fn sha256(data: &[u8]) -> String {
    pilotfish::discovery::snapshot::sha256_hex(data)
}

/// The older `pilotfish-snapshot` file of an archive's state.
fn old_format(archive: &[u8]) -> Vec<u8> {
    let m = members(archive);
    let meta: Value = serde_json::from_slice(member(&m, "meta.json")).unwrap();
    let state = member(&m, "state.bin");
    let mut file = format!(
        "pilotfish-snapshot format=1 index={} length={} sha256={}\n",
        meta["Index"],
        state.len(),
        sha256(state)
    )
    .into_bytes();
    file.extend_from_slice(state);
    file
}

/// `PUT /v1/snapshot` with `body`: the status and the answer's text.
async fn restore_body(a: &Agent, http: &reqwest::Client, body: Vec<u8>) -> (StatusCode, String) {
    let r = http
        .put(a.url("/v1/snapshot"))
        .body(body)
        .send()
        .await
        .unwrap();
    (r.status(), r.text().await.unwrap())
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
    let saved_file = std::fs::read(&file).unwrap();
    let m = members(&saved_file);
    let meta: Value = serde_json::from_slice(member(&m, "meta.json")).unwrap();
    assert_eq!(meta["Index"], index);

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

    let old = old_format(&good);

    // One byte flipped in the archive: the CLI names the file and refuses.
    let mut flipped = good.clone();
    let at = flipped.len() / 2;
    flipped[at] ^= 0x20;
    std::fs::write(&file, &flipped).unwrap();
    let r = a.cli(&["snapshot", "restore", file_s]);
    assert_eq!(r.status.code(), Some(1));
    assert!(out(&r).is_empty());
    let e = err(&r);
    assert!(
        e.starts_with(&format!(
            "Error verifying snapshot file {file_s}: failed to decompress snapshot: "
        )),
        "{e}"
    );
    assert!(e.contains("Nothing was restored"), "{e}");

    // The agent refuses damaged archives with Consul's 500s and texts,
    // whatever the client.
    let m = members(&good);
    let (meta, state, sums) = (
        member(&m, "meta.json"),
        member(&m, "state.bin"),
        member(&m, "SHA256SUMS"),
    );
    let mut edited = state.to_vec();
    let quote = edited.iter().position(|&b| b == b'1').unwrap();
    edited[quote] = b'2';
    let meta_only = format!("{}  meta.json\n", sha256(meta));
    let archives: [(&str, Vec<u8>, &str); 5] = [
        ("flipped", flipped, "failed to decompress snapshot: "),
        (
            "state edited after hashing",
            pack(&[("meta.json", meta), ("state.bin", &edited), ("SHA256SUMS", sums)]),
            "failed to read snapshot file: failed checking integrity of snapshot: hash check failed for \"state.bin\"",
        ),
        (
            "a file too many",
            pack(&[("meta.json", meta), ("state.bin", state), ("x", b"x"), ("SHA256SUMS", sums)]),
            "failed to read snapshot file: unexpected file \"x\" in snapshot",
        ),
        (
            "a hash missing",
            pack(&[("meta.json", meta), ("state.bin", state), ("SHA256SUMS", meta_only.as_bytes())]),
            "failed to read snapshot file: failed checking integrity of snapshot: list missing hash for \"state.bin\"",
        ),
        (
            "a file missing",
            pack(&[("meta.json", meta), ("SHA256SUMS", sums)]),
            "failed to read snapshot file: failed checking integrity of snapshot: file missing for \"state.bin\"",
        ),
    ];
    for (what, body, expected) in archives {
        let (status, text) = restore_body(&a, &http, body).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{what}");
        assert!(text.starts_with(expected), "{what}: {text}");
    }
    // Damaged files of the older format: 400 and why.
    let mut old_flipped = old.clone();
    let at = old_flipped.len() - 10;
    old_flipped[at] ^= 0x20;
    let cases: [(&str, Vec<u8>, &str); 4] = [
        ("flipped", old_flipped, "checksum mismatch"),
        (
            "truncated",
            old[..old.len() - 100].to_vec(),
            "the file is truncated",
        ),
        (
            "not a snapshot",
            b"{\"format\":1}".to_vec(),
            "does not start with",
        ),
        (
            "newer format",
            String::from_utf8(old.clone())
                .unwrap()
                .replacen("format=1", "format=2", 1)
                .into_bytes(),
            "file format 2 is not supported",
        ),
    ];
    for (what, body, expected) in cases {
        let (status, text) = restore_body(&a, &http, body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{what}");
        assert!(text.starts_with("Invalid snapshot: "), "{what}: {text}");
        assert!(text.contains(expected), "{what}: {text}");
        assert!(text.ends_with("Nothing was restored."), "{what}: {text}");
    }
    assert_eq!(kv(&a, &http, "k").await.as_deref(), Some("current"));

    // A file of the older format still restores, by the CLI and the API.
    std::fs::write(&file, &old).unwrap();
    let r = a.cli(&["snapshot", "restore", file_s]);
    assert!(r.status.success(), "{}", err(&r));
    assert_eq!(kv(&a, &http, "k").await.as_deref(), Some("saved"));
    put(&http, a.url("/v1/kv/k"), "current").await;
    let r = http
        .put(a.url("/v1/snapshot"))
        .body(old)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(kv(&a, &http, "k").await.as_deref(), Some("saved"));

    // The intact archive still restores.
    put(&http, a.url("/v1/kv/k"), "current").await;
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
        assert_eq!(r.headers()["content-type"], "application/x-gzip");
        let body = r.bytes().await.unwrap();
        // Consul's layout: three files in this order, mode 0600.
        let m = members(&body);
        let names: Vec<(&str, u32)> = m.iter().map(|(n, mode, _)| (n.as_str(), *mode)).collect();
        assert_eq!(
            names,
            [
                ("meta.json", 0o600),
                ("state.bin", 0o600),
                ("SHA256SUMS", 0o600)
            ],
            "{path}"
        );
        let (meta, state, sums) = (
            member(&m, "meta.json"),
            member(&m, "state.bin"),
            member(&m, "SHA256SUMS"),
        );
        assert!(meta.ends_with(b"}\n"));
        let meta: Value = serde_json::from_slice(meta).unwrap();
        assert_eq!(meta["Version"], 1);
        assert_eq!(meta["Index"], index);
        assert_eq!(meta["Size"], state.len());
        let term = meta["Term"].as_u64().unwrap();
        assert!(term >= 1);
        assert!(meta["ID"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{term}-{index}-")));
        let servers = meta["Configuration"]["Servers"].as_array().unwrap();
        assert_eq!(servers.len(), 1);
        assert_eq!(servers[0]["Suffrage"], 0);
        assert!(meta["Peers"].as_str().is_some_and(|p| !p.is_empty()));
        // SHA256SUMS: `<hex>  <name>` for the other two, matching.
        let want = format!(
            "{}  meta.json\n{}  state.bin\n",
            sha256(member(&m, "meta.json")),
            sha256(state)
        );
        assert_eq!(String::from_utf8_lossy(sums), want, "{path}");
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inspect_prints_the_metadata_and_the_records_by_type() {
    let a = dev();
    let http = client();
    for k in ["a", "b", "c"] {
        put(&http, a.url(&format!("/v1/kv/i/{k}")), "value").await;
    }
    let r = http.delete(a.url("/v1/kv/i/c")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("s.snap");
    let file_s = file.to_str().unwrap();
    let index = saved_index(&a.cli(&["snapshot", "save", file_s]));
    let m = members(&std::fs::read(&file).unwrap());
    let meta: Value = serde_json::from_slice(member(&m, "meta.json")).unwrap();

    let r = a.cli(&["snapshot", "inspect", file_s]);
    assert!(r.status.success(), "{}", err(&r));
    let text = out(&r);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0],
        format!("ID           {}", meta["ID"].as_str().unwrap())
    );
    assert_eq!(
        lines[1],
        format!("Size         {}", member(&m, "state.bin").len())
    );
    assert_eq!(lines[2], format!("Index        {index}"));
    assert_eq!(lines[3], format!("Term         {}", meta["Term"]));
    assert_eq!(lines[4], "Version      1");
    assert_eq!(&lines[5..7], ["", ""]);
    assert_eq!(lines[7], " Type                        Count      Size");
    assert_eq!(lines[8], " ----                        ----       ----");
    let row = |name: &str| {
        lines
            .iter()
            .find(|l| l.starts_with(&format!(" {name} ")))
            .unwrap_or_else(|| panic!("no {name} row in\n{text}"))
            .split_whitespace()
            .map(String::from)
            .collect::<Vec<_>>()
    };
    assert_eq!(row("KVS")[1], "2", "{text}");
    assert_eq!(row("Tombstone")[1], "1", "{text}");
    // The node, the server's `consul` service and its serfHealth check.
    assert_eq!(row("Register")[1], "3", "{text}");
    assert!(lines[lines.len() - 1].starts_with(" Total "), "{text}");

    let r = a.cli(&["snapshot", "inspect", "--format", "json", file_s]);
    assert!(r.status.success(), "{}", err(&r));
    let json_text = out(&r);
    assert!(
        json_text.starts_with("{\n   \"Meta\": {\n      \"ID\": "),
        "{json_text}"
    );
    let v: Value = serde_json::from_str(&json_text).unwrap();
    assert_eq!(v["Meta"]["Index"], index);
    let stats = v["Stats"].as_array().unwrap();
    let kvs = stats.iter().find(|s| s["Name"] == "KVS").unwrap();
    assert_eq!(kvs["Count"], 2);
    let total: u64 = stats.iter().map(|s| s["Sum"].as_u64().unwrap()).sum();
    assert_eq!(v["TotalSize"], total);
    // Sizes sorted, largest first.
    let sums: Vec<u64> = stats.iter().map(|s| s["Sum"].as_u64().unwrap()).collect();
    assert!(sums.windows(2).all(|w| w[0] >= w[1]), "{sums:?}");

    // A file of the older format inspects too; a damaged archive does not.
    let old = dir.path().join("old.snap");
    std::fs::write(&old, old_format(&std::fs::read(&file).unwrap())).unwrap();
    let r = a.cli(&["snapshot", "inspect", old.to_str().unwrap()]);
    assert!(r.status.success(), "{}", err(&r));
    assert!(out(&r).contains(&format!("Index        {index}\n")));
    let mut bad = std::fs::read(&file).unwrap();
    let at = bad.len() / 2;
    bad[at] ^= 0x01;
    std::fs::write(&file, bad).unwrap();
    let r = a.cli(&["snapshot", "inspect", file_s]);
    assert_eq!(r.status.code(), Some(1));
    assert!(
        err(&r).starts_with("Error extracting snapshot data: "),
        "{}",
        err(&r)
    );
}
