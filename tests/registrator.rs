//! `pilotfish registrator` end to end: the real binary against a real
//! `pilotfish agent --dev` and the real Docker engine of this machine, with
//! a tiny image made here (Debian's static busybox, `docker import`ed: no
//! image is pulled). Every container and image a test makes is labelled
//! `pilotfish-test=registrator` and removed on drop.
//!
//! The engine's event stream cannot be broken on demand, so
//! `reconnects_after_the_event_stream_breaks` runs the registrator against
//! a fake daemon on a Unix socket that ends the stream (the one fault a
//! real engine cannot be made to produce in a test).
//!
//! The Docker tests are skipped, saying so, only when no engine answers on
//! /var/run/docker.sock.

#[allow(dead_code, unused_imports)]
mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

use common::agent::{free_port, Agent, BIN};
use common::eventually;

const SOCKET: &str = "/var/run/docker.sock";
const LABEL: &str = "pilotfish-test=registrator";
const LIMIT: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------- Docker

/// Whether an engine answers `GET /_ping` on the socket.
fn docker_available() -> bool {
    let Ok(mut s) = UnixStream::connect(SOCKET) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    if s.write_all(b"GET /_ping HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    answer.starts_with("HTTP/1.1 200")
}

/// Skip (with a printed reason) when there is no engine.
macro_rules! need_docker {
    () => {
        if !docker_available() {
            eprintln!("SKIPPED: no Docker engine answers on {SOCKET}");
            return;
        }
    };
}

fn docker(args: &[&str]) -> String {
    let out = Command::new("docker")
        .args(args)
        .output()
        .expect("run the docker CLI");
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

static SEQ: AtomicUsize = AtomicUsize::new(0);

/// The test image (one tag per test, removed on drop) and the containers
/// a test started from it.
struct Containers {
    image: String,
    prefix: String,
    names: Mutex<Vec<String>>,
    networks: Mutex<Vec<String>>,
}

impl Containers {
    /// An image `pilotfish-test-busybox:<test>-<pid>` whose default command
    /// serves HTTP on port 80 (exposed).
    fn new(test: &str) -> Containers {
        let busybox = ["/bin/busybox", "/usr/bin/busybox"]
            .into_iter()
            .map(Path::new)
            .find(|p| p.exists())
            .expect("busybox (Debian's busybox-static; tests/run.sh installs it)");
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path();
        std::fs::create_dir_all(root.join("bin")).expect("bin");
        std::fs::create_dir_all(root.join("www")).expect("www");
        std::fs::copy(busybox, root.join("bin/busybox")).expect("copy busybox");
        for applet in ["sh", "httpd", "sleep", "touch", "rm", "[", "test"] {
            std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).expect("link");
        }
        std::fs::write(root.join("www/index.html"), "hello\n").expect("index");
        let image = format!("pilotfish-test-busybox:{test}-{}", std::process::id());
        let mut tar = Command::new("tar")
            .args(["-C", &root.to_string_lossy(), "-c", "."])
            .stdout(Stdio::piped())
            .spawn()
            .expect("tar");
        let out = Command::new("docker")
            .args([
                "import",
                "--change",
                r#"CMD ["/bin/busybox", "httpd", "-f", "-p", "80", "-h", "/www"]"#,
                "--change",
                "EXPOSE 80",
                "--change",
                &format!("LABEL {LABEL}"),
                "-",
                &image,
            ])
            .stdin(tar.stdout.take().expect("tar's output"))
            .output()
            .expect("docker import");
        assert!(
            tar.wait().expect("tar exits").success(),
            "tar of the image failed"
        );
        assert!(
            out.status.success(),
            "docker import: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Containers {
            image,
            prefix: format!("pf-{test}-{}", std::process::id()),
            names: Mutex::new(Vec::new()),
            networks: Mutex::new(Vec::new()),
        }
    }

    /// A user-defined bridge network (removed on drop): its name.
    fn network(&self) -> String {
        let name = format!("{}-net-{}", self.prefix, SEQ.fetch_add(1, Ordering::SeqCst));
        self.networks.lock().expect("networks").push(name.clone());
        docker(&["network", "create", "--label", LABEL, &name]);
        name
    }

    /// `docker run -d --name <new name> <args> IMAGE <cmd>`: the name.
    fn run(&self, args: &[&str], cmd: &[&str]) -> String {
        let name = format!("{}-{}", self.prefix, SEQ.fetch_add(1, Ordering::SeqCst));
        self.names.lock().expect("names").push(name.clone());
        let mut all = vec!["run", "-d", "--name", &name, "-l", LABEL];
        all.extend_from_slice(args);
        all.push(&self.image);
        all.extend_from_slice(cmd);
        docker(&all);
        name
    }

    /// The host port `port` (`80/tcp`) is published on.
    fn host_port(&self, name: &str, port: &str) -> u16 {
        let out = docker(&["port", name, port]);
        out.lines()
            .next()
            .and_then(|l| l.rsplit(':').next())
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("docker port {name} {port}: {out}"))
    }
}

