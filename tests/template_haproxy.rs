//! The shipped HAProxy example (`config-examples/haproxy/`) end to end:
//! `pilotfish run` renders it from a real `pilotfish agent --dev`, checks it
//! with the real `haproxy -c`, and supervises a real HAProxy in master-worker
//! mode; tiny HTTP backends run by the test answer with their own ID and the
//! path they were asked for, so a request through HAProxy shows which
//! instance it reached. Skipped (with a note) when `haproxy` is not on PATH.

// Only the single-agent and runner parts of the harness are used here.
#[allow(dead_code, unused_imports)]
mod common;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::agent::{free_port, Agent};
use common::runner::Pilotfish;
use common::{eventually, http_with_timeout, text};
use serde_json::Value;

/// An upper bound for anything the watcher, HAProxy or the agent does; never
/// an expectation.
const LIMIT: Duration = Duration::from_secs(30);

fn haproxy_missing() -> bool {
    let ok = std::process::Command::new("haproxy")
        .arg("-v")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!("skipped: `haproxy` is not on PATH (apt-get install haproxy)");
    }
    !ok
}

// ---------------------------------------------------------------- backends

/// One HTTP backend instance: answers every request with `<id> <path>`.
struct Backend {
    id: String,
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    accept: Option<std::thread::JoinHandle<()>>,
}

impl Backend {
    fn start(id: &str) -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a backend");
        let addr = listener.local_addr().expect("its address");
        let stop = Arc::new(AtomicBool::new(false));
        let (me, halt) = (id.to_string(), Arc::clone(&stop));
        let accept = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if halt.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(conn) = conn else { continue };
                let me = me.clone();
                std::thread::spawn(move || serve(conn, &me));
            }
        });
        Backend {
            id: id.to_string(),
            addr,
            stop,
            accept: Some(accept),
        }
    }
}

/// Answer requests on one connection until the client closes it (keep-alive
/// is honoured; HAProxy's health checks and proxied requests both come here).
fn serve(mut conn: TcpStream, id: &str) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(30)));
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let end = loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break end;
            }
            match conn.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_string();
        // Requests here carry no body (GETs and HAProxy's checks).
        buf.drain(..end + 4);
        let path = head
            .lines()
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .unwrap_or("?")
            .to_string();
        let close = head
            .lines()
            .any(|l| l.to_ascii_lowercase().starts_with("connection:") && l.contains("close"));
        let body = format!("{id} {path}\n");
        let answer = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n{}\r\n{body}",
            body.len(),
            if close { "Connection: close\r\n" } else { "" }
        );
        if conn.write_all(answer.as_bytes()).is_err() || close {
            return;
        }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

// ---------------------------------------------------------------- the catalog

fn put(agent: &Agent, path: &str, body: &str) {
    match agent.request("PUT", path, body.as_bytes()) {
        Ok((200, _, _)) => {}
        other => panic!("PUT {path}: {other:?}"),
    }
}

/// Register `b` as an instance of `web` tagged `rest`, with a passing TTL
/// check `chk-<id>` when `ttl`.
fn register(agent: &Agent, b: &Backend, ttl: bool) {
    let check = if ttl {
        format!(
            r#","Check":{{"CheckID":"chk-{}","Name":"ttl","TTL":"1h","Status":"passing"}}"#,
            b.id
        )
    } else {
        String::new()
    };
    let body = format!(
        r#"{{"ID":"{}","Name":"web","Tags":["rest"],"Address":"127.0.0.1","Port":{}{check}}}"#,
        b.id,
        b.addr.port()
    );
    put(agent, "/v1/agent/service/register", &body);
}

fn deregister(agent: &Agent, id: &str) {
    put(agent, &format!("/v1/agent/service/deregister/{id}"), "");
}

// ---------------------------------------------------------------- the stack

/// pilotfish running the shipped example, HAProxy under it.
struct Stack {
    pf: Pilotfish,
    /// Holds the rendered config and the admin socket.
    run: tempfile::TempDir,
    bind: SocketAddr,
}

fn example_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("config-examples/haproxy")
}

impl Stack {
    /// `wait`: TEMPLATE_WAIT_MIN and _MAX.
    fn start(agent: &Agent, wait: (&str, &str)) -> Stack {
        Stack::start_mode(agent, wait, false)
    }

