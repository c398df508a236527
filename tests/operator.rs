//! `/v1/operator/*` on real 3-server clusters (the `tests/cluster.rs`
//! harness, each test on its own loopback subnet): autopilot's replicated
//! configuration with check-and-set, its health and state from the servers'
//! real raft figures, dead-server cleanup acting (and holding back when it
//! would go below a majority or `MinQuorum`), leadership transfer, peer
//! removal, the keyring with and without a cluster key, and usage.
//!
//! Deadlines are upper bounds for "eventually", never speed expectations.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

#[allow(dead_code, unused_imports)]
mod common;

use std::time::Duration;

use common::agent::Agent;
use common::{eventually, text, Cluster, CLUSTER_KEY};
use serde_json::{json, Value};

const CONVERGE: Duration = Duration::from_secs(60);

/// Status and body of a request to server `i`.
fn call(c: &Cluster, i: usize, method: &str, path: &str, body: &[u8]) -> (u16, String) {
    let (status, _, body) = c.request(i, method, path, body).unwrap();
    (status, text(&body))
}

fn json_of(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

/// A formed cluster of three servers and its leader.
fn formed(subnet: u8) -> (Cluster, usize) {
    let mut c = Cluster::new(subnet, 3, 3);
    c.start_all();
    let leader = c.agreed_leader(&[0, 1, 2], CONVERGE);
    eventually("three voters", CONVERGE, || voters(&c, leader).map(|_| ()));
    (c, leader)
}

/// One row of `operator/raft/configuration`: Node, ID, Address, Voter, Leader.
type RaftServer = (String, String, String, bool, bool);

/// `operator/raft/configuration` of server `i`.
fn raft_servers(c: &Cluster, i: usize) -> Result<Vec<RaftServer>, String> {
    let v = c.get_json(i, "/v1/operator/raft/configuration")?;
    Ok(v["Servers"]
        .as_array()
        .ok_or("no Servers")?
        .iter()
        .map(|s| {
            (
                s["Node"].as_str().unwrap().to_string(),
                s["ID"].as_str().unwrap().to_string(),
                s["Address"].as_str().unwrap().to_string(),
                s["Voter"].as_bool().unwrap(),
                s["Leader"].as_bool().unwrap(),
            )
        })
        .collect())
}

/// The voters' node names as server `i` sees them, once there are three.
fn voters(c: &Cluster, i: usize) -> Result<Vec<String>, String> {
    let mut v: Vec<String> = raft_servers(c, i)?
        .into_iter()
        .filter(|s| s.3)
        .map(|s| s.0)
        .collect();
    v.sort();
    if v.len() == 3 {
        Ok(v)
    } else {
        Err(format!("voters {v:?}"))
    }
}

fn voter_names(c: &Cluster, i: usize) -> Vec<String> {
    let mut v: Vec<String> = raft_servers(c, i)
        .unwrap_or_default()
        .into_iter()
        .filter(|s| s.3)
        .map(|s| s.0)
        .collect();
    v.sort();
    v
}

fn id_of(c: &Cluster, i: usize, name: &str) -> String {
    raft_servers(c, i)
        .unwrap()
        .into_iter()
        .find(|s| s.0 == name)
        .unwrap()
        .1
}

fn autopilot_config(c: &Cluster, i: usize) -> Value {
    c.get_json(i, "/v1/operator/autopilot/configuration")
        .unwrap()
}

/// The leader's index among the running servers, as they agree on it.
fn leader_among(c: &mut Cluster, among: &[usize]) -> usize {
    c.agreed_leader(among, CONVERGE)
}

#[test]
fn autopilot_configuration_is_replicated_with_check_and_set() {
    let (c, leader) = formed(151);
    let follower = (leader + 1) % 3;
    // The leader stored Consul's defaults: real indexes, every field.
    let conf = eventually("the default config stored", CONVERGE, || {
        let v = autopilot_config(&c, follower);
        if v["ModifyIndex"].as_u64().unwrap() > 0 {
            Ok(v)
        } else {
            Err(v.to_string())
        }
    });
    // Every field, in Consul's order.
    let raw = call(
        &c,
        follower,
        "GET",
        "/v1/operator/autopilot/configuration",
        b"",
    )
    .1;
    let at: Vec<usize> = [
        "CleanupDeadServers",
        "LastContactThreshold",
        "MaxTrailingLogs",
        "MinQuorum",
        "ServerStabilizationTime",
        "RedundancyZoneTag",
        "DisableUpgradeMigration",
        "UpgradeVersionTag",
        "CreateIndex",
        "ModifyIndex",
    ]
    .iter()
    .map(|k| {
        raw.find(&format!("\"{k}\":"))
            .unwrap_or_else(|| panic!("{k} in {raw}"))
    })
    .collect();
    assert!(at.windows(2).all(|w| w[0] < w[1]), "{raw}");
    assert_eq!(conf.as_object().unwrap().len(), 10, "{raw}");
    assert_eq!(conf["CleanupDeadServers"], true);
    assert_eq!(conf["LastContactThreshold"], "200ms");
    assert_eq!(conf["MaxTrailingLogs"], 250);
    assert_eq!(conf["ServerStabilizationTime"], "10s");
    let index = conf["ModifyIndex"].as_u64().unwrap();

    // A stale cas is refused (false) and changes nothing.
    let body = br#"{"CleanupDeadServers":false,"MinQuorum":3,"LastContactThreshold":"1s"}"#;
    let path = format!("/v1/operator/autopilot/configuration?cas={}", index + 1000);
    assert_eq!(
        call(&c, follower, "PUT", &path, body),
        (200, "false".into())
    );
    assert_eq!(autopilot_config(&c, leader)["MinQuorum"], 0);
    // The right one is taken, through a follower, and every server has it.
    let path = format!("/v1/operator/autopilot/configuration?cas={index}");
    assert_eq!(call(&c, follower, "PUT", &path, body), (200, "true".into()));
    for i in 0..3 {
        eventually("the new config everywhere", CONVERGE, || {
            let v = autopilot_config(&c, i);
            if v["MinQuorum"] == 3 {
                Ok(v)
            } else {
                Err(v.to_string())
            }
        });
    }
    let now = autopilot_config(&c, leader);
    assert_eq!(now["CleanupDeadServers"], false);
    assert_eq!(now["LastContactThreshold"], "1s");
    // Omitted fields are back to their defaults, not kept.
    assert_eq!(now["MaxTrailingLogs"], 250);
    assert_eq!(now["CreateIndex"], conf["CreateIndex"]);
    assert!(now["ModifyIndex"].as_u64().unwrap() > index);
    // The same cas again is stale now.
    assert_eq!(call(&c, leader, "PUT", &path, body), (200, "false".into()));
    // Without cas: always true. The Go client's body (every field,
    // durations as strings) round-trips.
    let mut sent = now.clone();
    sent["MinQuorum"] = json!(0);
    sent["ServerStabilizationTime"] = json!("2s");
    let (status, answer) = call(
        &c,
        leader,
        "PUT",
        "/v1/operator/autopilot/configuration",
        sent.to_string().as_bytes(),
    );
    assert_eq!((status, answer.as_str()), (200, "true"));
    let back = autopilot_config(&c, leader);
    assert_eq!(back["ServerStabilizationTime"], "2s");
    assert_eq!(back["MinQuorum"], 0);

    // Bad input: Consul's 400s.
    let (status, msg) = call(
        &c,
        leader,
        "PUT",
        "/v1/operator/autopilot/configuration?cas=x",
        b"{}",
    );
    assert_eq!(status, 400);
    assert!(msg.starts_with("Error parsing cas value: "), "{msg}");
    let (status, msg) = call(
        &c,
        leader,
        "PUT",
        "/v1/operator/autopilot/configuration",
        br#"{"LastContactThreshold":"soon"}"#,
    );
    assert_eq!(status, 400);
    assert!(msg.starts_with("Error parsing autopilot config: "), "{msg}");
    let (status, _) = call(
        &c,
        leader,
        "POST",
        "/v1/operator/autopilot/configuration",
        b"{}",
    );
    assert_eq!(status, 405);

    // Usage counts what the catalog holds.
    let reg = br#"{"Node":"web-node","Address":"10.0.0.9","Service":{"Service":"web","ID":"web1","Port":80}}"#;
    assert_eq!(call(&c, leader, "PUT", "/v1/catalog/register", reg).0, 200);
    let usage = json_of(&call(&c, leader, "GET", "/v1/operator/usage", b"").1);
    let dc1 = &usage["Usage"]["dc1"];
    assert!(dc1["Services"].as_u64().unwrap() >= 1, "{usage}");
    assert!(dc1["ServiceInstances"].as_u64().unwrap() >= 1, "{usage}");
    assert_eq!(dc1["ConnectServiceInstances"]["connect-proxy"], 0);
    assert_eq!(usage["KnownLeader"], true);
    assert!(usage["Index"].as_u64().unwrap() > 0);
}

#[test]
fn autopilot_health_and_state_show_the_raft_figures_and_a_dead_server_can_be_removed_by_hand() {
    let (mut c, leader) = formed(152);
    // Cleanup off: this test removes the dead server itself. A loaded test
    // machine can hold a heartbeat past Consul's 200 ms contact threshold.
    let (status, _) = call(
        &c,
        leader,
        "PUT",
        "/v1/operator/autopilot/configuration",
        br#"{"CleanupDeadServers":false,"LastContactThreshold":"2s"}"#,
    );
    assert_eq!(status, 200);
    let health = eventually("a healthy cluster", CONVERGE, || {
        let (status, body) = call(&c, leader, "GET", "/v1/operator/autopilot/health", b"");
        let v = json_of(&body);
        if status == 200 && v["Healthy"] == true {
            Ok(v)
        } else {
            Err(format!("{status} {body}"))
        }
    });
    assert_eq!(health["FailureTolerance"], 1);
    let servers = health["Servers"].as_array().unwrap();
    assert_eq!(servers.len(), 3);
    let raft = c.raft_stats(leader).unwrap();
    let term: u64 = raft["term"].as_str().unwrap().parse().unwrap();
    let leader_name = c.nodes[leader].name.clone();
    for s in servers {
        assert_eq!(s["SerfStatus"], "alive", "{s}");
        assert_eq!(s["Voter"], true);
        assert_eq!(s["Healthy"], true);
        assert_eq!(s["LastTerm"], term, "{s}");
        assert!(s["LastIndex"].as_u64().unwrap() > 0, "{s}");
        assert_eq!(s["Leader"], s["Name"] == leader_name.as_str(), "{s}");
        assert!(s["StableSince"].as_str().unwrap().ends_with('Z'), "{s}");
        assert_eq!(
            s["Address"].as_str().unwrap().split(':').nth(1).unwrap(),
            c.ports.server.to_string()
        );
    }
    let leader_row = servers.iter().find(|s| s["Leader"] == true).unwrap();
    assert_eq!(leader_row["LastContact"], "0s");

    let state = eventually("a healthy state", CONVERGE, || {
        let v = json_of(&call(&c, leader, "GET", "/v1/operator/autopilot/state", b"").1);
        if v["Healthy"] == true {
            Ok(v)
        } else {
            Err(v.to_string())
        }
    });
    let leader_id = id_of(&c, leader, &leader_name);
    assert_eq!(state["Leader"], leader_id.as_str());
    assert_eq!(state["Voters"].as_array().unwrap().len(), 3);
    assert_eq!(state["FailureTolerance"], 1);
    let row = &state["Servers"][&leader_id];
    assert_eq!(row["Status"], "leader");
    assert_eq!(row["NodeType"], "voter");
    assert_eq!(row["NodeStatus"], "alive");
    assert_eq!(
        state["Servers"]
            .as_object()
            .unwrap()
            .values()
            .filter(|s| s["Status"] == "voter")
            .count(),
        2
    );

    // Kill a follower: unhealthy (429, same body), no failure tolerance.
    let dead = (leader + 1) % 3;
    let dead_name = c.nodes[dead].name.clone();
    c.kill(dead);
    let sick = eventually("the dead server unhealthy", CONVERGE, || {
        let (status, body) = call(&c, leader, "GET", "/v1/operator/autopilot/health", b"");
        let v = json_of(&body);
        let row = v["Servers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["Name"] == dead_name.as_str())
            .cloned()
            .unwrap();
        if status == 429 && row["SerfStatus"] == "failed" {
            Ok((v, row))
        } else {
            Err(format!("{status} {body}"))
        }
    });
    assert_eq!(sick.0["Healthy"], false);
    assert_eq!(sick.0["FailureTolerance"], 0);
    assert_eq!(sick.1["Healthy"], false);
    // Cleanup is off: well past the stabilization time it is still a voter.
    std::thread::sleep(Duration::from_secs(14));
    assert!(voter_names(&c, leader).contains(&dead_name));

    // Peer removal: Consul's errors, then by address.
    let p = "/v1/operator/raft/peer";
    assert_eq!(
        call(&c, leader, "DELETE", p, b""),
        (
            400,
            "Must specify either ?id with the server's ID or ?address with IP:port of peer to remove"
                .into()
        )
    );
    assert_eq!(
        call(&c, leader, "DELETE", &format!("{p}?id=&address="), b""),
        (400, "Must specify only one of ?id or ?address".into())
    );
    assert_eq!(
        call(
            &c,
            leader,
            "DELETE",
            &format!("{p}?address=1.2.3.4:5678"),
            b""
        ),
        (
            500,
            "address \"1.2.3.4:5678\" was not found in the Raft configuration".into()
        )
    );
    assert_eq!(
        call(&c, leader, "DELETE", &format!("{p}?id=nope"), b""),
        (
            500,
            "id \"nope\" was not found in the Raft configuration".into()
        )
    );
    // Through the follower that is left: forwarded to the leader.
    let other = 3 - leader - dead;
    let addr = c.rpc_addr(dead);
    assert_eq!(
        call(&c, other, "DELETE", &format!("{p}?address={addr}"), b""),
        (200, String::new())
    );
    eventually("the dead server out of raft", CONVERGE, || {
        let names: Vec<String> = raft_servers(&c, leader)?.into_iter().map(|s| s.0).collect();
        if names.len() == 2 && !names.contains(&dead_name) {
            Ok(())
        } else {
            Err(format!("{names:?}"))
        }
    });
    // Two voters, both healthy: healthy again, still no failure tolerance.
    let two = eventually("healthy with two servers", CONVERGE, || {
        let (status, body) = call(&c, leader, "GET", "/v1/operator/autopilot/health", b"");
        let v = json_of(&body);
        if status == 200 && v["Servers"].as_array().unwrap().len() == 2 {
            Ok(v)
        } else {
            Err(format!("{status} {body}"))
        }
    });
    assert_eq!(two["FailureTolerance"], 0);
}

#[test]
fn autopilot_removes_a_dead_server_only_while_enough_remain() {
    let (mut c, leader) = formed(153);
    // MinQuorum 3 with three servers: nothing may be removed.
    let (status, _) = call(
        &c,
        leader,
        "PUT",
        "/v1/operator/autopilot/configuration",
        br#"{"ServerStabilizationTime":"1s","MinQuorum":3}"#,
    );
    assert_eq!(status, 200);
    let dead = (leader + 2) % 3;
    let dead_name = c.nodes[dead].name.clone();
    c.kill(dead);
    eventually("the dead server failed", CONVERGE, || {
        let members = c.member_statuses(leader)?;
        if members.contains(&(dead_name.clone(), 4)) {
            Ok(())
        } else {
            Err(format!("{members:?}"))
        }
    });
    // Failed for well over ServerStabilizationTime: kept, for MinQuorum.
    std::thread::sleep(Duration::from_secs(6));
    assert!(voter_names(&c, leader).contains(&dead_name));

    // MinQuorum 0: a majority of three remains without it, so it goes.
    let (status, _) = call(
        &c,
        leader,
        "PUT",
        "/v1/operator/autopilot/configuration",
        br#"{"ServerStabilizationTime":"1s"}"#,
    );
    assert_eq!(status, 200);
    eventually("the dead server removed from the voters", CONVERGE, || {
        let names: Vec<String> = raft_servers(&c, leader)?.into_iter().map(|s| s.0).collect();
        if names.len() == 2 && !names.contains(&dead_name) {
            Ok(())
        } else {
            Err(format!("{names:?}"))
        }
    });
    // And force-left: `left` among the members, out of the catalog.
    eventually(
        "the dead server left and out of the catalog",
        CONVERGE,
        || {
            let members = c.member_statuses(leader)?;
            let nodes = c.get_json(leader, "/v1/catalog/nodes")?.to_string();
            if members.contains(&(dead_name.clone(), 3))
                && !nodes.contains(&format!("\"{dead_name}\""))
            {
                Ok(())
            } else {
                Err(format!("{members:?} {nodes}"))
            }
        },
    );
    // The two left keep working.
    let other = 3 - leader - dead;
    c.put(other, "after/cleanup", "ok").unwrap();

    // Kill one of the two: removing it would leave no majority of two, so
    // it stays a voter however long it is dead.
    let leader = leader_among(&mut c, &[leader, other]);
    let second = if leader == other {
        3 - other - dead
    } else {
        other
    };
    let second_name = c.nodes[second].name.clone();
    c.kill(second);
    std::thread::sleep(Duration::from_secs(8));
    let names: Vec<String> = raft_servers(&c, leader)
        .unwrap()
        .into_iter()
        .filter(|s| s.3)
        .map(|s| s.0)
        .collect();
    assert!(names.contains(&second_name), "{names:?}");
}

#[test]
fn transfer_leader_moves_leadership() {
    let (mut c, leader) = formed(154);
    let t = "/v1/operator/raft/transfer-leader";
    // Without an id: some other server leads afterwards.
    let (status, body) = call(&c, leader, "POST", t, b"");
    assert_eq!((status, body.as_str()), (200, r#"{"Success":true}"#));
    let second = leader_among(&mut c, &[0, 1, 2]);
    assert_ne!(second, leader);
    // With an id, asked of a follower (forwarded): that server leads.
    let target = (0..3).find(|&i| i != second && i != leader).unwrap();
    let id = id_of(&c, second, &c.nodes[target].name.clone());
    let (status, body) = call(&c, leader, "POST", &format!("{t}?id={id}"), b"");
    assert_eq!((status, body.as_str()), (200, r#"{"Success":true}"#));
    assert_eq!(leader_among(&mut c, &[0, 1, 2]), target);
    // The cluster takes writes under the new leader.
    c.put(leader, "after/transfer", "ok").unwrap();
    // Unknown id: 500 naming it; GET: 405.
    let (status, body) = call(&c, target, "POST", &format!("{t}?id=nope"), b"");
    assert_eq!(
        (status, body.as_str()),
        (500, "id \"nope\" was not found in the Raft configuration")
    );
    assert_eq!(call(&c, target, "GET", t, b"").0, 405);
}

/// The keyring entries of a GET: (WAN, Keys, PrimaryKeys, NumNodes).
fn keyring(c: &Cluster, i: usize) -> Vec<(bool, Value, Value, u64)> {
    let (status, body) = call(c, i, "GET", "/v1/operator/keyring", b"");
    assert_eq!(status, 200, "{body}");
    json_of(&body)
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            assert_eq!(r["Datacenter"], "dc1");
            assert_eq!(r["Segment"], "");
            (
                r["WAN"].as_bool().unwrap(),
                r["Keys"].clone(),
                r["PrimaryKeys"].clone(),
                r["NumNodes"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn keyring_rotates_the_cluster_key_and_needs_one() {
    let (mut c, leader) = formed(155);
    let follower = (leader + 1) % 3;
    let one = |k: &str| json!({ k: 3 });
    assert_eq!(
        keyring(&c, follower),
        vec![
            (true, one(CLUSTER_KEY), one(CLUSTER_KEY), 3),
            (false, one(CLUSTER_KEY), one(CLUSTER_KEY), 3)
        ]
    );
    let new = "bmV3LWNsdXN0ZXIta2V5LWZvci10aGUtdGVzdHMhIT0=";
    let body = format!(r#"{{"Key":"{new}"}}"#);
    let k = "/v1/operator/keyring";
    // Install everywhere; the old key stays primary.
    assert_eq!(
        call(&c, follower, "POST", k, body.as_bytes()),
        (200, String::new())
    );
    let both = json!({ CLUSTER_KEY: 3, new: 3 });
    let listed = keyring(&c, leader);
    assert_eq!(listed[1], (false, both.clone(), one(CLUSTER_KEY), 3));
    // Use it: the new key signs everything from now on.
    assert_eq!(
        call(&c, leader, "PUT", k, body.as_bytes()),
        (200, String::new())
    );
    assert_eq!(keyring(&c, leader)[1], (false, both, one(new), 3));
    // The primary cannot be removed; the old key can.
    let old = format!(r#"{{"Key":"{CLUSTER_KEY}"}}"#);
    let (status, msg) = call(&c, leader, "DELETE", k, body.as_bytes());
    assert_eq!(status, 500);
    assert!(
        msg.contains("Removing the primary key is not allowed")
            && msg.contains("dc1 (LAN) error: 0/3 nodes reported success"),
        "{msg}"
    );
    assert_eq!(
        call(&c, leader, "DELETE", k, old.as_bytes()),
        (200, String::new())
    );
    assert_eq!(keyring(&c, follower)[1], (false, one(new), one(new), 3));
    // The cluster runs on the new key alone: a write through a follower.
    c.put(follower, "after/rotation", "ok").unwrap();
    // A restarted server keeps the rotated keyring (its data dir's
    // keyring file wins over --encrypt) and rejoins.
    let restarted = (leader + 2) % 3;
    c.kill(restarted);
    c.start(restarted);
    eventually("the restarted server alive again", CONVERGE, || {
        let members = c.member_statuses(leader)?;
        if members.iter().all(|(_, s)| *s == 1) {
            Ok(())
        } else {
            Err(format!("{members:?}"))
        }
    });
    c.put(restarted, "after/restart", "ok").unwrap();
    assert_eq!(keyring(&c, restarted)[1], (false, one(new), one(new), 3));
    // Bad parameters.
    let (status, msg) = call(&c, leader, "GET", &format!("{k}?relay-factor=9"), b"");
    assert_eq!(
        (status, msg.as_str()),
        (
            400,
            "Invalid relay-factor: Relay factor must be in range: [0, 5]"
        )
    );
    assert_eq!(call(&c, leader, "PATCH", k, b"").0, 405);
}

#[test]
fn keyring_without_a_cluster_key_answers_consuls_error() {
    let agent = Agent::dev().start();
    let resp = agent.request("GET", "/v1/operator/keyring", b"").unwrap();
    assert_eq!(resp.0, 500);
    let body = text(&resp.2);
    // A server answers for its WAN and its LAN pool.
    assert!(
        body.starts_with("4 errors occurred:\n\t* WAN error: 0/1 nodes reported success\n"),
        "{body}"
    );
    assert!(
        body.contains("\t* dc1 (LAN) error: 0/1 nodes reported success\n"),
        "{body}"
    );
    assert!(
        body.contains(": Keyring is empty (encryption not enabled)"),
        "{body}"
    );
    let resp = agent
        .request(
            "POST",
            "/v1/operator/keyring",
            format!(r#"{{"Key":"{CLUSTER_KEY}"}}"#).as_bytes(),
        )
        .unwrap();
    assert_eq!(resp.0, 500);
    assert!(
        text(&resp.2).contains(": No keyring to modify (encryption not enabled)"),
        "{}",
        text(&resp.2)
    );
}