impl Drop for Containers {
    fn drop(&mut self) {
        let names = self.names.lock().map(|n| n.clone()).unwrap_or_default();
        if !names.is_empty() {
            let mut args = vec!["rm", "-f"];
            args.extend(names.iter().map(String::as_str));
            let _ = Command::new("docker").args(&args).output();
        }
        for net in self.networks.lock().map(|n| n.clone()).unwrap_or_default() {
            let _ = Command::new("docker")
                .args(["network", "rm", &net])
                .output();
        }
        let _ = Command::new("docker")
            .args(["rmi", "-f", &self.image])
            .output();
    }
}

// ---------------------------------------------------------------- the registrator

struct Registrator {
    child: Option<Child>,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Registrator {
    fn start(agent_http: &str, args: &[&str]) -> Registrator {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = dir.path().join("registrator.log");
        let file = std::fs::File::create(&log).expect("log");
        let child = Command::new(BIN)
            .arg("registrator")
            .arg(format!("consul://{agent_http}"))
            .args(args)
            .env_remove("DOCKER_HOST")
            .env_remove("CONSUL_HTTP_TOKEN")
            .env_remove("PILOTFISH_LOG")
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log"))
            .stderr(file)
            .spawn()
            .expect("start pilotfish registrator");
        Registrator {
            child: Some(child),
            log,
            _dir: dir,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM; it must exit 0.
    fn stop(&mut self) {
        let child = self.child.as_mut().expect("running");
        let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("pid"));
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
        let status = eventually("the registrator exits", LIMIT, || match child.try_wait() {
            Ok(Some(s)) => Ok(s),
            other => Err(format!("{other:?}")),
        });
        assert!(status.success(), "{status}: {}", self.log());
        self.child = None;
    }
}

impl Drop for Registrator {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            eprintln!("----- registrator log -----\n{}", self.log());
        }
    }
}

// ---------------------------------------------------------------- the agent

fn get_json(agent: &Agent, path: &str) -> Value {
    let (status, _, body) = agent.request("GET", path, b"").expect("agent answers");
    assert_eq!(status, 200, "{path}: {}", common::text(&body));
    serde_json::from_slice(&body).expect("JSON")
}

fn services(agent: &Agent) -> Value {
    get_json(agent, "/v1/agent/services")
}

/// The agent's service `id`, once it is there.
fn registered(agent: &Agent, id: &str) -> Value {
    eventually(&format!("{id} is registered"), LIMIT, || {
        let all = services(agent);
        all.get(id).cloned().ok_or_else(|| format!("{all}"))
    })
}

fn deregistered(agent: &Agent, id: &str) {
    eventually(&format!("{id} is deregistered"), LIMIT, || {
        let all = services(agent);
        match all.get(id) {
            Some(_) => Err(format!("{all}")),
            None => Ok(()),
        }
    });
}

