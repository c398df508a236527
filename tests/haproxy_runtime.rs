//! The reload-free mode against a real HAProxy 2.6: servers added, moved and
//! removed through the Runtime API by `template::haproxy::{plan, apply}` while
//! clients keep sending requests, none of which may fail, and HAProxy is never
//! reloaded.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use pilotfish::template::haproxy::{apply, apply_with, plan, Change, Limits};

/// A tiny HTTP/1.1 server answering every request with its name, keep-alive
/// honoured. Each answer takes a few milliseconds so removals meet requests in
/// flight.
fn backend(name: &'static str) -> SocketAddr {
    backend_taking(name, Duration::from_millis(3))
}

fn backend_taking(name: &'static str, delay: Duration) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a test backend");
    let addr = listener.local_addr().expect("test backend address");
    thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            thread::spawn(move || serve(name, conn, delay));
        }
    });
    addr
}

fn serve(name: &str, conn: TcpStream, delay: Duration) {
    let Ok(mut writer) = conn.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(conn);
    loop {
        // Requests are header-only GETs: read up to the blank line.
        let mut line = String::new();
        loop {
            line.clear();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) if line == "\r\n" => break,
                Ok(_) => {}
            }
        }
        thread::sleep(delay);
        let answer = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nContent-Type: text/plain\r\n\r\n{name}",
            name.len()
        );
        if writer.write_all(answer.as_bytes()).is_err() {
            return;
        }
    }
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind port 0");
    listener.local_addr().expect("port 0 address").port()
}

/// One GET over `conn`; the body, or why there is none.
fn get(conn: &mut BufReader<TcpStream>) -> Result<String, String> {
    conn.get_mut()
        .write_all(b"GET / HTTP/1.1\r\nHost: test\r\n\r\n")
        .map_err(|e| format!("sending: {e}"))?;
    let mut status = String::new();
    conn.read_line(&mut status)
        .map_err(|e| format!("reading the status: {e}"))?;
    if !status.starts_with("HTTP/1.1 200") {
        return Err(format!("status line {status:?}"));
    }
    let mut length = None;
    loop {
        let mut header = String::new();
        conn.read_line(&mut header)
            .map_err(|e| format!("reading headers: {e}"))?;
        if header == "\r\n" || header.is_empty() {
            break;
        }
        if let Some((key, value)) = header.split_once(':') {
            if key.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse::<usize>().ok();
            }
        }
    }
    let length = length.ok_or("no content-length")?;
    let mut body = vec![0; length];
    conn.read_exact(&mut body)
        .map_err(|e| format!("reading the body: {e}"))?;
    Ok(String::from_utf8_lossy(&body).into_owned())
}

fn connect(addr: SocketAddr) -> Result<BufReader<TcpStream>, String> {
    let conn = TcpStream::connect(addr).map_err(|e| format!("connecting: {e}"))?;
    conn.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    Ok(BufReader::new(conn))
}

/// What the clients saw: answers per backend name, and every failure.
#[derive(Default)]
struct Tally {
    answers: Mutex<Vec<String>>,
    failures: Mutex<Vec<String>>,
    requests: AtomicU64,
}

impl Tally {
    fn record(&self, result: Result<String, String>, how: &str) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        match result {
            Ok(body) => self.answers.lock().expect("tally lock").push(body),
            Err(e) => self
                .failures
                .lock()
                .expect("tally lock")
                .push(format!("{how}: {e}")),
        }
    }

    /// The answers since the last call.
    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.answers.lock().expect("tally lock"))
    }
}

