//! `pilotfish force-leave NODE` against real agents: a client agent that
//! died is `failed`, and force-leave makes it `left` (and out of the
//! catalog); like `consul force-leave` it prints nothing on success and
//! `Error force leaving: ...` with exit 1 on failure.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

// Only parts of the cluster harness are used here.
#[allow(dead_code, unused_imports)]
mod common;

use std::net::{TcpListener, TcpStream};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::agent::{Agent, BIN};

use serde_json::Value;

const SUBNET: &str = "127.0.93";

/// Agent `n` on 127.0.93.n, on Consul's ports; n1 is the server.
fn agent(n: u8, server: bool, data: &std::path::Path) -> Agent {
    let ip = format!("{SUBNET}.{n}");
    let mut b = Agent::on(&ip)
        .args(["--encrypt", common::CLUSTER_KEY, "--log-level", "warn"])
        .args(["--node", &format!("n{n}"), "--bind", &ip, "--data-dir"])
        .arg(data)
        .ports(8500, 8600, 8300);
    b = if server {
        b.args(["--server", "--bootstrap-expect", "1"])
    } else {
        b.args(["--retry-join", &format!("{SUBNET}.1")])
    };
    b.start()
}

fn cli(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env("CONSUL_HTTP_ADDR", format!("{SUBNET}.1:8500"))
        .env_remove("CONSUL_HTTP_TOKEN")
        .output()
        .unwrap()
}

/// n2's status code on n1 (1 alive, 3 left, 4 failed), `None` if unlisted.
fn status_of_n2() -> Option<i64> {
    let body = get("/v1/agent/members");
    let members: Value = serde_json::from_str(&body).unwrap();
    members
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["Name"] == "n2")
        .and_then(|m| m["Status"].as_i64())
}

fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A tiny blocking GET of n1's API, so this test needs no runtime.
fn get(path: &str) -> String {
    use std::io::{Read, Write};

    let host = format!("{SUBNET}.1:8500");
    let mut s = TcpStream::connect(&host).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    body.to_string()
}

#[test]
fn force_leave_turns_a_failed_member_into_a_left_one() {
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let _server = agent(1, true, d1.path());
    let client = agent(2, false, d2.path());
    wait_for("n2 alive on n1", || status_of_n2() == Some(1));

    // Killed without a leave: failed, still in the catalog (serfHealth critical).
    drop(client);
    wait_for("n2 failed on n1", || status_of_n2() == Some(4));

    let out = cli(&["force-leave", "n2"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stdout.is_empty() && out.stderr.is_empty(), "{out:?}");
    wait_for("n2 left on n1", || status_of_n2() == Some(3));
    let members = String::from_utf8(cli(&["members"]).stdout).unwrap();
    let row = members.lines().find(|l| l.starts_with("n2 ")).unwrap();
    assert!(row.contains("  left  "), "{members}");
    // The leader takes a left node out of the catalog.
    wait_for("n2 out of the catalog", || {
        let nodes = get("/v1/catalog/nodes");
        !nodes.contains("\"n2\"")
    });
}

#[test]
fn force_leave_errors_say_so() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = Command::new(BIN)
        .args([
            "force-leave",
            "--http-addr",
            &format!("127.0.0.1:{port}"),
            "n9",
        ])
        .env_remove("CONSUL_HTTP_TOKEN")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with(&format!(
            "Error force leaving: Error connecting to the agent at http://127.0.0.1:{port}"
        )),
        "{err}"
    );
    let usage = Command::new(BIN).arg("force-leave").output().unwrap();
    assert_eq!(usage.status.code(), Some(2), "NODE is required");
}