    /// `reload_free`: the example's commented `haproxy = { socket }` line on.
    fn start_mode(agent: &Agent, wait: (&str, &str), reload_free: bool) -> Stack {
        let dir = example_dir();
        let example =
            std::fs::read_to_string(dir.join("haproxy.toml")).expect("the shipped example");
        // The runner writes the config into a temp dir of its own; the
        // template stays where it ships.
        let source = r#"source = "haproxy.cfg.hbs""#;
        assert!(
            example.contains(source),
            "the example no longer has {source}; update this test"
        );
        let mut config = example.replace(
            source,
            &format!(
                "source = {:?}",
                dir.join("haproxy.cfg.hbs").display().to_string()
            ),
        );
        if reload_free {
            let line = "# haproxy = { socket";
            assert!(config.contains(line), "the example no longer has {line}");
            config = config.replace(line, "haproxy = { socket");
        }
        let run = tempfile::tempdir().expect("temp dir");
        let bind: SocketAddr = format!("127.0.0.1:{}", free_port("127.0.0.1"))
            .parse()
            .expect("an address");
        let cfg = run.path().join("haproxy.cfg").display().to_string();
        let pf = Pilotfish::start_with_env(
            &config,
            &[
                ("CONSUL_HTTP_ADDR", &agent.http.to_string()),
                ("HAPROXY_CONFIG", &cfg),
                ("HAPROXY_RUN", &run.path().display().to_string()),
                ("HAPROXY_BIND", &bind.to_string()),
                ("TEMPLATE_WAIT_MIN", wait.0),
                ("TEMPLATE_WAIT_MAX", wait.1),
            ],
        );
        pf.wait_ready();
        let stack = Stack { pf, run, bind };
        stack.eventually("HAProxy answers on its frontend", || {
            stack.get("/").map(|_| ())
        });
        stack
    }

    fn config_path(&self) -> PathBuf {
        self.run.path().join("haproxy.cfg")
    }

    /// The installed config.
    fn config(&self) -> String {
        std::fs::read_to_string(self.config_path()).unwrap_or_default()
    }

    /// GET through HAProxy on a fresh connection: (status, body).
    fn get(&self, path: &str) -> Result<(u16, String), String> {
        match http_with_timeout(self.bind, "GET", path, b"", Duration::from_secs(10)) {
            Ok((status, _, body)) => Ok((status, text(&body))),
            Err(e) => Err(format!("GET {path} through HAProxy: {e}")),
        }
    }

    /// The instances `/web` reaches over enough requests to go round a
    /// roundrobin of `expect` servers twice; every request must succeed.
    fn rotation(&self, expect: usize) -> Result<BTreeSet<String>, String> {
        let mut seen = BTreeSet::new();
        for _ in 0..2 * expect.max(1) + 2 {
            match self.get("/web")? {
                (200, body) => {
                    seen.insert(body.split(' ').next().unwrap_or_default().to_string());
                }
                (status, body) => return Err(format!("/web: HTTP {status} {body}")),
            }
        }
        Ok(seen)
    }

    /// Wait until `/web` reaches exactly `ids`.
    fn wait_rotation(&self, ids: &[&str]) {
        let want: BTreeSet<String> = ids.iter().map(|s| s.to_string()).collect();
        self.eventually(&format!("/web reaches exactly {ids:?}"), || {
            let seen = self.rotation(ids.len())?;
            if seen == want {
                Ok(())
            } else {
                Err(format!("reached {seen:?}"))
            }
        });
    }

    /// The one template's entry of `/v3/status`.
    fn template_status(&self) -> Value {
        let s = self.pf.status_json();
        let list = s["templates"].as_array().cloned().unwrap_or_default();
        assert_eq!(list.len(), 1, "one template in {s}");
        list[0].clone()
    }

    fn installs(&self) -> u64 {
        self.template_status()["installs"]
            .as_u64()
            .expect("installs is a number")
    }

    /// How many reload signals pilotfish has sent HAProxy's master.
    fn reloads(&self) -> usize {
        self.pf
            .log()
            .matches("templates: SIGUSR2 to job haproxy")
            .count()
    }

    /// `eventually`, with pilotfish's log (HAProxy's output included) and
    /// the installed config in the panic.
    fn eventually<T>(&self, what: &str, f: impl FnMut() -> Result<T, String>) -> T {
        let r =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| eventually(what, LIMIT, f)));
        match r {
            Ok(v) => v,
            Err(e) => {
                eprintln!(
                    "----- pilotfish log -----\n{}\n----- {} -----\n{}",
                    self.pf.log(),
                    self.config_path().display(),
                    self.config()
                );
                std::panic::resume_unwind(e)
            }
        }
    }
}

// ---------------------------------------------------------------- the tests

