//! The Consul-style CLI against a real `pilotfish agent --dev` (and against
//! none): the texts and exit codes scripts depend on (`consul info`'s
//! `\tnum_peers = N`, `kv get`, `join` by a DNS name, `leave`).

// Only parts of the cluster harness are used here.
#[allow(dead_code, unused_imports)]
mod common;

use std::process::{Command, Output};
use std::time::Duration;

use common::agent::Agent;

/// The agent the CLI talks to (node `cli-node`, advertised on loopback).
fn agent() -> Agent {
    Agent::dev()
        .args(["--node", "cli-node", "--advertise", "127.0.0.1"])
        .start()
}

fn text(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn kv_commands_print_what_consul_prints() {
    let a = agent();
    let put = a.cli(&["kv", "put", "app/config", "hello world"]);
    assert!(put.status.success(), "{}", err(&put));
    assert_eq!(text(&put), "Success! Data written to: app/config\n");
    a.cli(&["kv", "put", "app/other", "2"]);
    let get = a.cli(&["kv", "get", "app/config"]);
    assert_eq!(text(&get), "hello world\n");
    let rec = a.cli(&["kv", "get", "--recurse", "app/"]);
    assert_eq!(text(&rec), "app/config:hello world\napp/other:2\n");
    let missing = a.cli(&["kv", "get", "nope"]);
    assert_eq!(missing.status.code(), Some(1));
    assert_eq!(err(&missing), "Error! No key exists at: nope\n");
    let del = a.cli(&["kv", "delete", "--recurse", "app/"]);
    assert_eq!(text(&del), "Success! Deleted keys with prefix: app/\n");
    assert_eq!(a.cli(&["kv", "get", "app/config"]).status.code(), Some(1));
}

#[test]
fn info_members_and_catalog() {
    let a = agent();
    let info = a.cli(&["info"]);
    assert!(info.status.success(), "{}", err(&info));
    let out = text(&info);
    // The autopilot health hook reads the third field of this exact line.
    assert!(out.lines().any(|l| l == "\tnum_peers = 0"), "{out}");
    let sections: Vec<&str> = out.lines().filter(|l| !l.starts_with('\t')).collect();
    let mut sorted = sections.clone();
    sorted.sort();
    assert_eq!(sections, sorted, "sections are sorted");
    assert!(
        sections.contains(&"raft:") && sections.contains(&"consul:"),
        "{out}"
    );

    let members = a.cli(&["members"]);
    let out = text(&members);
    assert!(out.starts_with("Node "), "{out}");
    assert!(
        out.lines().nth(1).is_some_and(|l| l.starts_with("cli-node")
            && l.contains("alive")
            && l.contains("server")),
        "{out}"
    );
    assert_eq!(
        a.cli(&["members", "--status", "failed"]).status.code(),
        Some(2)
    );

    let reg = Command::new("curl")
        .args([
            "-sf",
            "-X",
            "PUT",
            "-d",
            r#"{"Name":"web","Port":80,"Tags":["b","a"]}"#,
        ])
        .arg(format!("http://{}/v1/agent/service/register", a.http))
        .status();
    if !reg.map(|s| s.success()).unwrap_or(false) {
        // No curl: register through the CLI-free path is covered by the HTTP tests.
        return;
    }
    let services = a.cli(&["catalog", "services"]);
    assert!(
        text(&services).lines().any(|l| l == "web"),
        "{}",
        text(&services)
    );
    let tagged = a.cli(&["catalog", "services", "--tags"]);
    assert!(
        text(&tagged)
            .lines()
            .any(|l| l.starts_with("web") && l.ends_with("a,b")),
        "{}",
        text(&tagged)
    );
}

#[test]
fn without_an_agent_every_command_says_where_it_looked() {
    // Nothing listens on loopback's port 1.
    for (args, prefix) in [
        (&["info"][..], ""),
        (&["kv", "get", "k"], "Error querying Consul agent: "),
        (&["kv", "put", "k", "v"], "Error! Failed writing data: "),
        (&["leave"], ""),
    ] {
        let o = Command::new(env!("CARGO_BIN_EXE_pilotfish"))
            .args(args)
            .env("CONSUL_HTTP_ADDR", "127.0.0.1:1")
            .env_remove("CONSUL_HTTP_TOKEN")
            .output()
            .expect("run pilotfish");
        assert_eq!(o.status.code(), Some(1), "{args:?}");
        let e = err(&o);
        assert!(
            e.starts_with(&format!(
                "{prefix}Error connecting to the agent at http://127.0.0.1:1: "
            )) && e.ends_with(
                " (is `pilotfish agent` running? set --http-addr or CONSUL_HTTP_ADDR)\n"
            ),
            "{args:?}: {e}"
        );
    }
}

#[test]
fn join_by_dns_name_then_leave() {
    let a = agent();
    // The node's own DNS name resolves (through the agent's DNS) to its address:
    // joining yourself is harmless, and every address of the name is contacted.
    let name = "cli-node.node.consul";
    let resolver = format!("127.0.0.1:{}", a.dns);
    let join = a.cli(&["join", "--resolver", &resolver, name]);
    assert!(join.status.success(), "{}", err(&join));
    assert_eq!(
        text(&join),
        "Successfully joined cluster by contacting 1 nodes.\n"
    );
    let bad = a.cli(&["join", "--resolver", &resolver, "nobody.node.consul"]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        err(&bad).contains("Failed to join any nodes."),
        "{}",
        err(&bad)
    );

    let mut a = a;
    let leave = a.cli(&["leave"]);
    assert_eq!(text(&leave), "Graceful leave complete\n");
    let status = a.wait_exit(Duration::from_secs(15));
    assert!(status.success(), "{status:?}");
}