/// Clients sending requests until stopped: one opening a connection per request,
/// one keeping its connection alive (opening a new one only when HAProxy closes
/// it between requests, as any keep-alive client does).
fn clients(
    frontend: SocketAddr,
    tally: Arc<Tally>,
    stop: Arc<AtomicBool>,
) -> Vec<thread::JoinHandle<()>> {
    let fresh = {
        let (tally, stop) = (tally.clone(), stop.clone());
        thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let result = connect(frontend).and_then(|mut conn| get(&mut conn));
                tally.record(result, "new connection");
            }
        })
    };
    let kept = thread::spawn(move || {
        let mut conn = None;
        while !stop.load(Ordering::Relaxed) {
            let stream = match conn.take() {
                Some(stream) => stream,
                None => match connect(frontend) {
                    Ok(stream) => stream,
                    Err(e) => {
                        tally.record(Err(e), "keep-alive");
                        continue;
                    }
                },
            };
            let mut stream = stream;
            let result = get(&mut stream);
            if result.is_ok() {
                conn = Some(stream);
            }
            tally.record(result, "keep-alive");
        }
    });
    vec![fresh, kept]
}

/// A running `haproxy -W` (master-worker), stopped on drop.
struct Haproxy {
    child: Child,
    /// Its output, printed when a test fails.
    log: PathBuf,
    admin: PathBuf,
    master: PathBuf,
}

impl Haproxy {
    fn start(dir: &Path, config: &str) -> Haproxy {
        let file = dir.join("haproxy.cfg");
        std::fs::write(&file, config).expect("write haproxy.cfg");
        let log = std::fs::File::create(dir.join("haproxy.log")).expect("create haproxy.log");
        let child = Command::new("haproxy")
            .arg("-W")
            .arg("-db")
            .arg("-f")
            .arg(&file)
            .arg("-S")
            .arg(dir.join("master.sock"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("haproxy.log"))
            .stderr(log)
            .spawn()
            .expect("start haproxy");
        let haproxy = Haproxy {
            child,
            log: dir.join("haproxy.log"),
            admin: dir.join("admin.sock"),
            master: dir.join("master.sock"),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while cli(&haproxy.admin, "show info").is_err() {
            assert!(
                Instant::now() < deadline,
                "haproxy did not open its admin socket"
            );
            thread::sleep(Duration::from_millis(50));
        }
        haproxy
    }

    fn worker_pid(&self) -> String {
        let info = cli(&self.admin, "show info").expect("show info");
        info.lines()
            .find_map(|l| l.strip_prefix("Pid: "))
            .expect("show info has Pid")
            .to_string()
    }

    /// The master's reload count from `show proc`.
    fn reloads(&self) -> String {
        let procs = cli(&self.master, "show proc").expect("show proc");
        let master = procs
            .lines()
            .find(|l| l.split_whitespace().nth(1) == Some("master"))
            .unwrap_or_else(|| panic!("no master in show proc: {procs}"));
        master
            .split_whitespace()
            .nth(2)
            .expect("reloads column")
            .to_string()
    }

    /// `show servers state <backend>`: the server names.
    fn servers(&self, backend: &str) -> Vec<String> {
        let state =
            cli(&self.admin, &format!("show servers state {backend}")).expect("show servers state");
        state
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                let fields: Vec<&str> = l.split_whitespace().collect();
                (fields.len() > 4).then(|| fields[3].to_string())
            })
            .collect()
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        if thread::panicking() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            eprintln!("haproxy's output:\n{log}");
        }
        // SIGTERM to the master stops the worker too; SIGKILL could leave it behind.
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One command on a HAProxy CLI socket.
fn cli(socket: &Path, command: &str) -> std::io::Result<String> {
    let mut conn = std::os::unix::net::UnixStream::connect(socket)?;
    conn.set_read_timeout(Some(Duration::from_secs(5)))?;
    conn.write_all(format!("{command}\n").as_bytes())?;
    // The master CLI keeps the connection open until the client ends it.
    conn.shutdown(std::net::Shutdown::Write)?;
    let mut answer = String::new();
    conn.read_to_string(&mut answer)?;
    Ok(answer)
}

fn config(admin: &Path, frontend: u16, servers: &str) -> String {
    format!(
        "\
global
    stats socket {admin} mode 600 level admin

defaults
    mode http
    timeout connect 2s
    timeout client 30s
    timeout server 30s

frontend www
    bind 127.0.0.1:{frontend}
    default_backend app

backend app
    balance roundrobin
{servers}",
        admin = admin.display()
    )
}

/// Waits until the clients' answers since the last call satisfy `done`; returns them.
fn answers_until(tally: &Tally, what: &str, done: impl Fn(&[String]) -> bool) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen = Vec::new();
    loop {
        seen.extend(tally.take());
        if done(&seen) {
            return seen;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: clients saw {} answers, not enough",
            seen.len()
        );
        thread::sleep(Duration::from_millis(50));
    }
}