// ---------------------------------------------------------------- tests

#[test]
fn registers_running_containers_and_deregisters_stopped_ones() {
    need_docker!();
    let containers = Containers::new("events");
    let agent = Agent::dev().start();
    let host = format!("reg-events-{}", std::process::id());
    let _registrator = Registrator::start(
        &agent.http.to_string(),
        &[
            "--hostname",
            &host,
            "--ip",
            "127.0.0.1",
            "--tags",
            "from-flag",
        ],
    );
    let name = format!("hello-{}", std::process::id());
    let web = containers.run(
        &[
            "-p",
            "80",
            "-e",
            &format!("SERVICE_NAME={name}"),
            "-e",
            "SERVICE_TAGS=rest",
            "-e",
            "SERVICE_CHECK_TCP=true",
            "-e",
            "SERVICE_REGION=from-env",
            "-l",
            "SERVICE_REGION=from-label",
            "-e",
            "SERVICE_VERSION=1.2",
        ],
        &[],
    );
    let id = format!("{host}:{web}:80");
    let svc = registered(&agent, &id);
    assert_eq!(svc["Service"], name);
    assert_eq!(svc["Address"], "127.0.0.1");
    assert_eq!(svc["Port"], containers.host_port(&web, "80/tcp"));
    assert_eq!(svc["Tags"], json!(["rest", "from-flag"]));
    // The label beats the env; other keys are Meta, lower-cased.
    assert_eq!(
        svc["Meta"],
        json!({"region": "from-label", "version": "1.2", "check_tcp": "true"})
    );
    // The TCP check reaches the published port and passes.
    eventually("the TCP check passes", LIMIT, || {
        let entries = get_json(&agent, &format!("/v1/health/service/{name}?passing"));
        match entries.as_array().map(Vec::len) {
            Some(1) => Ok(()),
            _ => Err(format!(
                "{}",
                get_json(&agent, &format!("/v1/health/service/{name}"))
            )),
        }
    });
    let checks = get_json(&agent, "/v1/agent/checks");
    let check = &checks[format!("service:{id}")];
    assert_eq!(check["Type"], "tcp", "{checks}");

    // SERVICE_IGNORE: never registered. Events are handled in order, so
    // once the container started after it is registered, it was seen.
    let ignored = containers.run(&["-p", "80", "-e", "SERVICE_IGNORE=true"], &[]);
    let after = containers.run(&["-p", "80"], &[]);
    let plain = registered(&agent, &format!("{host}:{after}:80"));
    // No SERVICE_NAME: the image's base name.
    assert_eq!(plain["Service"], "pilotfish-test-busybox");
    assert!(services(&agent)
        .get(format!("{host}:{ignored}:80"))
        .is_none());

    // An exposed port that is not published is skipped; with one port,
    // no -80 suffix.
    let unpublished = containers.run(&[], &[]);
    let marker = containers.run(&["-p", "80"], &[]);
    registered(&agent, &format!("{host}:{marker}:80"));
    assert!(services(&agent)
        .get(format!("{host}:{unpublished}:80"))
        .is_none());

    // docker stop (busybox httpd as PID 1 ignores SIGTERM: killed) → gone.
    docker(&["stop", "-t", "1", &web]);
    deregistered(&agent, &id);
}

