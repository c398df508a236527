//! The cluster port's authentication and the agent's signal handling,
//! against the real binary:
//! - a forged write on `--server-port` (no key, a wrong key) is refused and
//!   writes nothing, on `--dev`, a lone server and a keyed server;
//! - `--acl-token` on an agent that can form or join a cluster, with
//!   neither `--encrypt` nor TLS, refuses to start and says what to add;
//! - an agent with another key never joins; with the same key it does;
//! - `--acl-token-file` and `--cluster-secret-file`;
//! - SIGHUP (reloading `--config-file`'s log level), SIGUSR1, SIGUSR2 and
//!   SIGPIPE leave the agent running.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

#[allow(dead_code, unused_imports)]
mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::agent::{Agent, BIN};
use common::{eventually, http};

const KEY_A: &str = "bm90LWEtcmVhbC1rZXktYnV0LTMyLWJ5dGVzLWxvbmc=";

/// A forged `KvSet` of `key` sent straight to the cluster port, with the
/// given extra headers: the answer's status.
fn forge_write(addr: SocketAddr, key: &str, headers: &[(&str, &str)]) -> u16 {
    let body = format!(r#"{{"KvSet":{{"key":"{key}","value":"b3duZWQ=","flags":0}}}}"#);
    let mut extra = String::new();
    for (k, v) in headers {
        extra.push_str(&format!("{k}: {v}\r\n"));
    }
    let req = format!(
        "POST /pilotfish/v1/write HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(req.as_bytes()).unwrap();
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// GET `/v1/kv/<key>` with the token: the HTTP status.
fn kv_status(a: &Agent, key: &str, token: &str) -> u16 {
    let path = format!("/v1/kv/{key}?token={token}");
    http(a.http, "GET", &path, b"").unwrap().0
}

#[test]
fn forged_cluster_writes_are_refused_and_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "s3cret\n").unwrap();
    let token_file = token_file.to_str().unwrap();
    let data = dir.path().join("data");
    let data = data.to_str().unwrap();
    let ip = "127.0.0.1";
    for (what, args) in [
        ("--dev", vec!["--dev", "--acl-token-file", token_file]),
        (
            "a lone server",
            vec![
                "--server",
                "--data-dir",
                data,
                "--bind",
                ip,
                "--acl-token",
                "s3cret",
            ],
        ),
        (
            "a server with --encrypt",
            vec![
                "--server",
                "--bootstrap-expect",
                "1",
                "--data-dir",
                data,
                "--bind",
                ip,
                "--acl-token",
                "s3cret",
                "--encrypt",
                KEY_A,
            ],
        ),
    ] {
        let a = Agent::on(ip).args(&args).start();
        let cluster: SocketAddr = format!("{ip}:{}", a.server_port).parse().unwrap();
        let key = format!("forged-{}", what.len());
        let status = forge_write(cluster, &key, &[]);
        assert_eq!(status, 403, "{what}: a write without a MAC got {status}");
        let status = forge_write(
            cluster,
            &key,
            &[("X-Pilotfish-Time", "1"), ("X-Pilotfish-Mac", "AAAA")],
        );
        assert_eq!(status, 403, "{what}: a write with a bad MAC got {status}");
        assert_eq!(
            kv_status(&a, &key, "s3cret"),
            404,
            "{what}: the forged key exists"
        );
        // The token (from the file, for --dev) still opens the HTTP API.
        let put = http(a.http, "PUT", "/v1/kv/real?token=s3cret", b"v").unwrap();
        assert_eq!(put.0, 200, "{what}: {put:?}");
        assert!(
            a.log().contains("refused a cluster request"),
            "{what}: no log line about the refused request:\n{}",
            a.log()
        );
        drop(a);
        let _ = std::fs::remove_dir_all(data);
    }
}

#[test]
fn dev_binds_the_cluster_port_to_loopback_only() {
    let a = Agent::dev().start();
    let log = a.log();
    let line = format!(
        "listening for cluster traffic (cluster key) on 127.0.0.1:{}",
        a.server_port
    );
    eventually(
        "the cluster listener's line",
        Duration::from_secs(5),
        || {
            if a.log().contains(&line) {
                Ok(())
            } else {
                Err(log.clone())
            }
        },
    );
    // Bound to 127.0.0.1 only: another loopback address finds nothing.
    let other: SocketAddr = format!("127.0.0.2:{}", a.server_port).parse().unwrap();
    assert!(
        !common::accepts(other),
        "the cluster port answers on 127.0.0.2"
    );
}

/// `pilotfish agent ARGS` (on loopback, with a data dir) must exit 1 at
/// once; its stderr.
fn refused(args: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    Agent::on("127.0.0.1")
        .args(["--bind", "127.0.0.1", "--data-dir"])
        .arg(dir.path())
        .args(args)
        .refused()
}

#[test]
fn an_acl_token_on_a_cluster_without_cluster_auth_refuses_to_start() {
    for args in [
        &["--server", "--bootstrap-expect", "3", "--acl-token", "t"][..],
        &["--server", "--retry-join", "127.0.0.1", "--acl-token", "t"][..],
        // A client agent.
        &["--retry-join", "127.0.0.1", "--acl-token", "t"][..],
    ] {
        let e = refused(args);
        assert!(
            e.contains("--acl-token protects the HTTP API")
                && e.contains("--encrypt")
                && e.contains("pilotfish keygen")
                && e.contains("--tls-cert"),
            "{args:?}: {e}"
        );
    }
    let e = refused(&["--server", "--encrypt", "c2hvcnQ="]);
    assert!(e.contains("--encrypt: the key is 5 bytes"), "{e}");
    let e = refused(&["--server", "--encrypt", "not base64!"]);
    assert!(e.contains("--encrypt: not base64"), "{e}");
    let e = refused(&["--server", "--cluster-secret-file", "/dev/zero"]);
    assert!(
        e.contains("--cluster-secret-file /dev/zero: not a regular file"),
        "{e}"
    );
    let e = refused(&["--server", "--acl-token-file", "/nonexistent/token"]);
    assert!(e.contains("--acl-token-file /nonexistent/token: "), "{e}");
}

#[test]
fn keygen_prints_a_key_the_agent_takes() {
    let out = Command::new(BIN).arg("keygen").output().unwrap();
    assert!(out.status.success());
    let key = String::from_utf8(out.stdout).unwrap();
    let bytes = pilotfish::discovery::api::kv::base64_decode(key.trim()).unwrap();
    assert_eq!(bytes.len(), 32);
    let other = Command::new(BIN).arg("keygen").output().unwrap();
    assert_ne!(key, String::from_utf8(other.stdout).unwrap());
}

fn member_names(a: &Agent) -> Vec<String> {
    match http(a.http, "GET", "/v1/agent/members", b"") {
        Ok((200, _, body)) => serde_json::from_slice::<serde_json::Value>(&body)
            .unwrap()
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["Status"] == 1)
            .map(|m| m["Name"].as_str().unwrap().to_string())
            .collect(),
        _ => Vec::new(),
    }
}

