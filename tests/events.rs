//! User events and `pilotfish watch` against the real binary: events fired
//! on one server of a three-server cluster reach the other servers and a
//! client agent, with Consul's filters, answer shapes, errors, blocking
//! list and 256-event ring; an agent cut off by a partition gets what it
//! missed once the partition heals. `pilotfish event` prints `Event ID:`,
//! and `pilotfish watch` runs its handler with the JSON on stdin on every
//! change for key, keyprefix, service and event watches.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

// Only parts of the cluster harness are used here.
#[allow(dead_code, unused_imports)]
mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::agent::{Agent, BIN};
use common::{base64, eventually, http, http_with_timeout, text, Cluster, Partition};
use pilotfish::discovery::api::event::id_to_index;
use serde_json::Value;

const CONVERGE: Duration = Duration::from_secs(30);

/// `PUT /v1/event/fire/<path>` on `addr`: status and body.
fn fire(addr: SocketAddr, path: &str, payload: &[u8]) -> (u16, String) {
    let (status, _, body) = http(addr, "PUT", &format!("/v1/event/fire/{path}"), payload).unwrap();
    (status, text(&body))
}

/// A fired event's ID (the answer must be 200).
fn fire_ok(addr: SocketAddr, path: &str, payload: &[u8]) -> String {
    let (status, body) = fire(addr, path, payload);
    assert_eq!(status, 200, "fire {path}: {body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    v["ID"].as_str().unwrap().to_string()
}

/// `GET /v1/event/list?<query>`: the events and the headers.
fn list(addr: SocketAddr, query: &str) -> (Vec<Value>, Vec<(String, String)>) {
    let (status, headers, body) =
        http(addr, "GET", &format!("/v1/event/list?{query}"), b"").unwrap();
    assert_eq!(status, 200, "list {query}: {}", text(&body));
    (serde_json::from_slice(&body).unwrap(), headers)
}

fn ids(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["ID"].as_str().unwrap().to_string())
        .collect()
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// Wait until the agent at `addr` lists event `id` (under `name`).
fn wait_listed(addr: SocketAddr, name: &str, id: &str) -> Vec<Value> {
    eventually(&format!("{addr} lists {name} {id}"), CONVERGE, || {
        let (events, _) = list(addr, &format!("name={name}"));
        if ids(&events).iter().any(|i| i == id) {
            Ok(events)
        } else {
            Err(format!("{events:?}"))
        }
    })
}

/// Every member alive on every agent listed.
fn wait_members(addrs: &[SocketAddr], n: usize) {
    for addr in addrs {
        eventually(&format!("{addr} sees {n} alive members"), CONVERGE, || {
            let (status, _, body) = http(*addr, "GET", "/v1/agent/members", b"").unwrap();
            let members: Value = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
            let alive = members
                .as_array()
                .map_or(0, |m| m.iter().filter(|m| m["Status"] == 1).count());
            if status == 200 && alive == n {
                Ok(())
            } else {
                Err(format!("{status} {members}"))
            }
        });
    }
}

/// Partitions need root and iptables; CI has both (tests/run.sh).
fn partitions_available() -> bool {
    match Partition::available() {
        Ok(()) => true,
        Err(why) if std::env::var_os("CI").is_some() => {
            panic!("CI must run the partition tests: {why}")
        }
        Err(why) => {
            eprintln!("skipping the partition part: {why}");
            false
        }
    }
}

#[test]
fn events_reach_every_agent_with_consuls_filters_shapes_and_ring() {
    const SUBNET: u8 = 147;
    let mut c = Cluster::new(SUBNET, 3, 3);
    let partitions = partitions_available();
    if partitions {
        c.gid_base = Some(200_000 + (std::process::id() % 100_000) * 256 + u32::from(SUBNET) * 8);
    }
    c.start_all();
    c.agreed_leader(&[0, 1, 2], CONVERGE);
    wait_members(&[c.http_addr(0), c.http_addr(1), c.http_addr(2)], 3);
    // A server cut off from the one that fires gets the event once the
    // partition heals: the push failed, the probes' repair delivers it.
    // (Before the client agent starts: it would relay the event to s3.)
    if partitions {
        let cut = Partition::new(&c, &[2], &[0, 1]);
        let during = fire_ok(c.http_addr(0), "during-cut", b"");
        wait_listed(c.http_addr(1), "during-cut", &during);
        // Longer than a push's deadline and a few probe rounds.
        std::thread::sleep(Duration::from_secs(3));
        assert!(
            !ids(&list(c.http_addr(2), "name=during-cut").0).contains(&during),
            "s3 got the event through the partition"
        );
        cut.heal();
        wait_listed(c.http_addr(2), "during-cut", &during);
    }

    let client_ip = format!("127.0.{SUBNET}.4");
    let client_data = tempfile::tempdir().unwrap();
    let client = Agent::on(&client_ip)
        .arg("--data-dir")
        .arg(client_data.path())
        .server_port(c.ports.server)
        .args(["--encrypt", common::CLUSTER_KEY, "--log-level", "info"])
        .args(["--node", "c1", "--bind", &client_ip])
        .args(["--retry-join", &c.nodes[0].ip.to_string()])
        .start();
    let servers: Vec<SocketAddr> = (0..3).map(|i| c.http_addr(i)).collect();
    let all: Vec<SocketAddr> = servers.iter().copied().chain([client.http]).collect();
    wait_members(&all, 4);

    // Fired on s1: Consul's answer, built locally (LTime 0).
    let (status, body) = fire(servers[0], "deploy", b"v1.2");
    assert_eq!(status, 200, "{body}");
    let fired: Value = serde_json::from_str(&body).unwrap();
    let keys: Vec<&str> = fired
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let mut expected = vec![
        "ID",
        "LTime",
        "Name",
        "NodeFilter",
        "Payload",
        "ServiceFilter",
        "TagFilter",
        "Version",
    ];
    expected.sort_unstable();
    let mut keys_sorted = keys.clone();
    keys_sorted.sort_unstable();
    assert_eq!(keys_sorted, expected, "{body}");
    assert_eq!(fired["Name"], "deploy");
    assert_eq!(fired["Payload"], base64(b"v1.2"));
    assert_eq!(fired["Version"], 1);
    assert_eq!(fired["LTime"], 0);
    let id = fired["ID"].as_str().unwrap().to_string();

    // Listed on every other agent, with its Lamport time, the index Consul
    // derives from the last ID, and no leader headers.
    for addr in &all {
        let events = wait_listed(*addr, "deploy", &id);
        let last = events.last().unwrap();
        assert_eq!(last["Payload"], base64(b"v1.2"));
        let (_, headers) = list(*addr, "name=deploy");
        assert_eq!(
            header(&headers, "x-consul-index"),
            Some(id_to_index(&id).to_string().as_str())
        );
        assert_eq!(header(&headers, "x-consul-knownleader"), None);
    }
    // An empty list has index 1.
    let (events, headers) = list(servers[1], "name=nothing-by-this-name");
    assert!(events.is_empty());
    assert_eq!(header(&headers, "x-consul-index"), Some("1"));

    // Filters, applied by each receiver: the node name...
    let only_s3 = fire_ok(servers[0], "only-s3?node=%5Es3%24", b"");
    // ...and a service (by ID) with a tag, registered on s2 and the client.
    for addr in [servers[1], client.http] {
        let (status, _, body) = http(
            addr,
            "PUT",
            "/v1/agent/service/register",
            br#"{"Name":"web","ID":"web-1","Tags":["v1","blue"],"Port":80}"#,
        )
        .unwrap();
        assert_eq!(status, 200, "{}", text(&body));
    }
    let (status, _, body) = http(
        servers[2],
        "PUT",
        "/v1/agent/service/register",
        br#"{"Name":"web","ID":"web-1","Tags":["v2"],"Port":80}"#,
    )
    .unwrap();
    assert_eq!(status, 200, "{}", text(&body));
    let tagged = fire_ok(servers[0], "tagged?service=%5Eweb-&tag=%5Ev1%24", b"");
    let untagged = fire_ok(servers[0], "untagged?service=web", b"");
    let marker = fire_ok(servers[0], "marker", b"");
    for addr in &all {
        // Once the last event is in, every earlier one has been decided.
        wait_listed(*addr, "marker", &marker);
    }
    let has = |addr: SocketAddr, name: &str, id: &str| {
        ids(&list(addr, &format!("name={name}")).0).contains(&id.to_string())
    };
    for (i, addr) in all.iter().enumerate() {
        assert_eq!(
            has(*addr, "only-s3", &only_s3),
            i == 2,
            "only-s3 on agent {i}"
        );
        assert_eq!(
            has(*addr, "tagged", &tagged),
            i == 1 || i == 3,
            "tagged on agent {i}"
        );
        assert_eq!(
            has(*addr, "untagged", &untagged),
            i != 0,
            "untagged on agent {i}"
        );
    }

    // Bad input: Consul's statuses and texts.
    assert_eq!(fire(servers[0], "", b""), (400, "Missing name".to_string()));
    assert_eq!(
        fire(servers[0], "x?tag=v1", b""),
        (
            500,
            "Cannot provide tag filter without service filter".to_string()
        )
    );
    assert_eq!(
        fire(servers[0], "x?node=%5Ba", b""),
        (
            500,
            "Invalid node filter: error parsing regexp: missing closing ]: `[a`".to_string()
        )
    );
    assert_eq!(
        fire(servers[0], "x", &[b'p'; 600]),
        (
            500,
            "user event exceeds configured limit of 512 bytes before encoding".to_string()
        )
    );
    let (status, _, body) = http(servers[0], "GET", "/v1/event/fire/x", b"").unwrap();
    assert_eq!(
        (status, text(&body).as_str()),
        (405, "method GET not allowed")
    );

    // A blocking list on s3 parks on its index and wakes for a new event.
    let (_, headers) = list(servers[2], "name=wake");
    let index: u64 = header(&headers, "x-consul-index").unwrap().parse().unwrap();
    assert_eq!(index, 1);
    let s3 = servers[2];
    let parked = std::thread::spawn(move || {
        let started = Instant::now();
        let (status, headers, body) = http_with_timeout(
            s3,
            "GET",
            "/v1/event/list?name=wake&index=1&wait=60s",
            b"",
            Duration::from_secs(90),
        )
        .unwrap();
        (status, headers, body, started.elapsed())
    });
    std::thread::sleep(Duration::from_millis(500));
    assert!(!parked.is_finished(), "the list did not block");
    let wake = fire_ok(servers[0], "wake", b"now");
    let (status, headers, body, took) = parked.join().unwrap();
    assert_eq!(status, 200);
    let events: Vec<Value> = serde_json::from_slice(&body).unwrap();
    assert_eq!(ids(&events), vec![wake.clone()]);
    assert_eq!(
        header(&headers, "x-consul-index"),
        Some(id_to_index(&wake).to_string().as_str())
    );
    assert!(took < Duration::from_secs(60), "woke only at the timeout");
    // The same index with a short wait returns the same list at the timeout.
    let (events, _) = list(
        s3,
        &format!("name=wake&index={}&wait=1s", id_to_index(&wake)),
    );
    assert_eq!(ids(&events), vec![wake]);

    // `pilotfish event` prints Consul's line, and the event arrives.
    let out = Command::new(BIN)
        .args(["event", "--http-addr", &servers[1].to_string()])
        .args(["--name", "from-cli", "--node", "s", "payload text"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let cli_id = line.strip_prefix("Event ID: ").expect(&line).to_string();
    let events = wait_listed(servers[2], "from-cli", &cli_id);
    assert_eq!(events[0]["Payload"], base64(b"payload text"));
    assert_eq!(events[0]["NodeFilter"], "s");
    let out = Command::new(BIN)
        .args([
            // Consul's own spelling of the flags works too.
            "event",
            "-http-addr",
            &servers[1].to_string(),
            "-name",
            "x",
            "-tag",
            "t",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "Cannot provide tag filter without service filter."
    );

    // The ring holds Consul's 256: the oldest are dropped.
    let fired: Vec<String> = (0..300)
        .map(|i| fire_ok(servers[0], "ring", format!("{i}").as_bytes()))
        .collect();
    let (on_s1, _) = list(servers[0], "");
    assert_eq!(
        ids(&on_s1),
        fired[44..].to_vec(),
        "s1's ring is the newest 256, in order"
    );
    for addr in &all[1..] {
        let last = fired.last().unwrap().clone();
        eventually(&format!("{addr} holds 256 ring events"), CONVERGE, || {
            let (events, _) = list(*addr, "");
            let ring = events.iter().filter(|e| e["Name"] == "ring").count();
            if events.len() == 256 && ring == 256 && ids(&events).contains(&last) {
                Ok(())
            } else {
                Err(format!("{} events, {ring} ring", events.len()))
            }
        });
    }
    drop(client);
}

// ---------------------------------------------------------------- watch

/// A `pilotfish watch` whose handler appends its stdin to a file; killed on drop.
struct Watch {
    child: Child,
    out: PathBuf,
}

impl Watch {
    fn start(agent: &Agent, dir: &Path, name: &str, args: &[&str]) -> Watch {
        let out = dir.join(format!("{name}.jsonl"));
        let child = Command::new(BIN)
            .arg("watch")
            .args(["--http-addr", &agent.http.to_string()])
            .args(args)
            .arg(format!("cat >> {}", out.display()))
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        Watch { child, out }
    }

    /// The handler's runs so far, one JSON document each.
    fn runs(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// Wait for exactly `n` runs (and a moment for any extra one).
    fn wait_runs(&self, n: usize) -> Vec<Value> {
        eventually(
            &format!("{} runs {n} times", self.out.display()),
            CONVERGE,
            || {
                let runs = self.runs();
                if runs.len() >= n {
                    Ok(())
                } else {
                    Err(format!("{runs:?}"))
                }
            },
        );
        std::thread::sleep(Duration::from_millis(700));
        let runs = self.runs();
        assert_eq!(runs.len(), n, "{}: {runs:#?}", self.out.display());
        runs
    }
}

impl Watch {
    /// Wait until the last run satisfies `ok`: every run so far.
    fn wait_until(&self, what: &str, ok: impl Fn(&Value) -> bool) -> Vec<Value> {
        eventually(what, CONVERGE, || {
            let runs = self.runs();
            match runs.last() {
                Some(last) if ok(last) => Ok(runs),
                _ => Err(format!("{runs:?}")),
            }
        })
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn put(agent: &Agent, path: &str, body: &str) {
    let (status, _, resp) = agent.request("PUT", path, body.as_bytes()).unwrap();
    assert_eq!(status, 200, "PUT {path}: {}", text(&resp));
}

#[test]
fn watch_runs_its_handler_on_every_change_with_the_json_on_stdin() {
    let agent = Agent::dev().start();
    let dir = tempfile::tempdir().unwrap();

    let key = Watch::start(
        &agent,
        dir.path(),
        "key",
        &["--type", "key", "--key", "app/config"],
    );
    let prefix = Watch::start(
        &agent,
        dir.path(),
        "prefix",
        &["--type", "keyprefix", "--prefix", "app/"],
    );
    let service = Watch::start(
        &agent,
        dir.path(),
        "service",
        &[
            "--type",
            "service",
            "--service",
            "web",
            "--passingonly=true",
        ],
    );
    let event = Watch::start(
        &agent,
        dir.path(),
        "event",
        &["--type", "event", "--name", "deploy"],
    );

    // First runs: the data as it is now, even when empty.
    assert_eq!(key.wait_runs(1), vec![Value::Null]);
    assert_eq!(prefix.wait_runs(1), vec![Value::Array(vec![])]);
    assert_eq!(service.wait_runs(1), vec![Value::Array(vec![])]);
    assert_eq!(event.wait_runs(1), vec![Value::Array(vec![])]);

    // key: a write of the key runs it; a write elsewhere under the prefix
    // runs only the prefix watch.
    put(&agent, "/v1/kv/app/config", "v1");
    let runs = key.wait_runs(2);
    assert_eq!(runs[1]["Key"], "app/config");
    assert_eq!(runs[1]["Value"], base64(b"v1"));
    let runs = prefix.wait_runs(2);
    assert_eq!(runs[1].as_array().unwrap().len(), 1);
    put(&agent, "/v1/kv/app/other", "x");
    put(&agent, "/v1/kv/elsewhere", "x");
    let runs = prefix.wait_runs(3);
    let keys: Vec<&str> = runs[2]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["Key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["app/config", "app/other"]);
    put(&agent, "/v1/kv/app/config", "v2");
    let runs = key.wait_runs(3);
    assert_eq!(runs[2]["Value"], base64(b"v2"));

    // service: a passing instance appears, then goes when it fails.
    put(
        &agent,
        "/v1/agent/service/register",
        r#"{"Name":"web","ID":"web-1","Port":8080,"Check":{"TTL":"60s","Status":"passing"}}"#,
    );
    let runs = service.wait_until("web-1 passing", |r| r[0]["Service"]["ID"] == "web-1");
    assert_eq!(runs.last().unwrap()[0]["Service"]["Port"], 8080);
    put(&agent, "/v1/agent/check/fail/service:web-1", "");
    service.wait_until("web-1 gone", |r| r == &Value::Array(vec![]));

    // event: each run gets only the new events of its name.
    let first = fire_ok(agent.http, "deploy", b"one");
    let runs = event.wait_runs(2);
    assert_eq!(ids(runs[1].as_array().unwrap()), vec![first]);
    fire_ok(agent.http, "unrelated", b"");
    let second = fire_ok(agent.http, "deploy", b"two");
    let runs = event.wait_runs(3);
    assert_eq!(ids(runs[2].as_array().unwrap()), vec![second]);
    assert_eq!(runs[2][0]["Payload"], base64(b"two"));

    // Without a handler: the data printed once, indented, and the watch ends.
    let out = Command::new(BIN)
        .args(["watch", "-http-addr", &agent.http.to_string()])
        .args(["-type", "key", "-key=app/config"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        printed.contains("\n    \"Key\": \"app/config\""),
        "{printed}"
    );

    // A failing handler ends the watch with status 1 and Consul's text.
    let out = Command::new(BIN)
        .args(["watch", "--http-addr", &agent.http.to_string()])
        .args(["--type", "services", "exit 3"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "Error executing handler: exit status 3"
    );
}