#[test]
fn internal_uses_the_address_on_a_user_defined_network() {
    need_docker!();
    let containers = Containers::new("internal");
    let agent = Agent::dev().start();
    let host = format!("reg-internal-{}", std::process::id());
    let _registrator = Registrator::start(
        &agent.http.to_string(),
        &["--hostname", &host, "--internal"],
    );
    let net = containers.network();
    // Nothing published: --internal registers the exposed port anyway.
    let api = containers.run(&["--network", &net, "-e", "SERVICE_NAME=api"], &[]);
    let svc = registered(&agent, &format!("{host}:{api}:80"));
    // The top-level NetworkSettings.IPAddress is empty on a user-defined
    // network (Registrator's #291); the address is the one on `net`.
    let ip = docker(&[
        "inspect",
        "-f",
        &format!("{{{{(index .NetworkSettings.Networks \"{net}\").IPAddress}}}}"),
        &api,
    ]);
    assert!(!ip.is_empty());
    assert_eq!(svc["Address"], ip);
    assert_eq!(svc["Port"], 80);
    assert_eq!(svc["Service"], "api");
}

#[test]
fn reconciles_at_start_and_cleans_up_what_died_meanwhile() {
    need_docker!();
    let containers = Containers::new("reconcile");
    let agent = Agent::dev().start();
    let http = agent.http.to_string();
    let host = format!("reg-reconcile-{}", std::process::id());
    let args = [
        "--hostname",
        host.as_str(),
        "--ip",
        "127.0.0.1",
        "--cleanup",
    ];
    let mut first = Registrator::start(&http, &args);
    let early = containers.run(&["-p", "80"], &[]);
    let early_id = format!("{host}:{early}:80");
    registered(&agent, &early_id);
    // Stopping the registrator leaves its services (Registrator's way).
    first.stop();
    assert!(services(&agent).get(&early_id).is_some());

    // While it is down: one container goes, another comes.
    docker(&["rm", "-f", &early]);
    let late = containers.run(&["-p", "80", "-e", "SERVICE_NAME=late"], &[]);
    // Registrator-shaped IDs: one of this host that no container explains
    // (cleanup removes it) and one of another host (left alone).
    for (id, name) in [
        (format!("{host}:ghost:80"), "ghost"),
        ("other-host:ghost:80".to_string(), "ghost"),
    ] {
        let body = json!({"ID": id, "Name": name, "Port": 1}).to_string();
        let (status, _, answer) = agent
            .request("PUT", "/v1/agent/service/register", body.as_bytes())
            .expect("agent answers");
        assert_eq!(status, 200, "{}", common::text(&answer));
    }

    let _second = Registrator::start(&http, &args);
    let svc = registered(&agent, &format!("{host}:{late}:80"));
    assert_eq!(svc["Service"], "late");
    deregistered(&agent, &early_id);
    deregistered(&agent, &format!("{host}:ghost:80"));
    assert!(services(&agent).get("other-host:ghost:80").is_some());
}

#[test]
fn on_success_keeps_a_failed_container_until_it_is_removed() {
    need_docker!();
    let containers = Containers::new("onsuccess");
    let agent = Agent::dev().start();
    let host = format!("reg-onsuccess-{}", std::process::id());
    let _registrator = Registrator::start(
        &agent.http.to_string(),
        &[
            "--hostname",
            &host,
            "--ip",
            "127.0.0.1",
            "--deregister",
            "on-success",
        ],
    );
    // Serves (httpd without -f goes to the background), then fails with 3
    // once the test removes the flag file.
    let failing = containers.run(
        &["-p", "80"],
        &[
            "sh",
            "-c",
            "touch /up; httpd -p 80 -h /www; while [ -e /up ]; do sleep 0.1; done; exit 3",
        ],
    );
    let id = format!("{host}:{failing}:80");
    registered(&agent, &id);
    docker(&["exec", &failing, "rm", "/up"]);
    eventually("the container exits", LIMIT, || {
        match docker(&["inspect", "-f", "{{.State.Status}}", &failing]).as_str() {
            "exited" => Ok(()),
            other => Err(other.to_owned()),
        }
    });
    // Its exit (3) was handled: a marker container started later is
    // registered, and the failed one's service is still there.
    let marker = containers.run(&["-p", "80"], &[]);
    registered(&agent, &format!("{host}:{marker}:80"));
    assert!(services(&agent).get(&id).is_some(), "{}", services(&agent));
    docker(&["rm", &failing]);
    deregistered(&agent, &id);
    // A clean exit (0) deregisters at once.
    let clean = containers.run(
        &["-p", "80"],
        &[
            "sh",
            "-c",
            "touch /up; httpd -p 80 -h /www; while [ -e /up ]; do sleep 0.1; done; exit 0",
        ],
    );
    let clean_id = format!("{host}:{clean}:80");
    registered(&agent, &clean_id);
    docker(&["exec", &clean, "rm", "/up"]);
    deregistered(&agent, &clean_id);
}

