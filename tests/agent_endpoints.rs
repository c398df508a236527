//! The agent's runtime endpoints against a real `pilotfish agent --dev`:
//! `/v1/agent/metrics` (JSON summary and Prometheus text), `reload` (what
//! SIGHUP does, its error answered), `monitor` (the log streamed, level
//! filter and JSON lines, Consul's 400 on a bad level), `host`, `version`
//! and `token/*` with ACLs off and on; `health/service/id|name` as a load
//! balancer reads it.

// Only parts of the shared harness are used here.
#[allow(dead_code, unused_imports)]
mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::agent::Agent;
use common::{eventually, text};
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(30);

fn get_json(a: &Agent, path: &str) -> Value {
    let (status, _, body) = a.request("GET", path, b"").expect("an answer");
    assert_eq!(status, 200, "GET {path}: {}", text(&body));
    serde_json::from_slice(&body).expect("JSON")
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

#[test]
fn version_and_host_describe_this_agent() {
    let a = Agent::dev().start();
    let v = get_json(&a, "/v1/agent/version");
    assert_eq!(v["HumanVersion"], "1.0.0");
    assert_eq!(v["FIPS"], "");
    assert!(v["SHA"].is_string() && v["BuildDate"].is_string(), "{v}");
    // The same version /v1/agent/self reports.
    let me = get_json(&a, "/v1/agent/self");
    assert_eq!(me["Config"]["Version"], v["HumanVersion"]);

    let h = get_json(&a, "/v1/agent/host");
    assert!(h["Memory"]["total"].as_u64() > Some(0), "{}", h["Memory"]);
    assert!(h["Memory"]["usedPercent"].as_f64() > Some(0.0));
    let cpus = h["CPU"].as_array().expect("CPU");
    // One entry per logical CPU (the process may be allowed fewer).
    assert!(cpus.len() >= std::thread::available_parallelism().map_or(1, |n| n.get()));
    assert!(cpus[0]["modelName"].is_string());
    let uname = nix::sys::utsname::uname().expect("uname");
    assert_eq!(
        h["Host"]["hostname"],
        uname.nodename().to_string_lossy().as_ref()
    );
    assert_eq!(
        h["Host"]["kernelVersion"],
        uname.release().to_string_lossy().as_ref()
    );
    assert!(h["Host"]["bootTime"].as_u64() > Some(1_000_000_000));
    assert_eq!(h["Disk"]["path"], "/");
    assert!(h["Disk"]["total"].as_u64() > Some(0));
    let now_ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("time")
        .as_nanos() as f64;
    let collected = h["CollectionTime"].as_f64().expect("CollectionTime");
    assert!((now_ns - collected).abs() < 60e9, "{collected}");
    assert!(h["Errors"].is_null());
}

#[test]
fn metrics_summarise_what_the_agent_did() {
    let a = Agent::dev().start();
    for _ in 0..3 {
        a.request("GET", "/v1/agent/version", b"")
            .expect("an answer");
    }
    a.request("PUT", "/v1/kv/metrics/probe", b"x")
        .expect("a write");
    let m = eventually("the version requests in a metrics interval", LIMIT, || {
        let m = get_json(&a, "/v1/agent/metrics");
        let samples = m["Samples"].as_array().ok_or("Samples")?;
        let hit = samples.iter().any(|s| {
            s["Name"] == "consul.api.http"
                && s["Labels"]["path"] == "v1_agent_version"
                && s["Labels"]["method"] == "GET"
                && s["Count"].as_u64() >= Some(1)
        });
        if hit {
            Ok(m)
        } else {
            Err(m.to_string())
        }
    });
    // go-metrics' shape: a Go time string, Labels always an object.
    let ts = m["Timestamp"].as_str().expect("Timestamp");
    assert!(ts.ends_with(" +0000 UTC") && ts.len() == 29, "{ts}");
    assert_eq!(m["Points"], serde_json::json!([]));
    for g in m["Gauges"].as_array().expect("Gauges") {
        assert!(g["Labels"].is_object() && g["Value"].is_number(), "{g}");
    }
    let gauge = |name: &str| {
        m["Gauges"]
            .as_array()
            .and_then(|gs| gs.iter().find(|g| g["Name"] == name))
            .and_then(|g| g["Value"].as_f64())
    };
    assert!(gauge("consul.runtime.sys_bytes") > Some(1e6));
    assert_eq!(gauge("consul.serf.member.alive"), Some(1.0));
    for s in m["Samples"].as_array().expect("Samples") {
        let (min, max, mean) = (
            s["Min"].as_f64().expect("Min"),
            s["Max"].as_f64().expect("Max"),
            s["Mean"].as_f64().expect("Mean"),
        );
        assert!(min <= mean && mean <= max, "{s}");
        assert!(s["Rate"].is_number() && s["Stddev"].is_number());
    }

    // Prometheus is off without a retention time: Consul's empty 200.
    let (status, headers, body) = a
        .request("GET", "/v1/agent/metrics?format=prometheus", b"")
        .expect("an answer");
    assert_eq!((status, body.len()), (200, 0));
    assert_eq!(
        header(&headers, "x-consul-reason"),
        Some("Prometheus is not enabled since its retention time is not positive")
    );
}

#[test]
fn prometheus_text_with_a_retention_time() {
    let a = Agent::dev()
        .args(["--prometheus-retention-time", "60s"])
        .start();
    a.request("GET", "/v1/agent/version", b"")
        .expect("an answer");
    a.request("PUT", "/v1/kv/p", b"x").expect("a write");
    let (status, headers, body) = a
        .request("GET", "/v1/agent/metrics?format=prometheus", b"")
        .expect("an answer");
    assert_eq!(status, 200);
    assert_eq!(
        header(&headers, "content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let t = text(&body);
    assert!(t.contains("# TYPE consul_api_http summary"), "{t}");
    assert!(
        t.contains("consul_api_http_count{method=\"GET\",path=\"v1_agent_version\"} 1"),
        "{t}"
    );
    assert!(t.contains("# TYPE consul_raft_apply counter"), "{t}");
}

/// Open `/v1/agent/monitor?QUERY` and answer the stream.
fn monitor(a: &Agent, query: &str) -> TcpStream {
    let mut s = TcpStream::connect(a.http).expect("connect");
    write!(
        s,
        "GET /v1/agent/monitor{query} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .expect("send");
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    s
}

/// What the stream carried within `limit`, stopping early at `until`.
fn read_for(s: &mut TcpStream, limit: Duration, until: &str) -> String {
    let deadline = Instant::now() + limit;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(_) => {}
        }
        if String::from_utf8_lossy(&got).contains(until) {
            break;
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

/// A request hyper cannot parse, which the agent logs at debug.
fn send_garbage(a: &Agent) {
    let mut garbage = TcpStream::connect(a.http).expect("connect");
    garbage.write_all(b"NOT HTTP AT ALL\r\n\r\n").expect("send");
    let _ = garbage.read(&mut [0u8; 64]);
}

#[test]
fn reload_does_what_sighup_does_and_monitor_streams_it() {
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("agent.json");
    std::fs::write(&file, r#"{"log_level": "info"}"#).expect("write");
    let a = Agent::dev().arg("--config-file").arg(&file).start();

    // A bad level: Consul's 400 and text, the value as given.
    let (status, _, body) = a
        .request("GET", "/v1/agent/monitor?loglevel=Loud", b"")
        .expect("an answer");
    assert_eq!(
        (status, text(&body)),
        (400, "Unknown log level: Loud".into())
    );

    // A monitor asks for more than the agent writes (info): debug lines
    // reach it, not the log.
    let mut debug = monitor(&a, "?loglevel=debug");
    std::thread::sleep(Duration::from_millis(300));
    send_garbage(&a);
    let streamed = read_for(&mut debug, LIMIT, "[DEBUG]");
    assert!(streamed.contains("[DEBUG]"), "{streamed}");
    drop(debug);
    assert!(!a.log().contains("DEBUG"), "{}", a.log());

    let mut info = monitor(&a, "?loglevel=INFO");
    let mut json = monitor(&a, "?logjson&loglevel=info");
    let mut errors = monitor(&a, "?loglevel=err");
    std::thread::sleep(Duration::from_millis(300));

    // Reload through the API: the log level comes from the file again.
    std::fs::write(&file, r#"{"log_level": "debug"}"#).expect("write");
    let (status, _, body) = a
        .request("PUT", "/v1/agent/reload", b"")
        .expect("an answer");
    assert_eq!((status, body.len()), (200, 0));
    let want = format!("reloaded {}: log level debug", file.display());
    let streamed = read_for(&mut info, LIMIT, &want);
    assert!(streamed.starts_with("HTTP/1.1 200"), "{streamed}");
    let line = streamed
        .lines()
        .find(|l| l.contains(&want))
        .unwrap_or_else(|| panic!("no reload line in {streamed}"));
    // hclog's text: timestamp, padded level, module, message.
    assert!(line.contains("Z [INFO]  "), "{line}");
    let streamed = read_for(&mut json, LIMIT, &want);
    let line = streamed
        .lines()
        .find(|l| l.contains(&want))
        .unwrap_or_else(|| panic!("no JSON reload line in {streamed}"));
    let v: Value = serde_json::from_str(line.trim()).expect("a JSON line");
    assert_eq!(v["@level"], "info");
    assert!(v["@timestamp"].as_str().is_some_and(|t| t.ends_with('Z')));
    assert!(v["@module"].is_string());
    // An info line is not an error.
    assert!(!read_for(&mut errors, Duration::from_secs(1), &want).contains(&want));
    assert!(a.log().contains(&want), "the agent's own log has it too");

    // The effect: debug lines are now written to the agent's log too.
    send_garbage(&a);
    eventually("a debug line in the agent's log", LIMIT, || {
        if a.log().contains("DEBUG") {
            Ok(())
        } else {
            Err("none yet".into())
        }
    });

    // A bad file: 500 with the reason, nothing changed.
    std::fs::write(&file, r#"{"log_level": "loud"}"#).expect("write");
    let (status, _, body) = a
        .request("PUT", "/v1/agent/reload", b"")
        .expect("an answer");
    assert_eq!(status, 500);
    assert!(
        text(&body).contains("log_level \"loud\""),
        "{}",
        text(&body)
    );

    // SIGHUP runs the same reload.
    std::fs::write(&file, r#"{"log_level": "info"}"#).expect("write");
    a.signal(nix::sys::signal::Signal::SIGHUP);
    eventually("SIGHUP reloaded the file", LIMIT, || {
        let log = a.log();
        if log.contains("log level info") {
            Ok(())
        } else {
            Err("not yet".into())
        }
    });
    let (status, _, _) = a
        .request("GET", "/v1/agent/reload", b"")
        .expect("an answer");
    assert_eq!(status, 405);
}

#[test]
fn token_endpoints_answer_as_consul_does() {
    // ACLs off: 401 for any type, before the body is looked at.
    let a = Agent::dev().start();
    for (path, body) in [
        ("/v1/agent/token/default", r#"{"Token":"t"}"#),
        ("/v1/agent/token/nope", "not json"),
    ] {
        let (status, _, answer) = a.request("PUT", path, body.as_bytes()).expect("an answer");
        assert_eq!(
            (status, text(&answer)),
            (401, "ACL support disabled".into())
        );
    }
    drop(a);

    // ACLs on (a master token): the valid names, legacy ones too.
    let a = Agent::dev().args(["--acl-token", "s3cret"]).start();
    let put = |path: &str, body: &str| {
        let (status, _, answer) = a.request("PUT", path, body.as_bytes()).expect("an answer");
        (status, text(&answer))
    };
    for kind in [
        "default",
        "agent",
        "agent_recovery",
        "acl_agent_master_token",
        "replication",
        "config_file_service_registration",
        "dns",
    ] {
        assert_eq!(
            put(
                &format!("/v1/agent/token/{kind}?token=s3cret"),
                r#"{"Token":"abc"}"#
            ),
            (200, String::new()),
            "{kind}"
        );
    }
    assert_eq!(
        put("/v1/agent/token/nope?token=s3cret", r#"{"Token":"abc"}"#),
        (404, "Token \"nope\" is unknown".into())
    );
    let (status, body) = put("/v1/agent/token/default?token=s3cret", "{");
    assert_eq!(status, 400);
    assert!(body.starts_with("Request decode failed: "), "{body}");
    // Without the master token: refused.
    assert_eq!(put("/v1/agent/token/default", r#"{"Token":"abc"}"#).0, 403);
}

/// The status code and text of `GET path` sent with `Accept: text/plain`.
fn get_accepting_text(a: &Agent, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(a.http).expect("connect");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nAccept: text/plain\r\nConnection: close\r\n\r\n"
    )
    .expect("send");
    let mut raw = String::new();
    s.read_to_string(&mut raw).expect("read");
    let code = raw
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status");
    let body = raw.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    (code, body.to_string())
}

#[test]
fn agent_health_service_answers_a_load_balancer() {
    let a = Agent::dev().start();
    let status = |path: &str| {
        let (code, _, body) = a.request("GET", path, b"").expect("an answer");
        (code, text(&body))
    };
    for (id, check_status) in [("web1", "passing"), ("web2", "warning")] {
        let body = format!(
            r#"{{"ID":"{id}","Name":"web","Port":80,"Check":{{"TTL":"60s","Status":"{check_status}"}}}}"#
        );
        let (code, _, b) = a
            .request("PUT", "/v1/agent/service/register", body.as_bytes())
            .expect("register");
        assert_eq!(code, 200, "{}", text(&b));
    }

    // One instance: its own status, as text and as JSON.
    assert_eq!(
        status("/v1/agent/health/service/id/web1?format=text"),
        (200, "passing".into())
    );
    assert_eq!(
        status("/v1/agent/health/service/id/web2?format=text"),
        (429, "warning".into())
    );
    assert_eq!(
        get_accepting_text(&a, "/v1/agent/health/service/id/web2"),
        (429, "warning".into())
    );
    let (code, body) = status("/v1/agent/health/service/id/web1");
    assert_eq!(code, 200);
    let one: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(one["AggregatedStatus"], "passing");
    assert_eq!(one["Service"]["ID"], "web1");
    assert_eq!(one["Service"]["Service"], "web");
    let checks = one["Checks"].as_array().expect("Checks");
    assert_eq!(checks.len(), 1, "{one}");
    assert_eq!(checks[0]["CheckID"], "service:web1");
    assert_eq!(checks[0]["Status"], "passing");

    // By name: every instance, and the worst one's code.
    let (code, body) = status("/v1/agent/health/service/name/web");
    assert_eq!(code, 429);
    let all: Value = serde_json::from_str(&body).expect("JSON");
    let statuses: Vec<&str> = all
        .as_array()
        .expect("a list")
        .iter()
        .map(|e| e["AggregatedStatus"].as_str().expect("status"))
        .collect();
    assert_eq!(statuses, ["passing", "warning"]);
    let (code, _, _) = a
        .request("PUT", "/v1/agent/check/fail/service:web1", b"")
        .expect("fail");
    assert_eq!(code, 200);
    assert_eq!(
        status("/v1/agent/health/service/name/web?format=text"),
        (503, "critical".into())
    );

    // Maintenance: the service's own, then the node's, which every
    // service on the node shares.
    let (code, _, _) = a
        .request("PUT", "/v1/agent/service/maintenance/web2?enable=true", b"")
        .expect("maintenance");
    assert_eq!(code, 200);
    assert_eq!(
        status("/v1/agent/health/service/id/web2?format=text"),
        (503, "maintenance".into())
    );
    let (code, _, _) = a
        .request("PUT", "/v1/agent/check/pass/service:web1", b"")
        .expect("pass");
    assert_eq!(code, 200);
    assert_eq!(
        status("/v1/agent/health/service/id/web1?format=text"),
        (200, "passing".into())
    );
    let (code, _, _) = a
        .request("PUT", "/v1/agent/maintenance?enable=true", b"")
        .expect("node maintenance");
    assert_eq!(code, 200);
    assert_eq!(
        status("/v1/agent/health/service/id/web1?format=text"),
        (503, "maintenance".into())
    );

    // Unknown and missing.
    assert_eq!(
        status("/v1/agent/health/service/id/nope?format=text"),
        (404, "ServiceId nope not found".into())
    );
    let (code, body) = status("/v1/agent/health/service/id/nope");
    assert_eq!(code, 404);
    assert_eq!(
        serde_json::from_str::<Value>(&body).expect("JSON"),
        serde_json::json!({"AggregatedStatus": "critical", "Service": null, "Checks": null})
    );
    assert_eq!(
        status("/v1/agent/health/service/name/nope?format=text"),
        (404, "ServiceName nope Not Found".into())
    );
    assert_eq!(
        status("/v1/agent/health/service/name/nope"),
        (404, "[]".into())
    );
    assert_eq!(
        status("/v1/agent/health/service/id/"),
        (400, "Missing serviceID".into())
    );
    assert_eq!(
        status("/v1/agent/health/service/name/"),
        (400, "Missing service Name".into())
    );
    // The servers' own `consul` service is not an agent service.
    assert_eq!(status("/v1/agent/health/service/name/consul").0, 404);
}
