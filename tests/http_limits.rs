//! What a client can make the agent hold, against the real binary
//! (`pilotfish agent --dev`) on free loopback ports: registrations over
//! Consul's meta limits (and ours on tags, names and check output) are
//! refused with Consul's texts; stalled request heads and idle keep-alive
//! connections are closed while a parked blocking query is not; one client
//! address holds at most `--http-max-conns-per-client` connections; a
//! half-closed client still gets its answer; a broken chunked body is a
//! 400; KV keys that are not UTF-8 are refused, never merged.

#![allow(clippy::unwrap_used)]

// Only the HTTP client of the cluster harness is used here.
#[allow(dead_code, unused_imports)]
mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant};

use common::agent::Agent;
use serde_json::{json, Value};

/// A `--dev` agent (node `n1`) with `extra` flags, once it is leader.
fn start(extra: &[&str]) -> Agent {
    Agent::dev()
        .args(["--node", "n1", "--log-level", "warn"])
        .args(extra)
        .wait_for_leader()
        .start()
}

/// The requests this suite makes of an agent.
trait Calls {
    fn call(&self, method: &str, path: &str, body: &[u8]) -> common::Response;
    /// Status and body text.
    fn put(&self, path: &str, body: &Value) -> (u16, String);
    fn get_json(&self, path: &str) -> Value;
}

impl Calls for Agent {
    fn call(&self, method: &str, path: &str, body: &[u8]) -> common::Response {
        self.request(method, path, body).unwrap()
    }

    fn put(&self, path: &str, body: &Value) -> (u16, String) {
        let (status, _, body) = self.call("PUT", path, body.to_string().as_bytes());
        (status, common::text(&body))
    }

    fn get_json(&self, path: &str) -> Value {
        let (status, _, body) = self.call("GET", path, b"");
        assert_eq!(status, 200, "GET {path}: {}", common::text(&body));
        serde_json::from_slice(&body).unwrap()
    }
}

/// Everything the server sends until it closes (or the read timeout).
fn read_all(conn: &mut TcpStream) -> String {
    let mut raw = Vec::new();
    let _ = conn.read_to_end(&mut raw);
    String::from_utf8_lossy(&raw).into_owned()
}

fn meta(pairs: usize) -> Value {
    Value::Object(
        (0..pairs)
            .map(|i| (format!("k{i}"), Value::String("v".into())))
            .collect(),
    )
}

// ---------------------------------------------------------------- 3c. sizes

#[test]
fn service_meta_over_consuls_limits_is_refused_with_its_texts() {
    let agent = start(&[]);
    let cases = [
        (
            meta(65),
            "Invalid Service Meta: Node metadata cannot contain more than 64 key/value pairs",
        ),
        (
            json!({"bad key": "v"}),
            "Invalid Service Meta: Couldn't load metadata pair ('bad key', 'v'): Key contains invalid characters",
        ),
        (
            json!({"k".repeat(129): "v"}),
            "Key is too long (limit: 128 characters)",
        ),
        (
            json!({"consul-x": "v"}),
            "Invalid Service Meta: Couldn't load metadata pair ('consul-x', 'v'): Key prefix 'consul-' is reserved for internal use",
        ),
        (
            json!({"k": "v".repeat(513)}),
            "Value is too long (limit: 512 characters)",
        ),
    ];
    for (meta, text) in cases {
        let (status, body) = agent.put(
            "/v1/agent/service/register",
            &json!({"Name": "web", "Meta": meta}),
        );
        assert_eq!(status, 400, "{body}");
        assert!(body.contains(text), "{body:?} lacks {text:?}");
        let (status, body) = agent.put(
            "/v1/catalog/register",
            &json!({"Node": "ext", "Address": "10.0.0.1",
                    "Service": {"Service": "db", "Meta": meta}}),
        );
        assert_eq!(status, 400, "{body}");
        assert!(body.contains(text), "{body:?} lacks {text:?}");
    }
    // At the limits: accepted.
    let (status, body) = agent.put(
        "/v1/agent/service/register",
        &json!({"Name": "web", "Meta": meta(64),
                "Tags": vec!["t"; 256]}),
    );
    assert_eq!(status, 200, "{body}");
    let (status, body) = agent.put(
        "/v1/agent/service/register",
        &json!({"Name": "web2", "Meta": {"k".repeat(128): "v".repeat(512), "rfc1035-x": "y"}}),
    );
    assert_eq!(status, 200, "{body}");
    // A body far over any registration within the limits is refused
    // before it is parsed.
    let (status, body) = agent.put(
        "/v1/agent/service/register",
        &json!({"Name": "web", "Meta": meta(30_000)}),
    );
    assert_eq!(status, 413, "{body}");
    // Nothing of the refused ones was stored.
    assert_eq!(agent.get_json("/v1/catalog/service/db"), json!([]));
    assert_eq!(agent.get_json("/v1/catalog/node/ext"), Value::Null);
}