// ---------------------------------------------------------------- a fake daemon

/// What the fake daemon serves and saw.
#[derive(Default)]
struct FakeState {
    /// Request lines, in order.
    requests: Vec<String>,
    /// Running containers by ID: their inspect JSON.
    containers: Vec<(String, Value)>,
    /// Event subscriptions accepted so far.
    streams: usize,
    /// Whether a second subscription is accepted (503 until then).
    reconnect: bool,
}

fn inspect(id: &str, name: &str, host_port: u16) -> Value {
    json!({
        "Id": id,
        "Name": format!("/{name}"),
        "Config": {
            "Hostname": "x", "Image": "fake/app:1", "Env": [format!("SERVICE_NAME={name}")],
            "Labels": null, "ExposedPorts": {"80/tcp": {}}
        },
        "State": {"Status": "running", "Running": true, "ExitCode": 0},
        "HostConfig": {"NetworkMode": "default"},
        "NetworkSettings": {
            "IPAddress": "172.17.0.9",
            "Ports": {"80/tcp": [{"HostIp": "0.0.0.0", "HostPort": host_port.to_string()}]},
            "Networks": {"bridge": {"IPAddress": "172.17.0.9"}}
        }
    })
}

/// A Docker daemon of API 1.52 (minimum 1.44, like Engine 29) on a Unix
/// socket. The first event stream sends a `start` of container B (with no
/// `status`/`id`/`from`, as 1.52 sends them) and ends; later ones are
/// refused (503) until the test allows them, then stay open.
fn fake_daemon(socket: &Path, state: Arc<Mutex<FakeState>>) {
    let listener = UnixListener::bind(socket).expect("bind the fake socket");
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { return };
            let state = state.clone();
            std::thread::spawn(move || serve_fake(conn, &state));
        }
    });
}