#[test]
fn only_an_agent_with_the_same_key_joins() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("s");
    let key_file = dir.path().join("key");
    std::fs::write(&key_file, format!("{KEY_A}\n")).unwrap();
    let ip = "127.0.77.1";
    let server = Agent::on(ip)
        .args([
            "--server",
            "--bootstrap-expect",
            "1",
            "--node",
            "keyed",
            "--bind",
            ip,
            "--data-dir",
            data.to_str().unwrap(),
            "--cluster-secret-file",
            key_file.to_str().unwrap(),
        ])
        .start();
    let join = format!("{ip}:{}", server.server_port);
    let (other_key, _) = pilotfish_keygen();
    let mut stranger = Agent::on("127.0.77.2")
        .args([
            "--node",
            "stranger",
            "--bind",
            "127.0.77.2",
            "--data-dir",
            dir.path().join("c1").to_str().unwrap(),
            "--retry-join",
            &join,
            "--encrypt",
            &other_key,
        ])
        .start();
    // Retry-join rounds in which it must stay out: a period under test,
    // not a wait for anything.
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        stranger.running(),
        "the stranger exited:\n{}",
        stranger.log()
    );
    assert_eq!(member_names(&server), ["keyed"], "a stranger joined");
    assert!(
        server.log().contains("refused a cluster request"),
        "{}",
        server.log()
    );
    drop(stranger);
    let friend = Agent::on("127.0.77.3")
        .args([
            "--node",
            "friend",
            "--bind",
            "127.0.77.3",
            "--data-dir",
            dir.path().join("c2").to_str().unwrap(),
            "--retry-join",
            &join,
            "--encrypt",
            KEY_A,
        ])
        .start();
    eventually("the friend is a member", Duration::from_secs(30), || {
        let names = member_names(&server);
        if names.contains(&"friend".to_string()) {
            Ok(())
        } else {
            Err(format!("{names:?}"))
        }
    });
    drop(friend);
}

/// A key as `pilotfish keygen` prints it.
fn pilotfish_keygen() -> (String, Vec<u8>) {
    let out = Command::new(BIN).arg("keygen").output().unwrap();
    let key = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let bytes = pilotfish::discovery::api::kv::base64_decode(&key).unwrap();
    (key, bytes)
}

fn write_config(path: &Path, level: &str) {
    std::fs::write(path, format!(r#"{{"log_level": "{level}"}}"#)).unwrap();
}

#[test]
fn signals_do_not_stop_the_agent_and_sighup_reloads_the_log_level() {
    use nix::sys::signal::Signal;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("agent.json");
    write_config(&config, "warn");
    let mut a = Agent::dev()
        .args(["--config-file", config.to_str().unwrap()])
        .start();
    for sig in [
        Signal::SIGUSR1,
        Signal::SIGUSR2,
        Signal::SIGPIPE,
        Signal::SIGHUP,
    ] {
        a.signal(sig);
        // Time for the signal to end the agent if it could: nothing to
        // poll for, the agent living on is the point.
        std::thread::sleep(Duration::from_millis(200));
        assert!(a.running(), "{sig} ended the agent:\n{}", a.log());
        let (status, _, _) = a.request("GET", "/v1/status/leader", b"").unwrap();
        assert_eq!(status, 200, "after {sig}");
    }
    // At warn, the SIGUSR lines (info) are not written; after a reload to
    // info, they are.
    assert!(!a.log().contains("SIGUSR1: ignored"), "{}", a.log());
    write_config(&config, "info");
    a.signal(Signal::SIGHUP);
    eventually("the reload's log line", Duration::from_secs(5), || {
        if a.log().contains("reloaded") && a.log().contains("log level info") {
            Ok(())
        } else {
            Err(a.log())
        }
    });
    a.signal(Signal::SIGUSR1);
    eventually("SIGUSR1 logged at info", Duration::from_secs(5), || {
        if a.log().contains("SIGUSR1: ignored") {
            Ok(())
        } else {
            Err(a.log())
        }
    });
    // A broken file changes nothing and says why.
    std::fs::write(&config, r#"{"log_level": "loud", "bogus": 1}"#).unwrap();
    a.signal(Signal::SIGHUP);
    eventually("the reload error", Duration::from_secs(5), || {
        if a.log().contains("nothing changed") {
            Ok(())
        } else {
            Err(a.log())
        }
    });
    assert!(a.running());
}