#[test]
fn node_meta_tags_names_and_txn_ops_are_bounded_too() {
    let agent = start(&[]);
    let cases = [
        (
            "/v1/catalog/register",
            json!({"Node": "ext", "Address": "10.0.0.1", "NodeMeta": meta(65)}),
            400,
            "Invalid Node Meta: Node metadata cannot contain more than 64 key/value pairs",
        ),
        // Node meta may carry Consul's own keys (consul-version).
        (
            "/v1/catalog/register",
            json!({"Node": "ext", "Address": "10.0.0.1", "NodeMeta": {"consul-version": "1.18.2"}}),
            200,
            "true",
        ),
        (
            "/v1/agent/service/register",
            json!({"Name": "web", "Tags": vec!["t"; 257]}),
            400,
            "Service tags cannot contain more than 256 entries (257 given)",
        ),
        (
            "/v1/agent/service/register",
            json!({"Name": "w".repeat(513)}),
            400,
            "Service name is too long (513 characters, limit: 512 characters)",
        ),
    ];
    for (path, body, status, text) in cases {
        assert_eq!(agent.put(path, &body), (status, text.to_string()), "{path}");
    }

    // A txn op over a limit fails the txn (409) with the text.
    let (status, body) = agent.put(
        "/v1/txn",
        &json!([{"Service": {"Verb": "set", "Node": "ext",
                             "Service": {"ID": "db", "Service": "db", "Meta": meta(65)}}}]),
    );
    assert_eq!(status, 409, "{body}");
    assert!(
        body.contains("Invalid Service Meta: Node metadata cannot contain more than 64"),
        "{body}"
    );
    assert_eq!(agent.get_json("/v1/catalog/service/db"), json!([]));
}

#[test]
fn check_output_is_cut_to_4k_not_refused() {
    let agent = start(&[]);
    let output = "x".repeat(10_000);
    let (status, body) = agent.put(
        "/v1/catalog/register",
        &json!({"Node": "ext", "Address": "10.0.0.1",
                "Check": {"CheckID": "c", "Name": "c", "Status": "passing", "Output": output}}),
    );
    assert_eq!(status, 200, "{body}");
    let checks = agent.get_json("/v1/health/node/ext");
    let stored = checks
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["CheckID"] == "c")
        .unwrap()["Output"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        stored,
        format!("{} ... (captured 4096 of 10000 bytes)", "x".repeat(4096))
    );
}

// ---------------------------------------------------------------- 4. connections