fn commands(change: Change) -> Vec<String> {
    match change {
        Change::Runtime(commands) => commands,
        other => panic!("expected Runtime commands, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_change_without_reload_or_failed_requests() {
    if Command::new("haproxy").arg("-v").output().is_err() {
        println!("SKIPPED: haproxy is not installed (apt-get install haproxy)");
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let (b1, b2, b3) = (backend("b1"), backend("b2"), backend("b3"));
    let port = free_port();
    let frontend: SocketAddr = format!("127.0.0.1:{port}")
        .parse()
        .expect("frontend address");
    let admin = dir.path().join("admin.sock");

    let one = config(&admin, port, &format!("    server s1 {b1}\n"));
    let two = config(
        &admin,
        port,
        &format!("    server s1 {b1}\n    server s2 {b2} check inter 200ms\n"),
    );
    let moved = config(
        &admin,
        port,
        &format!("    server s1 {b1}\n    server s2 {b3} check inter 200ms\n"),
    );
    let last = config(
        &admin,
        port,
        &format!("    server s2 {b3} check inter 200ms\n"),
    );

    let haproxy = Haproxy::start(dir.path(), &one);
    let worker = haproxy.worker_pid();
    assert_eq!(haproxy.servers("app"), ["s1"]);

    let tally = Arc::new(Tally::default());
    let stop = Arc::new(AtomicBool::new(false));
    let threads = clients(frontend, tally.clone(), stop.clone());
    answers_until(&tally, "before any change", |seen| seen.len() >= 20);

    // Add s2: round robin reaches both.
    let added = commands(plan(&one, &two));
    assert_eq!(
        added,
        [
            format!("add server app/s2 {b2} check inter 200ms"),
            "enable health app/s2".to_string(),
            "enable server app/s2".to_string(),
        ]
    );
    apply(&admin, &added).await.expect("apply the addition");
    let seen = answers_until(&tally, "after adding s2", |seen| {
        seen.iter().filter(|b| *b == "b2").count() >= 20
    });
    let after_b2: Vec<&String> = seen.iter().skip_while(|b| *b != "b2").collect();
    assert!(
        after_b2.iter().any(|b| *b == "b1"),
        "round robin skipped b1: {after_b2:?}"
    );
    assert_eq!(haproxy.servers("app"), ["s1", "s2"]);

    // Move s2 to another address.
    let set = commands(plan(&two, &moved));
    assert_eq!(
        set,
        [format!(
            "set server app/s2 addr {} port {}",
            b3.ip(),
            b3.port()
        )]
    );
    apply(&admin, &set).await.expect("apply the move");
    answers_until(&tally, "after moving s2", |seen| {
        seen.iter().filter(|b| *b == "b3").count() >= 20
    });
    let seen = answers_until(&tally, "after moving s2, settled", |seen| seen.len() >= 40);
    assert!(
        !seen.iter().any(|b| b == "b2"),
        "s2 still reaches its old address"
    );

    // Remove s1: only s2 (now at b3) answers.
    let removed = commands(plan(&moved, &last));
    assert_eq!(
        removed,
        ["set server app/s1 state maint", "del server app/s1"]
    );
    apply(&admin, &removed).await.expect("apply the removal");
    assert_eq!(haproxy.servers("app"), ["s2"]);
    // Answers s1 sent before it went are not news; let them arrive.
    thread::sleep(Duration::from_millis(100));
    tally.take();
    let seen = answers_until(&tally, "after removing s1", |seen| seen.len() >= 100);
    assert!(
        seen.iter().all(|b| b == "b3"),
        "answers after removing s1: {seen:?}"
    );

    stop.store(true, Ordering::Relaxed);
    for thread in threads {
        thread.join().expect("client thread");
    }
    let failures = tally.failures.lock().expect("tally lock").clone();
    assert!(
        failures.is_empty(),
        "{} of {} requests failed: {failures:?}",
        failures.len(),
        tally.requests.load(Ordering::Relaxed)
    );
    assert_eq!(
        haproxy.worker_pid(),
        worker,
        "the worker changed: HAProxy was reloaded"
    );
    assert_eq!(haproxy.reloads(), "0", "the master counts reloads");
    println!(
        "{} requests, none failed, worker {worker} throughout",
        tally.requests.load(Ordering::Relaxed)
    );
}

#[tokio::test]
async fn a_refused_command_names_itself_and_the_answer() {
    if Command::new("haproxy").arg("-v").output().is_err() {
        println!("SKIPPED: haproxy is not installed (apt-get install haproxy)");
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let b1 = backend("b1");
    let admin = dir.path().join("admin.sock");
    let haproxy = Haproxy::start(
        dir.path(),
        &config(&admin, free_port(), &format!("    server s1 {b1}\n")),
    );
    let error = apply(&admin, &["enable server app/nope".to_string()])
        .await
        .expect_err("no such server");
    assert_eq!(
        error.to_string(),
        "haproxy refused `enable server app/nope`: \"No such server.\""
    );
    // del server of a server in service: 2.6 wants maintenance first.
    let error = apply(&admin, &["del server app/s1".to_string()])
        .await
        .expect_err("s1 is not in maintenance");
    assert!(error.to_string().contains("del server app/s1"), "{error}");
    assert_eq!(haproxy.servers("app"), ["s1"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_busy_past_the_drain_limit_stays_in_maintenance() {
    if Command::new("haproxy").arg("-v").output().is_err() {
        println!("SKIPPED: haproxy is not installed (apt-get install haproxy)");
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let slow = backend_taking("slow", Duration::from_millis(1500));
    let fast = backend("fast");
    let port = free_port();
    let frontend: SocketAddr = format!("127.0.0.1:{port}")
        .parse()
        .expect("frontend address");
    let admin = dir.path().join("admin.sock");
    let both = config(
        &admin,
        port,
        &format!("    server s1 {slow}\n    server s2 {fast}\n"),
    );
    let fast_only = config(&admin, port, &format!("    server s2 {fast}\n"));
    let haproxy = Haproxy::start(dir.path(), &both);

    // Round robin starts with s1: this request is in flight on the slow server.
    let in_flight = thread::spawn(move || connect(frontend).and_then(|mut conn| get(&mut conn)));
    let deadline = Instant::now() + Duration::from_secs(5);
    while !cli(&admin, "show servers conn app")
        .expect("show servers conn")
        .lines()
        .any(|l| l.starts_with("app/s1 ") && l.split_whitespace().nth(6) == Some("1"))
    {
        assert!(Instant::now() < deadline, "the request never reached s1");
        thread::sleep(Duration::from_millis(20));
    }

    let limits = Limits {
        drain: Duration::from_millis(200),
        ..Limits::default()
    };
    apply_with(&admin, &commands(plan(&both, &fast_only)), limits)
        .await
        .expect("a busy server is not an error");
    assert_eq!(
        haproxy.servers("app"),
        ["s1", "s2"],
        "s1 stays, in maintenance"
    );
    let state = cli(&admin, "show servers state app").expect("show servers state");
    let s1_admin = state
        .lines()
        .find(|l| l.split_whitespace().nth(3) == Some("s1"))
        .and_then(|l| l.split_whitespace().nth(6))
        .expect("s1's srv_admin_state");
    assert_eq!(s1_admin, "1", "s1 is in forced maintenance: {state}");
    assert_eq!(
        in_flight.join().expect("client"),
        Ok("slow".to_string()),
        "the request in flight finished"
    );
    for _ in 0..4 {
        let body = connect(frontend).and_then(|mut conn| get(&mut conn));
        assert_eq!(body, Ok("fast".to_string()));
    }
}