#[test]
fn routes_web_to_its_healthy_instances_as_the_catalog_changes() {
    if haproxy_missing() {
        return;
    }
    let agent = Agent::dev().start();
    let (a, b) = (Backend::start("web-a"), Backend::start("web-b"));
    register(&agent, &a, true);
    let lb = Stack::start(&agent, ("0s", "0s"));

    // Routing and the replace-path.
    lb.wait_rotation(&["web-a"]);
    assert_eq!(lb.get("/web/x").expect("/web/x"), (200, "web-a /x".into()));
    assert_eq!(lb.get("/web").expect("/web"), (200, "web-a /".into()));
    let (status, _) = lb.get("/nothing").expect("/nothing");
    assert_ne!(status, 200, "a path no service claims is not routed");

    // A second instance joins the rotation; a deregistered one leaves it.
    register(&agent, &b, true);
    lb.wait_rotation(&["web-a", "web-b"]);
    assert!(
        lb.config().contains(&format!("server web-b {}", b.addr)),
        "{}",
        lb.config()
    );
    deregister(&agent, "web-a");
    lb.wait_rotation(&["web-b"]);
    assert!(!lb.config().contains("server web-a"), "{}", lb.config());

    // A failing check takes an instance out; passing again brings it back.
    register(&agent, &a, true);
    lb.wait_rotation(&["web-a", "web-b"]);
    put(&agent, "/v1/agent/check/fail/chk-web-b", "");
    lb.wait_rotation(&["web-a"]);
    put(&agent, "/v1/agent/check/pass/chk-web-b", "");
    lb.wait_rotation(&["web-a", "web-b"]);

    let t = lb.template_status();
    assert_eq!(t["state"], "ok", "{t}");
    assert!(t["installs"].as_u64() >= Some(6), "{t}");
    assert!(lb.reloads() >= 5, "one reload per change:\n{}", lb.pf.log());
}

#[test]
fn a_refused_config_and_a_discovery_outage_keep_the_last_good_file_serving() {
    if haproxy_missing() {
        return;
    }
    let mut agent = Agent::dev().start();
    let (a, b, c) = (
        Backend::start("web-a"),
        Backend::start("web-b"),
        Backend::start("web-c"),
    );
    register(&agent, &a, false);
    register(&agent, &b, false);
    let mut lb = Stack::start(&agent, ("0s", "0s"));
    lb.wait_rotation(&["web-a", "web-b"]);

    // An invalid directive in `defaults`: `haproxy -c` refuses the candidate.
    let good = lb.config();
    let installs = lb.installs();
    put(
        &agent,
        "/v1/kv/service/haproxy/defaults-extra",
        "    no-such-directive on",
    );
    let t = lb.eventually("the template fails its check", || {
        let t = lb.template_status();
        if t["state"] == "failed" {
            Ok(t)
        } else {
            Err(t.to_string())
        }
    });
    // last_error carries what HAProxy said about the candidate.
    let err = t["last_error"].as_str().unwrap_or_default();
    assert!(
        err.starts_with("check: the check refused the new file: haproxy -c")
            && err.contains("exit status 1")
            && err.contains("no-such-directive"),
        "last_error names the check, how it ended and the bad line: {t}"
    );
    assert_eq!(t["installs"].as_u64(), Some(installs), "{t}");
    assert_eq!(lb.config(), good, "the installed file is unchanged");
    assert!(lb
        .pf
        .log()
        .contains("template haproxy: the check refused the new file"));
    assert!(lb.pf.log().contains("keeps its last good contents"));
    lb.wait_rotation(&["web-a", "web-b"]);
    let leftovers: Vec<_> = std::fs::read_dir(lb.run.path())
        .expect("the run dir")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n.contains("pilotfish-"))
        .collect();
    assert!(
        leftovers.is_empty(),
        "refused candidates left: {leftovers:?}"
    );

    // Fixing the key recovers.
    put(
        &agent,
        "/v1/kv/service/haproxy/defaults-extra",
        "    option forwardfor",
    );
    lb.eventually("the fixed config goes in", || {
        let t = lb.template_status();
        if t["state"] == "ok" && lb.config().contains("option forwardfor") {
            Ok(())
        } else {
            Err(t.to_string())
        }
    });
    assert!(lb.template_status().get("last_error").is_none());
    lb.wait_rotation(&["web-a", "web-b"]);

    // Discovery outage: the agent dies; the last file keeps serving.
    let good = lb.config();
    let installs = lb.installs();
    let (http, dns, server) = (agent.http.port(), agent.dns, agent.server_port);
    agent.kill();
    let t = lb.eventually("the template is marked stale", || {
        let t = lb.template_status();
        if t["state"] == "stale" && t["stale_since"].as_u64().is_some() {
            Ok(t)
        } else {
            Err(t.to_string())
        }
    });
    let since = t["stale_since"].as_u64().expect("stale_since");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("a clock after 1970")
        .as_secs();
    assert!(
        since <= now && since + 120 > now,
        "stale_since {since}, now {now}"
    );
    // Several rounds of retries against the dead agent.
    lb.eventually("the watch retries the dead agent", || {
        let n = lb
            .pf
            .log()
            .matches("keeping the last rendered files")
            .count();
        let t = lb.template_status();
        if n >= 1 && t["stale_since"].as_u64() == Some(since) {
            Ok(())
        } else {
            Err(format!("{n} warnings; {t}"))
        }
    });
    lb.wait_rotation(&["web-a", "web-b"]);
    assert_eq!(lb.config(), good, "nothing rendered from the outage");
    assert_eq!(lb.installs(), installs);
    assert!(
        matches!(lb.pf.child.try_wait(), Ok(None)),
        "pilotfish keeps running"
    );

    // A new --dev agent on the same ports has an empty catalog: register
    // again (a different set) and the template follows the new data.
    let agent = Agent::dev().ports(http, dns, server).start();
    put(
        &agent,
        "/v1/kv/service/haproxy/defaults-extra",
        "    option forwardfor",
    );
    register(&agent, &c, false);
    lb.wait_rotation(&["web-c"]);
    lb.eventually("the template is ok again", || {
        let t = lb.template_status();
        if t["state"] == "ok" && t.get("stale_since").is_none() {
            Ok(())
        } else {
            Err(t.to_string())
        }
    });
    assert!(lb.pf.log().contains("the agent answers again"));
}