fn serve_fake(mut conn: UnixStream, state: &Mutex<FakeState>) {
    let mut reader = BufReader::new(conn.try_clone().expect("clone"));
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    loop {
        let mut header = String::new();
        match reader.read_line(&mut header) {
            Ok(0) | Err(_) => return,
            Ok(_) if header == "\r\n" => break,
            Ok(_) => {}
        }
    }
    let path = line.split(' ').nth(1).unwrap_or("").to_owned();
    let mut s = state.lock().expect("state");
    s.requests.push(path.clone());
    let reply = |conn: &mut UnixStream, status: &str, body: &str| {
        let _ = write!(
            conn,
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
    };
    let unversioned = path.strip_prefix("/v1.47").unwrap_or("");
    if path == "/version" {
        reply(
            &mut conn,
            "200 OK",
            r#"{"Version":"29.0.0","ApiVersion":"1.52","MinAPIVersion":"1.44"}"#,
        );
    } else if unversioned.starts_with("/events") && s.streams >= 1 && !s.reconnect {
        // The daemon is still "restarting".
        reply(
            &mut conn,
            "503 Service Unavailable",
            r#"{"message":"restarting"}"#,
        );
    } else if unversioned.starts_with("/events") {
        s.streams += 1;
        let first = s.streams == 1;
        drop(s);
        let _ = write!(
            conn,
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n"
        );
        if first {
            let event = json!({
                "Type": "container", "Action": "start",
                "Actor": {"ID": "bbbb", "Attributes": {"name": "fake-b"}},
                "scope": "local", "time": 1700000000, "timeNano": 1700000000123456789i64
            });
            let _ = writeln!(conn, "{event}");
            // Ends the stream: the daemon went away.
        } else {
            // Held open until the test ends.
            std::thread::sleep(Duration::from_secs(60));
        }
    } else if unversioned == "/containers/json" {
        let rows: Vec<Value> = s
            .containers
            .iter()
            .map(|(id, _)| json!({"Id": id}))
            .collect();
        reply(&mut conn, "200 OK", &Value::Array(rows).to_string());
    } else if let Some(id) = unversioned
        .strip_prefix("/containers/")
        .and_then(|p| p.strip_suffix("/json"))
    {
        match s.containers.iter().find(|(c, _)| c == id) {
            Some((_, body)) => reply(&mut conn, "200 OK", &body.to_string()),
            None => reply(
                &mut conn,
                "404 Not Found",
                &json!({"message": format!("No such container: {id}")}).to_string(),
            ),
        }
    } else {
        reply(
            &mut conn,
            "400 Bad Request",
            &json!({"message": format!("client version not spoken here: {path}")}).to_string(),
        );
    }
}

#[test]
fn reconnects_after_the_event_stream_breaks() {
    let dir = tempfile::tempdir().expect("temp dir");
    let socket = dir.path().join("docker.sock");
    let state = Arc::new(Mutex::new(FakeState {
        containers: vec![
            ("aaaa".into(), inspect("aaaa", "fake-a", 40001)),
            ("bbbb".into(), inspect("bbbb", "fake-b", 40002)),
        ],
        ..FakeState::default()
    }));
    fake_daemon(&socket, state.clone());
    // The agent is not up yet: the registrator waits for it.
    let ports = (
        free_port("127.0.0.1"),
        free_port("127.0.0.1"),
        free_port("127.0.0.1"),
    );
    let http = format!("127.0.0.1:{}", ports.0);
    let registrator = Registrator::start(
        &http,
        &[
            "--docker-socket",
            &socket.to_string_lossy(),
            "--hostname",
            "fakehost",
            "--ip",
            "127.0.0.1",
            "--retry-interval",
            "100",
        ],
    );
    eventually("the registrator waits for the agent", LIMIT, || {
        let log = registrator.log();
        if log.contains("waiting for the agent") {
            Ok(())
        } else {
            Err(log)
        }
    });
    let agent = Agent::dev().ports(ports.0, ports.1, ports.2).start();
    // Session 1: both containers registered (B also by its event); then the
    // stream ends. Meanwhile B goes away.
    registered(&agent, "fakehost:fake-a:80");
    let b = registered(&agent, "fakehost:fake-b:80");
    assert_eq!(b["Port"], 40002);
    {
        let mut s = state.lock().expect("state");
        s.containers.retain(|(id, _)| id != "bbbb");
        s.reconnect = true;
    }
    // Session 2 resumes from B's event and reconciles: B is gone.
    eventually("a second event subscription", LIMIT, || {
        let s = state.lock().expect("state");
        if s.streams >= 2 {
            Ok(())
        } else {
            Err(format!("{:?}", s.requests))
        }
    });
    deregistered(&agent, "fakehost:fake-b:80");
    registered(&agent, "fakehost:fake-a:80");
    let requests = state.lock().expect("state").requests.clone();
    let events: Vec<&String> = requests.iter().filter(|r| r.contains("/events")).collect();
    // Engine 29 accepts 1.44 and up: we speak 1.47, our newest.
    assert!(
        events[0].starts_with("/v1.47/events?filters="),
        "{requests:?}"
    );
    assert!(!events[0].contains("since="), "{requests:?}");
    assert!(
        events[1].contains("since=1700000000.123456789"),
        "{requests:?}"
    );
    assert!(
        requests
            .iter()
            .all(|r| r == "/version" || r.starts_with("/v1.47/")),
        "{requests:?}"
    );
}
