//! Running under systemd: the shipped units pass `systemd-analyze verify`,
//! and the agent speaks `Type=notify` (READY once it serves, STOPPING when
//! it leaves) to whatever socket `$NOTIFY_SOCKET` names.

#[allow(dead_code, unused_imports)]
mod common;

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::agent::{Agent, BIN};

#[test]
fn the_shipped_units_verify() {
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("skipped: systemd-analyze is not installed");
        return;
    }
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("config-examples/systemd");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut units = Vec::new();
    for entry in std::fs::read_dir(&src).expect("config-examples/systemd") {
        let path = entry.expect("entry").path();
        if path.extension().and_then(|e| e.to_str()) != Some("service") {
            continue;
        }
        // The units name the installed binary; verify checks it exists.
        let text = std::fs::read_to_string(&path)
            .expect("unit")
            .replace("/usr/local/bin/pilotfish", BIN);
        let out = dir.path().join(path.file_name().expect("a file name"));
        std::fs::write(&out, text).expect("write unit");
        units.push(out);
    }
    assert_eq!(units.len(), 3, "server, client and registrator units");
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .args(&units)
        .output()
        .expect("systemd-analyze");
    let err = String::from_utf8_lossy(&out.stderr);
    // Units it does not know on this machine (docker.service) are not ours to fix.
    let ours: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("pilotfish"))
        .filter(|l| !l.contains("docker.service"))
        .collect();
    assert!(
        out.status.success() || ours.is_empty(),
        "systemd-analyze verify:\n{err}"
    );
    assert!(ours.is_empty(), "systemd-analyze verify:\n{err}");
}

#[test]
fn the_agent_notifies_ready_and_stopping() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&path).expect("bind the notify socket");
    sock.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let agent = Agent::dev()
        .env("NOTIFY_SOCKET", Some(path.to_str().expect("UTF-8 path")))
        .start();
    let mut buf = [0u8; 512];
    let n = sock.recv(&mut buf).expect("READY within 30 s");
    let msg = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(msg.starts_with("READY=1\n"), "{msg}");
    // It serves by then.
    let (status, _, _) = agent
        .request("GET", "/v1/status/leader", b"")
        .expect("the agent answers");
    assert_eq!(status, 200);
    agent.signal(nix::sys::signal::Signal::SIGTERM);
    let n = sock.recv(&mut buf).expect("STOPPING within 30 s");
    let msg = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(msg.starts_with("STOPPING=1\n"), "{msg}");
}