#[test]
fn stalled_heads_and_idle_keepalives_are_closed_but_parked_queries_are_not() {
    // Idle keep-alive connections get longer than a request head (10 s).
    let agent = start(&["--http-idle-timeout", "16s"]);
    // A blocking query that outlives both.
    let (_, headers, _) = agent.call("GET", "/v1/kv/parked", b"");
    let index = headers
        .iter()
        .find(|(k, _)| k == "x-consul-index")
        .unwrap()
        .1
        .clone();
    let addr = agent.http;
    let parked = std::thread::spawn(move || {
        let t0 = Instant::now();
        let (status, _, _) = common::http(
            addr,
            "GET",
            &format!("/v1/kv/parked?index={index}&wait=17s"),
            b"",
        )
        .unwrap();
        (status, t0.elapsed())
    });

    // A head that never ends.
    let mut stalled = agent.connect_from([127, 0, 0, 1]);
    stalled
        .write_all(b"GET /v1/status/leader HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    // A keep-alive connection, used again after 12 s of quiet (past the
    // head timeout, within the idle one), then left idle.
    let mut idle = agent.connect_from([127, 0, 0, 1]);
    let ask = b"GET /v1/status/leader HTTP/1.1\r\nHost: x\r\n\r\n";
    idle.write_all(ask).unwrap();
    let t0 = Instant::now();
    let stalled_got = read_all(&mut stalled);
    let stalled_after = t0.elapsed();
    assert!(
        stalled_after < Duration::from_secs(25),
        "a stalled head was not closed ({stalled_after:?})"
    );
    assert!(!stalled_got.contains("200 OK"), "{stalled_got}");
    // Not a wait for anything: the 12 s of quiet are what is tested.
    std::thread::sleep(Duration::from_secs(12).saturating_sub(t0.elapsed()));
    idle.write_all(ask).unwrap();
    let t1 = Instant::now();
    let idle_got = read_all(&mut idle);
    let idle_after = t1.elapsed();
    assert_eq!(
        idle_got.matches("HTTP/1.1 200 OK").count(),
        2,
        "the keep-alive connection did not answer twice: {idle_got}"
    );
    assert!(
        idle_after < Duration::from_secs(30),
        "an idle keep-alive connection was not closed ({idle_after:?})"
    );

    let (status, waited) = parked.join().unwrap();
    // Still no such key: answered 404 when its wait ran out.
    assert_eq!(status, 404);
    assert!(
        waited >= Duration::from_secs(17),
        "the parked query ended early, after {waited:?}"
    );
}

#[test]
fn one_client_address_holds_at_most_its_connection_limit() {
    let agent = start(&["--http-max-conns-per-client", "3"]);
    let held: Vec<TcpStream> = (0..3).map(|_| agent.connect_from([127, 0, 0, 1])).collect();
    // The agent counts a connection once it accepted it: poll with a
    // fourth until it is refused.
    let refused = common::eventually("a 429 for the fourth", Duration::from_secs(10), || {
        let mut extra = agent.connect_from([127, 0, 0, 1]);
        extra
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let got = read_all(&mut extra);
        got.starts_with("HTTP/1.1 429 Too Many Requests")
            .then_some(got.clone())
            .ok_or(got)
    });
    assert!(refused.contains("Connection: close"), "{refused}");
    // Another client address is served meanwhile.
    let mut other = agent.connect_from([127, 0, 0, 2]);
    other
        .write_all(b"GET /v1/status/leader HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    assert!(read_all(&mut other).starts_with("HTTP/1.1 200 OK"));
    // Closing one gives its slot back.
    drop(held);
    common::eventually("a slot again", Duration::from_secs(10), || {
        let mut again = agent.connect_from([127, 0, 0, 1]);
        again
            .write_all(b"GET /v1/status/leader HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        let got = read_all(&mut again);
        got.starts_with("HTTP/1.1 200 OK").then_some(()).ok_or(got)
    });
}

// ---------------------------------------------------------------- 8. smaller items

#[test]
fn a_half_closed_client_still_gets_its_answer() {
    let agent = start(&[]);
    for request in [
        "GET /v1/status/leader HTTP/1.1\r\nHost: x\r\n\r\n".to_string(),
        "PUT /v1/kv/half HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi".to_string(),
    ] {
        let mut conn = agent.connect_from([127, 0, 0, 1]);
        conn.write_all(request.as_bytes()).unwrap();
        conn.shutdown(Shutdown::Write).unwrap();
        let got = read_all(&mut conn);
        assert!(got.starts_with("HTTP/1.1 200 OK"), "{request:?}: {got:?}");
    }
    let (status, headers, body) = agent.call("GET", "/v1/kv/half?raw", b"");
    assert_eq!((status, body.as_slice()), (200, b"hi".as_slice()));
    // An answer that takes a while (a short blocking query) too.
    let index = &headers
        .iter()
        .find(|(k, _)| k == "x-consul-index")
        .unwrap()
        .1;
    let mut conn = agent.connect_from([127, 0, 0, 1]);
    write!(
        conn,
        "GET /v1/kv/half?index={index}&wait=2s HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    .unwrap();
    conn.shutdown(Shutdown::Write).unwrap();
    let got = read_all(&mut conn);
    assert!(got.starts_with("HTTP/1.1 200 OK"), "{got:?}");
}

#[test]
fn a_malformed_chunk_size_is_a_400_not_a_413() {
    let agent = start(&[]);
    let mut conn = agent.connect_from([127, 0, 0, 1]);
    conn.write_all(
        b"PUT /v1/kv/chunky HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
    )
    .unwrap();
    let got = read_all(&mut conn);
    assert!(got.starts_with("HTTP/1.1 400 Bad Request"), "{got:?}");
    // An oversized chunked body is still a 413.
    let mut conn = agent.connect_from([127, 0, 0, 1]);
    let chunk = vec![b'v'; 600 * 1024];
    conn.write_all(
        format!(
            "PUT /v1/kv/big HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n",
            chunk.len()
        )
        .as_bytes(),
    )
    .unwrap();
    let _ = conn.write_all(&chunk);
    let _ = conn.write_all(b"\r\n0\r\n\r\n");
    let got = read_all(&mut conn);
    assert!(got.starts_with("HTTP/1.1 413"), "{got:?}");
}

#[test]
fn kv_keys_that_are_not_utf8_are_refused_not_merged() {
    let agent = start(&[]);
    for key in ["u/%FF", "u/%FE"] {
        let (status, _, body) = agent.call("PUT", &format!("/v1/kv/{key}"), b"v");
        assert_eq!(status, 400, "{key}: {}", common::text(&body));
        assert!(
            common::text(&body).contains(&format!("/v1/kv/{key}")),
            "the error names the path: {}",
            common::text(&body)
        );
    }
    let (status, _, _) = agent.call("GET", "/v1/kv/u?recurse", b"");
    assert_eq!(status, 404, "nothing was stored under u/");
    // UTF-8 keys, percent-encoded, are exact.
    let (status, _, _) = agent.call("PUT", "/v1/kv/u/%C3%A9", b"e");
    assert_eq!(status, 200);
    let keys = agent.get_json("/v1/kv/u?keys");
    assert_eq!(keys, json!(["u/é"]));
    let (status, _, _) = agent.call("GET", "/v1/kv/u?keys&separator=%FF", b"");
    assert_eq!(status, 400);
}