#[test]
fn a_burst_of_registrations_is_one_install_and_one_reload() {
    if haproxy_missing() {
        return;
    }
    let agent = Agent::dev().start();
    let first = Backend::start("web-0");
    register(&agent, &first, false);
    // Quiescence on: a change waits 2 s for the next, at most 20 s in all.
    let lb = Stack::start(&agent, ("2s", "20s"));
    lb.wait_rotation(&["web-0"]);
    let (installs, reloads) = (lb.installs(), lb.reloads());

    let burst: Vec<Backend> = (1..=5)
        .map(|i| Backend::start(&format!("web-{i}")))
        .collect();
    for b in &burst {
        register(&agent, b, false);
    }
    lb.eventually("all five are in the installed file", || {
        let cfg = lb.config();
        let n = burst
            .iter()
            .filter(|b| cfg.contains(&format!("server {} {}", b.id, b.addr)))
            .count();
        if n == 5 {
            Ok(())
        } else {
            Err(format!("{n} of 5"))
        }
    });
    lb.eventually("HAProxy's master gets a reload", || {
        if lb.reloads() > reloads {
            Ok(())
        } else {
            Err("no SIGUSR2 yet".into())
        }
    });
    assert_eq!(lb.installs(), installs + 1, "one install for the burst");
    assert_eq!(
        lb.reloads(),
        reloads + 1,
        "one SIGUSR2 for the burst:\n{}",
        lb.pf.log()
    );
    lb.wait_rotation(&["web-0", "web-1", "web-2", "web-3", "web-4", "web-5"]);
    assert_eq!(lb.reloads(), reloads + 1, "{}", lb.pf.log());
}

#[test]
fn reload_free_mode_moves_instances_without_a_reload() {
    if haproxy_missing() {
        return;
    }
    let agent = Agent::dev().start();
    let a = Backend::start("web-a");
    register(&agent, &a, false);
    let lb = Stack::start_mode(&agent, ("0s", "0s"), true);
    lb.wait_rotation(&["web-a"]);
    let reloads = lb.reloads();

    // Instances come and go: Runtime API commands, no reload.
    let b = Backend::start("web-b");
    register(&agent, &b, false);
    lb.wait_rotation(&["web-a", "web-b"]);
    deregister(&agent, "web-a");
    lb.wait_rotation(&["web-b"]);
    assert_eq!(
        lb.reloads(),
        reloads,
        "no reload for instances:\n{}",
        lb.pf.log()
    );
    assert!(
        lb.pf
            .log()
            .contains("applied the server changes, no reload"),
        "{}",
        lb.pf.log()
    );
    assert!(
        lb.config().contains(&format!("server web-b {}", b.addr)) && !lb.config().contains("web-a"),
        "the installed file follows, for the next reload:\n{}",
        lb.config()
    );

    // A new service is a new backend: that takes a render and a reload.
    put(
        &agent,
        "/v1/agent/service/register",
        &format!(
            r#"{{"Name":"api","ID":"api-1","Address":"{}","Port":{},"Tags":["rest"]}}"#,
            a.addr.ip(),
            a.addr.port()
        ),
    );
    lb.eventually("the new service reloads HAProxy", || {
        if lb.reloads() > reloads {
            Ok(())
        } else {
            Err("no SIGUSR2 yet".into())
        }
    });
    lb.eventually("/api reaches its instance", || match lb.get("/api")? {
        (200, body) if body.starts_with("web-a") => Ok(()),
        other => Err(format!("{other:?}")),
    });
}
