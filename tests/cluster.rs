//! Cluster tests: real `pilotfish agent --server` processes forming a raft
//! cluster on loopback (server `n` of a test on `127.0.<subnet>.<n>`, every
//! test on its own subnet and free ports, so tests run in parallel), driven
//! through the HTTP API and the `pilotfish` CLI the way an operator would:
//! bootstrap in any order, rejoin, quorum loss, graceful leave, leader
//! SIGKILL, a crash of every server, a register history checked for
//! linearizability while leaders are killed, and a partition made with
//! iptables.
//!
//! Deadlines are upper bounds for "eventually", never speed expectations.
//! A failing test prints the tail of every server's log
//! (`CLUSTER_LOG_LINES`, 60 by default). `CLUSTER_LEADER_KILLS` (20) sets
//! how many leaders the linearizability test kills. The partition tests
//! need root and iptables (tests/run.sh installs it); elsewhere than CI
//! they skip without them.

mod common;
// Its own module, not part of `common`, so that the suites sharing the
// harness do not run the checker's unit tests again.
#[path = "common/linearizability.rs"]
mod linearizability;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{base64, eventually, http, text, Cluster, HttpError, Partition};
use linearizability::{Kind, Op};
use rand::seq::SliceRandom;
use rand::Rng;
use serde_json::Value;

/// How long a cluster gets to form, elect or converge: far above what it
/// needs (a few seconds), so a slow CI machine does not fail a test.
const CONVERGE: Duration = Duration::from_secs(60);

fn sleep_ms(ms: u64) {
    std::thread::sleep(Duration::from_millis(ms));
}

/// The `\tkey = value` lines of a `pilotfish info` section's output.
fn info_value(info: &str, key: &str) -> Option<String> {
    info.lines()
        .filter_map(|l| l.strip_prefix('\t'))
        .filter_map(|l| l.split_once(" = "))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v.to_string())
}

/// Every server's peers are exactly `want` (as `ip:server-port`).
fn peers_are(c: &Cluster, servers: &[usize], want: &[usize]) -> Result<(), String> {
    let mut want: Vec<String> = want.iter().map(|&i| c.rpc_addr(i)).collect();
    want.sort();
    for &i in servers {
        let peers = c.peers(i)?;
        if peers != want {
            return Err(format!(
                "{} has peers {peers:?}, want {want:?}",
                c.nodes[i].name
            ));
        }
    }
    Ok(())
}

/// Wait until the value of `key` on server `i` (in `mode`) is `want`.
fn wait_value(c: &Cluster, i: usize, key: &str, mode: &str, want: &str) {
    eventually(
        &format!("{key} = {want:?} on {} ({mode})", c.nodes[i].name),
        CONVERGE,
        || match c.get(i, key, mode) {
            Ok(Some(v)) if v == want => Ok(()),
            other => Err(format!("{other:?}")),
        },
    );
}

// ---------------------------------------------------------------- 1. bootstrap in any start order

#[test]
fn three_servers_bootstrap_from_any_start_order() {
    let mut c = Cluster::new(11, 3, 3);
    let mut rng = rand::rng();
    let mut order: Vec<usize> = (0..3).collect();
    order.shuffle(&mut rng);
    let mut delays = Vec::new();
    for (n, &i) in order.iter().enumerate() {
        if n > 0 {
            let d = rng.random_range(0..2000);
            delays.push(d);
            sleep_ms(d);
        }
        c.start(i);
    }
    eprintln!("start order {order:?}, delays {delays:?} ms");

    let leader = eventually("every info: num_peers = 2, one Leader", CONVERGE, || {
        let mut leaders = Vec::new();
        for i in 0..3 {
            let info = c.cli(i, &["info"])?;
            let peers = info_value(&info, "num_peers");
            if peers.as_deref() != Some("2") {
                return Err(format!("{}: num_peers = {peers:?}", c.nodes[i].name));
            }
            if info_value(&info, "state").as_deref() == Some("Leader") {
                leaders.push(i);
            }
        }
        match leaders[..] {
            [one] => Ok(one),
            _ => Err(format!("servers printing state = Leader: {leaders:?}")),
        }
    });

    let follower = (0..3).find(|&i| i != leader).expect("two followers");
    c.put(follower, "bootstrap/written-on-a-follower", "yes")
        .expect("a write on a follower");
    for i in 0..3 {
        assert_eq!(
            c.get(i, "bootstrap/written-on-a-follower", "consistent"),
            Ok(Some("yes".to_string())),
            "?consistent read on {}",
            c.nodes[i].name
        );
    }
}

// ---------------------------------------------------------------- 2. 5 servers, late starters

#[test]
fn five_servers_bootstrap_with_late_starters() {
    let mut c = Cluster::new(12, 5, 5);
    for i in 0..3 {
        c.start(i);
    }
    sleep_ms(2000);
    // Three of five: nobody may bootstrap yet.
    for i in 0..3 {
        let peers = c.peers(i).expect("peers");
        assert!(
            peers.is_empty(),
            "{} has peers {peers:?} before the expected 5 servers exist",
            c.nodes[i].name
        );
    }
    c.start(3);
    c.start(4);
    let all: Vec<usize> = (0..5).collect();
    eventually("5 peers everywhere", CONVERGE, || {
        peers_are(&c, &all, &all)?;
        for i in 0..5 {
            let r = c.raft_stats(i)?;
            if r["num_peers"] != "4" {
                return Err(format!("{}: num_peers {}", c.nodes[i].name, r["num_peers"]));
            }
        }
        Ok(())
    });
    let leader = c.agreed_leader(&all, CONVERGE);
    assert_eq!(c.leaders(), vec![leader], "exactly one leader");
}

// ---------------------------------------------------------------- 3. rejoin after a graceful leave

#[test]
fn test_rejoin_raft() {
    let mut c = Cluster::new(13, 3, 3);
    c.start_all();
    let all = [0, 1, 2];
    let leader = c.agreed_leader(&all, CONVERGE);
    eventually("3 peers", CONVERGE, || peers_are(&c, &all, &all));
    let away = (0..3).find(|&i| i != leader).expect("a follower");
    let stay: Vec<usize> = all.iter().copied().filter(|&i| i != away).collect();

    c.terminate(away); // SIGTERM: a graceful leave
    eventually("the leaver is out of the peers", CONVERGE, || {
        peers_are(&c, &stay, &stay)
    });
    c.put(stay[0], "rejoin/written-while-away", "here")
        .expect("a write while one server is away");

    c.start(away);
    eventually("the same 3 peers again", CONVERGE, || {
        peers_are(&c, &all, &all)
    });
    wait_value(&c, away, "rejoin/written-while-away", "stale", "here");
    assert_eq!(
        c.get(away, "rejoin/written-while-away", "consistent"),
        Ok(Some("here".to_string()))
    );
    c.agreed_leader(&all, CONVERGE);
    // And it takes writes again, forwarded or led.
    c.put(away, "rejoin/written-on-the-rejoined", "ok")
        .expect("a write on the rejoined server");
    for i in all {
        assert_eq!(
            c.get(i, "rejoin/written-on-the-rejoined", "consistent"),
            Ok(Some("ok".to_string()))
        );
    }
}

/// A container restarted on the same volume often comes back with a new
/// address: the server keeps its node ID and data, and the cluster must
/// replicate to the new address, not the old one.
#[test]
fn a_server_restarted_on_a_new_address_is_reached_there() {
    let mut c = Cluster::new(23, 3, 3);
    c.start_all();
    let all = [0, 1, 2];
    let leader = c.agreed_leader(&all, CONVERGE);
    eventually("3 peers", CONVERGE, || peers_are(&c, &all, &all));
    let moved = (0..3).find(|&i| i != leader).expect("a follower");
    let old_addr = c.rpc_addr(moved);

    c.kill(moved);
    c.nodes[moved].ip = std::net::Ipv4Addr::new(127, 0, 23, 9);
    c.start(moved);
    let new_addr = c.rpc_addr(moved);
    eventually("every server lists the new address", CONVERGE, || {
        for i in all {
            let peers = c.peers(i)?;
            if peers.contains(&old_addr) || !peers.contains(&new_addr) {
                return Err(format!("{} lists {peers:?}", c.nodes[i].name));
            }
        }
        Ok(())
    });
    let leader = c.agreed_leader(&all, CONVERGE);
    c.put(leader, "moved/after", "reached")
        .expect("a write after the move");
    wait_value(&c, moved, "moved/after", "stale", "reached");
    let config = c
        .get_json(leader, "/v1/operator/raft/configuration")
        .expect("raft configuration");
    let entry = config["Servers"]
        .as_array()
        .expect("Servers")
        .iter()
        .find(|s| s["Node"] == c.nodes[moved].name.as_str())
        .cloned()
        .expect("the moved server");
    assert_eq!(entry["Address"], new_addr.as_str(), "{config}");
    assert_eq!(entry["Voter"], true, "{config}");
    let name = c.nodes[moved].name.clone();
    let ip = c.nodes[moved].ip.to_string();
    eventually("the catalog has the new address", CONVERGE, || {
        let node = c.get_json(leader, &format!("/v1/catalog/node/{name}"))?;
        if node["Node"]["Address"] == ip.as_str() {
            Ok(())
        } else {
            Err(node["Node"].to_string())
        }
    });
}

// ---------------------------------------------------------------- 3b. snapshots by log size

/// The index up to which server `i`'s log is purged (0: none), from its
/// `raft-log/meta.json`.
fn purged_index(c: &Cluster, i: usize) -> u64 {
    let path = c.nodes[i].data_dir.join("raft-log/meta.json");
    std::fs::read(&path)
        .ok()
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .and_then(|m| m["purged"]["index"].as_u64())
        .unwrap_or(0)
}

/// Every server, followers too, takes a snapshot once its log holds
/// `--raft-snapshot-threshold-bytes` and purges the log it covers (past
/// the 1024 entries kept); a server that joins afterwards can only be
/// caught up with the leader's snapshot, and is.
#[test]
fn servers_snapshot_by_log_size_and_a_late_server_is_sent_a_snapshot() {
    let mut c = Cluster::new(25, 4, 3);
    c.args = vec!["--raft-snapshot-threshold-bytes".into(), "16384".into()];
    for i in 0..3 {
        c.start(i);
    }
    let first = [0, 1, 2];
    let leader = c.agreed_leader(&first, CONVERGE);
    // One entry each: more than a snapshot keeps of the log.
    for i in 0..1500 {
        c.put(leader, &format!("snap/{i}"), &format!("value-{i}"))
            .expect("a write");
    }
    eventually(
        "every server took a snapshot and purged its log",
        CONVERGE,
        || {
            for i in first {
                let stats = c.raft_stats(i)?;
                let snapshot: u64 = stats["last_snapshot_index"]
                    .as_str()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
                let purged = purged_index(&c, i);
                if snapshot < 1200 || purged == 0 {
                    return Err(format!(
                        "{}: snapshot at {snapshot}, log purged up to {purged}",
                        c.nodes[i].name
                    ));
                }
                if !c.nodes[i].data_dir.join("raft-snapshot").is_file() {
                    return Err(format!("{} has no raft-snapshot file", c.nodes[i].name));
                }
            }
            Ok(())
        },
    );
    c.start(3);
    wait_value(&c, 3, "snap/0", "stale", "value-0");
    wait_value(&c, 3, "snap/1499", "stale", "value-1499");
    assert!(
        c.nodes[3].data_dir.join("raft-snapshot").is_file(),
        "the late server keeps the snapshot it was sent\n{}",
        c.log_tail(3, 40)
    );
}

// ---------------------------------------------------------------- 4. quorum loss

#[test]
fn test_quorum_loss_with_the_leader_killed() {
    quorum_loss(14, true);
}

#[test]
fn test_quorum_loss_with_the_leader_surviving() {
    quorum_loss(20, false);
}

/// 5 servers, 3 SIGKILLed (the leader among them or not): the 2 left
/// refuse `?consistent` reads and writes with Consul's 500, and still
/// answer `?stale` from their replica. Default reads fail too where no
/// leader is left; for the follower of a leader that lost quorum see
/// `default_reads_fail_on_a_follower_whose_leader_lost_quorum`.
fn quorum_loss(subnet: u8, kill_the_leader: bool) {
    let mut c = Cluster::new(subnet, 5, 5);
    c.start_all();
    let all: Vec<usize> = (0..5).collect();
    let leader = c.agreed_leader(&all, CONVERGE);
    c.put(leader, "quorum/key", "before-the-loss")
        .expect("write");
    for i in 0..5 {
        wait_value(&c, i, "quorum/key", "stale", "before-the-loss");
    }
    // 3 of 5 die: the leader and two followers, or three followers.
    let mut followers: Vec<usize> = all.iter().copied().filter(|&i| i != leader).collect();
    followers.shuffle(&mut rand::rng());
    let victims: Vec<usize> = if kill_the_leader {
        vec![leader, followers[0], followers[1]]
    } else {
        followers[..3].to_vec()
    };
    for &i in &victims {
        c.kill(i);
    }
    let survivors: Vec<usize> = all
        .iter()
        .copied()
        .filter(|i| !victims.contains(i))
        .collect();
    eprintln!("leader {leader}; killed {victims:?}, survivors {survivors:?}");

    // Both survivors at once: each refusal holds 7 s for a leader first.
    std::thread::scope(|scope| {
        for &s in &survivors {
            let c = &c;
            scope.spawn(move || {
                let name = &c.nodes[s].name;
                eventually(
                    &format!("a ?consistent read on {name} fails"),
                    Duration::from_secs(30),
                    || match c.get(s, "quorum/key", "consistent") {
                        Err(e) if e == "HTTP 500 No cluster leader" => Ok(()),
                        other => Err(format!("{other:?}")),
                    },
                );
                if kill_the_leader || s == leader {
                    eventually(
                        &format!("a default read on {name} fails"),
                        Duration::from_secs(30),
                        || match c.get(s, "quorum/key", "") {
                            Err(e) if e == "HTTP 500 No cluster leader" => Ok(()),
                            other => Err(format!("{other:?}")),
                        },
                    );
                }
                let put = c.put(s, "quorum/key", &format!("after-the-loss-on-{name}"));
                let refused = match &put {
                    // No leader at all: Consul's text.
                    Err(e) if kill_the_leader => e == "PUT quorum/key: HTTP 500 No cluster leader",
                    Err(e) => e.starts_with("PUT quorum/key: HTTP 500 "),
                    Ok(()) => false,
                };
                assert!(refused, "a write without quorum on {name}: {put:?}");
                eprintln!("a write on {name} without quorum: {put:?}");
                assert_eq!(
                    c.get(s, "quorum/key", "stale"),
                    Ok(Some("before-the-loss".to_string())),
                    "?stale on {name}"
                );
            });
        }
    });
}

/// Consul's leader steps down when it cannot reach a quorum for a lease
/// (500 ms), so its followers stop hearing from it and refuse default
/// reads within about a second.
#[test]
fn default_reads_fail_on_a_follower_whose_leader_lost_quorum() {
    let mut c = Cluster::new(21, 5, 5);
    c.start_all();
    let all: Vec<usize> = (0..5).collect();
    let leader = c.agreed_leader(&all, CONVERGE);
    c.put(leader, "quorum/key", "v").expect("write");
    let followers: Vec<usize> = all.iter().copied().filter(|&i| i != leader).collect();
    for &i in &followers[..3] {
        c.kill(i);
    }
    let follower = followers[3];
    wait_value(&c, follower, "quorum/key", "stale", "v");
    eventually(
        "a default read on the follower of a leader without quorum fails",
        Duration::from_secs(30),
        || match c.get(follower, "quorum/key", "") {
            Err(e) if e == "HTTP 500 No cluster leader" => Ok(()),
            other => Err(format!("{other:?}")),
        },
    );
}

// ---------------------------------------------------------------- 5. graceful leave of 3 of 5

#[test]
fn test_graceful_leave() {
    let mut c = Cluster::new(15, 5, 5);
    c.start_all();
    let all: Vec<usize> = (0..5).collect();
    let leader = c.agreed_leader(&all, CONVERGE);
    eventually("5 peers", CONVERGE, || peers_are(&c, &all, &all));
    // The leader leaves first, then two followers.
    let mut followers: Vec<usize> = all.iter().copied().filter(|&i| i != leader).collect();
    followers.shuffle(&mut rand::rng());
    let leavers = [leader, followers[0], followers[1]];
    let stay = [followers[2], followers[3]];
    for &i in &leavers {
        let out = c.cli(i, &["leave"]).expect("pilotfish leave");
        assert!(out.contains("Graceful leave complete"), "{out}");
        // `leave` answers once the leave is done, as Consul's does: the
        // members already know (a preStop hook can rely on it).
        let members = c.member_statuses(stay[0]).expect("members");
        assert!(
            members.contains(&(c.nodes[i].name.clone(), 3)),
            "{} should be left (3) as soon as its leave answered: {members:?}",
            c.nodes[i].name
        );
        let status = c.wait_exit(i, Duration::from_secs(30));
        assert!(status.success(), "{} exited with {status}", c.nodes[i].name);
    }
    let new_leader = c.agreed_leader(&stay, CONVERGE);
    eventually("2 peers", CONVERGE, || peers_are(&c, &stay, &stay));
    for (n, &i) in stay.iter().enumerate() {
        c.put(i, &format!("leave/after-{n}"), "accepted")
            .unwrap_or_else(|e| panic!("a write on {}: {e}", c.nodes[i].name));
    }
    for &i in &stay {
        for n in 0..2 {
            assert_eq!(
                c.get(i, &format!("leave/after-{n}"), "consistent"),
                Ok(Some("accepted".to_string()))
            );
        }
        let members = c.member_statuses(i).expect("members");
        for &l in &leavers {
            assert!(
                members.contains(&(c.nodes[l].name.clone(), 3)),
                "{} should be left (3) on {}: {members:?}",
                c.nodes[l].name,
                c.nodes[i].name
            );
        }
    }
    assert_eq!(c.leaders(), vec![new_leader]);
}

// ---------------------------------------------------------------- 6. leader SIGKILL

#[test]
fn leader_sigkill_elects_a_new_leader_and_marks_it_failed() {
    let mut c = Cluster::new(16, 3, 3);
    c.start_all();
    let all = [0, 1, 2];
    let leader = c.agreed_leader(&all, CONVERGE);
    c.put(leader, "kill/before", "1").expect("write");
    c.kill(leader);
    let survivors: Vec<usize> = all.iter().copied().filter(|&i| i != leader).collect();
    let new_leader = c.agreed_leader(&survivors, CONVERGE);
    assert_ne!(new_leader, leader);
    for &i in &survivors {
        c.put(i, &format!("kill/after-on-{}", c.nodes[i].name), "1")
            .unwrap_or_else(|e| panic!("a write on {}: {e}", c.nodes[i].name));
    }
    for &i in &survivors {
        assert_eq!(c.get(i, "kill/before", "consistent"), Ok(Some("1".into())));
        for &j in &survivors {
            let key = format!("kill/after-on-{}", c.nodes[j].name);
            assert_eq!(c.get(i, &key, "consistent"), Ok(Some("1".into())));
        }
        let dead = c.nodes[leader].name.clone();
        eventually(
            &format!("{dead} failed in members on {}", c.nodes[i].name),
            CONVERGE,
            || {
                let m = c.member_statuses(i)?;
                if m.contains(&(dead.clone(), 4)) {
                    Ok(())
                } else {
                    Err(format!("{m:?}"))
                }
            },
        );
        let members = c.cli(i, &["members"]).expect("pilotfish members");
        let row = members
            .lines()
            .find(|l| l.split_whitespace().next() == Some(dead.as_str()))
            .unwrap_or_else(|| panic!("no {dead} row:\n{members}"));
        assert!(row.contains("failed"), "{row}");
    }
}

// ---------------------------------------------------------------- 7. SIGKILL of every server

#[test]
fn kill_all_servers_mid_write_loop_keeps_every_acknowledged_write() {
    let mut c = Cluster::new(17, 3, 3);
    c.start_all();
    let all = [0, 1, 2];
    c.agreed_leader(&all, CONVERGE);

    let addrs: Vec<SocketAddr> = all.iter().map(|&i| c.http_addr(i)).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let acked_count = Arc::new(AtomicUsize::new(0));
    let writer = {
        let (stop, acked_count) = (stop.clone(), acked_count.clone());
        std::thread::spawn(move || {
            let mut acked = Vec::new();
            let mut i = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let addr = addrs[i % addrs.len()];
                let body = format!("v{i}");
                if let Ok((200, _, b)) = http(addr, "PUT", &format!("/v1/kv/k{i}"), body.as_bytes())
                {
                    if text(&b) == "true" {
                        acked.push(i);
                        acked_count.fetch_add(1, Ordering::Relaxed);
                    }
                }
                i += 1;
            }
            acked
        })
    };
    eventually("300 acknowledged writes", CONVERGE, || {
        let n = acked_count.load(Ordering::Relaxed);
        if n >= 300 {
            Ok(())
        } else {
            Err(format!("{n}"))
        }
    });
    for i in all {
        c.kill(i);
    }
    stop.store(true, Ordering::Relaxed);
    let acked = writer.join().expect("writer thread");
    eprintln!(
        "{} writes acknowledged before every server was killed",
        acked.len()
    );

    // Start them in another order than the first time.
    for i in [2, 0, 1] {
        c.start(i);
    }
    c.agreed_leader(&all, CONVERGE);
    for i in all {
        let entries = eventually("a ?consistent recurse read", CONVERGE, || {
            c.get_json(i, "/v1/kv/k?recurse&consistent")
        });
        let found: BTreeMap<String, String> = entries
            .as_array()
            .expect("a list of entries")
            .iter()
            .map(|e| {
                (
                    e["Key"].as_str().unwrap_or_default().to_string(),
                    e["Value"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect();
        let lost: Vec<usize> = acked
            .iter()
            .copied()
            .filter(|k| found.get(&format!("k{k}")) != Some(&base64(format!("v{k}").as_bytes())))
            .collect();
        assert!(
            lost.is_empty(),
            "{} of {} acknowledged writes missing on {}: {lost:?}",
            lost.len(),
            acked.len(),
            c.nodes[i].name
        );
    }
}

// ---------------------------------------------------------------- 8. linearizability under leader kills

/// What a client thread saw of one operation on the register.
struct Record {
    op: Op,
    /// For an acknowledged write: the raft index its txn answered.
    index: Option<u64>,
}

/// One client of the register: random servers, half writes (a txn setting
/// the register and a marker key `lin/acked/<v>` to a unique value), half
/// `?consistent` reads, until `stop`.
fn register_client(
    client: usize,
    addrs: Vec<SocketAddr>,
    t0: Instant,
    stop: Arc<AtomicBool>,
) -> (Vec<Record>, BTreeMap<String, usize>) {
    let mut rng = rand::rng();
    let mut records = Vec::new();
    let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
    let now = || u64::try_from(t0.elapsed().as_nanos()).expect("fits");
    let mut seq = 0u32;
    while !stop.load(Ordering::Relaxed) {
        let addr = addrs[rng.random_range(0..addrs.len())];
        if rng.random_bool(0.5) {
            seq += 1;
            let v = u32::try_from(client).expect("few clients") * 1_000_000 + seq;
            let value = base64(v.to_string().as_bytes());
            let body = format!(
                r#"[{{"KV":{{"Verb":"set","Key":"lin/register","Value":"{value}"}}}},{{"KV":{{"Verb":"set","Key":"lin/acked/{v}","Value":"{value}"}}}}]"#
            );
            let invoked = now();
            let answer = http(addr, "PUT", "/v1/txn", body.as_bytes());
            let returned = now();
            let (returned, index, outcome) = match answer {
                Err(HttpError::NotSent(_)) => {
                    *outcomes.entry("write not sent".into()).or_default() += 1;
                    continue;
                }
                Ok((200, _, b)) => {
                    let index = serde_json::from_slice::<Value>(&b)
                        .ok()
                        .and_then(|j| j["Results"][1]["KV"]["ModifyIndex"].as_u64());
                    assert!(
                        index.is_some(),
                        "a txn answer without an index: {}",
                        text(&b)
                    );
                    (Some(returned), index, "write ok".to_string())
                }
                Ok((status, _, b)) => (None, None, format!("write {status} {}", text(&b))),
                Err(HttpError::NoAnswer(e)) => {
                    (None, None, format!("write no answer ({})", e.kind()))
                }
            };
            *outcomes.entry(outcome).or_default() += 1;
            records.push(Record {
                op: Op {
                    client,
                    kind: Kind::Write(v),
                    invoked,
                    returned,
                },
                index,
            });
        } else {
            let invoked = now();
            let answer = http(addr, "GET", "/v1/kv/lin/register?consistent&raw", b"");
            let returned = now();
            let read = match answer {
                Ok((200, _, b)) => Some(text(&b).parse::<u32>().ok()),
                Ok((404, _, _)) => Some(None),
                _ => None,
            };
            let Some(read) = read else {
                *outcomes.entry("read failed".into()).or_default() += 1;
                continue;
            };
            *outcomes.entry("read ok".into()).or_default() += 1;
            records.push(Record {
                op: Op {
                    client,
                    kind: Kind::Read(read),
                    invoked,
                    returned: Some(returned),
                },
                index: None,
            });
        }
    }
    (records, outcomes)
}

#[test]
fn linearizable_register_under_leader_kills() {
    let kills: usize = std::env::var("CLUSTER_LEADER_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let clients = 4;
    let mut c = Cluster::new(18, 3, 3);
    c.start_all();
    let all = [0, 1, 2];
    c.agreed_leader(&all, CONVERGE);

    let t0 = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let addrs: Vec<SocketAddr> = all.iter().map(|&i| c.http_addr(i)).collect();
    let threads: Vec<_> = (0..clients)
        .map(|client| {
            let (addrs, stop) = (addrs.clone(), stop.clone());
            std::thread::spawn(move || register_client(client, addrs, t0, stop))
        })
        .collect();

    let mut rng = rand::rng();
    sleep_ms(1000);
    for k in 0..kills {
        let leader = eventually(
            &format!("a leader to kill (kill {k})"),
            CONVERGE,
            || match c.leaders()[..] {
                [one] => Ok(one),
                ref other => Err(format!("leaders {other:?}")),
            },
        );
        c.kill(leader);
        eventually(
            &format!("a new leader after kill {k}"),
            CONVERGE,
            || match c.leaders()[..] {
                [one] if one != leader => Ok(()),
                ref other => Err(format!("leaders {other:?}")),
            },
        );
        c.start(leader);
        sleep_ms(rng.random_range(300..1500));
    }
    sleep_ms(1000);
    stop.store(true, Ordering::Relaxed);
    let mut records = Vec::new();
    let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
    for t in threads {
        let (r, o) = t.join().expect("client thread");
        records.extend(r);
        for (k, n) in o {
            *outcomes.entry(k).or_default() += n;
        }
    }

    // Final reads on every server, after everything else.
    c.agreed_leader(&all, CONVERGE);
    for i in all {
        let invoked = u64::try_from(t0.elapsed().as_nanos()).expect("fits");
        let read = eventually("a final ?consistent read", CONVERGE, || {
            c.get(i, "lin/register", "consistent")
        });
        let returned = u64::try_from(t0.elapsed().as_nanos()).expect("fits");
        records.push(Record {
            op: Op {
                client: 100 + i,
                kind: Kind::Read(read.map(|v| v.parse().expect("a value the test wrote"))),
                invoked,
                returned: Some(returned),
            },
            index: None,
        });
    }

    // No acknowledged write lost: its marker key is there, at the index the
    // write was acknowledged with.
    let markers = eventually("the markers", CONVERGE, || {
        c.get_json(0, "/v1/kv/lin/acked/?recurse&consistent")
    });
    let found: BTreeMap<u32, u64> = markers
        .as_array()
        .expect("a list")
        .iter()
        .filter_map(|e| {
            let v = e["Key"]
                .as_str()?
                .strip_prefix("lin/acked/")?
                .parse()
                .ok()?;
            Some((v, e["ModifyIndex"].as_u64()?))
        })
        .collect();
    let acked: Vec<(u32, u64)> = records
        .iter()
        .filter_map(|r| match (r.op.kind, r.index) {
            (Kind::Write(v), Some(i)) => Some((v, i)),
            _ => None,
        })
        .collect();
    let lost: Vec<&(u32, u64)> = acked
        .iter()
        .filter(|(v, i)| found.get(v) != Some(i))
        .collect();
    let unknown = records.iter().filter(|r| r.op.returned.is_none()).count();
    let reads = records
        .iter()
        .filter(|r| matches!(r.op.kind, Kind::Read(_)))
        .count();
    eprintln!(
        "history: {kills} leader kills, {} operations: {} acknowledged writes, {unknown} writes \
         of unknown outcome, {reads} reads; outcomes {outcomes:?}",
        records.len(),
        acked.len()
    );
    assert!(
        lost.is_empty(),
        "acknowledged writes lost (value, index acknowledged): {lost:?}"
    );
    assert!(
        acked.len() >= 100,
        "too few acknowledged writes to mean much"
    );
    assert!(reads >= 100, "too few reads to mean much");

    let ops: Vec<Op> = records.into_iter().map(|r| r.op).collect();
    let started = Instant::now();
    let verdict = linearizability::check(&ops);
    eprintln!(
        "linearizability check of {} operations took {:?}",
        ops.len(),
        started.elapsed()
    );
    if let Err(v) = verdict {
        panic!("{v}");
    }
}

// ---------------------------------------------------------------- 9. partition

/// Partitions need root and iptables; CI has both (tests/run.sh).
fn partitions_available() -> bool {
    match Partition::available() {
        Ok(()) => true,
        Err(why) if std::env::var_os("CI").is_some() => {
            panic!("CI must run the partition tests: {why}")
        }
        Err(why) => {
            eprintln!("skipping: {why}");
            false
        }
    }
}

/// A group of its own for every server of a partition test, unique to this
/// process and subnet (see [`Cluster::gid_base`]).
fn partition_gids(subnet: u8) -> u32 {
    200_000 + (std::process::id() % 100_000) * 256 + u32::from(subnet) * 8
}

#[test]
fn test_quorum_consistency_under_a_partition() {
    if !partitions_available() {
        return;
    }
    let mut c = Cluster::new(19, 5, 5);
    c.gid_base = Some(partition_gids(19));
    c.start_all();
    let all: Vec<usize> = (0..5).collect();
    let leader = c.agreed_leader(&all, CONVERGE);
    // Put the leader in the minority: the harder side of the cut.
    let mut others: Vec<usize> = all.iter().copied().filter(|&i| i != leader).collect();
    others.shuffle(&mut rand::rng());
    let minority = vec![leader, others[0]];
    let majority = others[1..].to_vec();
    c.put(leader, "partition/key", "before").expect("write");
    for i in 0..5 {
        wait_value(&c, i, "partition/key", "stale", "before");
    }

    let cut = Partition::new(&c, &minority, &majority);
    eprintln!("partitioned {minority:?} from {majority:?}");
    let new_leader = c.agreed_leader(&majority, CONVERGE);
    c.put(new_leader, "partition/key", "majority")
        .expect("the majority accepts writes");
    for &i in &majority {
        c.put(i, &format!("partition/on-{}", c.nodes[i].name), "1")
            .unwrap_or_else(|e| panic!("a write on {}: {e}", c.nodes[i].name));
    }
    // Both minority servers at once: each refusal holds for a leader first.
    std::thread::scope(|scope| {
        for &i in &minority {
            let c = &c;
            scope.spawn(move || {
                let name = &c.nodes[i].name;
                let put = c.put(i, &format!("partition/on-{name}"), "must-fail");
                assert!(
                    matches!(&put, Err(e) if e.contains("HTTP 500")),
                    "a write on minority {name}: {put:?}"
                );
                let read = c.get(i, "partition/key", "consistent");
                assert!(
                    matches!(&read, Err(e) if e.starts_with("HTTP 500")),
                    "a ?consistent read on minority {name}: {read:?}"
                );
                assert_eq!(
                    c.get(i, "partition/key", "stale"),
                    Ok(Some("before".to_string())),
                    "minority {name} still answers ?stale from its replica"
                );
            });
        }
    });

    cut.heal();
    for &i in &minority {
        wait_value(&c, i, "partition/key", "stale", "majority");
        for &m in &majority {
            wait_value(
                &c,
                i,
                &format!("partition/on-{}", c.nodes[m].name),
                "stale",
                "1",
            );
        }
        assert_eq!(
            c.get(i, &format!("partition/on-{}", c.nodes[i].name), "stale"),
            Ok(None),
            "the write refused on {} must not appear",
            c.nodes[i].name
        );
    }
    let healed = c.agreed_leader(&all, CONVERGE);
    eventually("5 peers after the heal", CONVERGE, || {
        peers_are(&c, &all, &all)
    });
    c.put(minority[0], "partition/after-heal", "ok")
        .expect("a write on a former minority server");
    for i in all {
        assert_eq!(
            c.get(i, "partition/after-heal", "consistent"),
            Ok(Some("ok".to_string()))
        );
    }
    eprintln!("leader {leader} before the cut, {new_leader} during, {healed} after");
}

/// The same check as
/// `default_reads_fail_on_a_follower_whose_leader_lost_quorum`, where it
/// hurts: cut off with the old leader, a follower must not keep answering
/// default reads with a value the majority has since overwritten (Consul
/// bounds this to the leader's lease, about a second).
#[test]
fn the_minority_side_of_a_partition_stops_answering_default_reads() {
    if !partitions_available() {
        return;
    }
    let mut c = Cluster::new(22, 5, 5);
    c.gid_base = Some(partition_gids(22));
    c.start_all();
    let all: Vec<usize> = (0..5).collect();
    let leader = c.agreed_leader(&all, CONVERGE);
    let others: Vec<usize> = all.iter().copied().filter(|&i| i != leader).collect();
    let (minority, majority) = (vec![leader, others[0]], others[1..].to_vec());
    c.put(leader, "partition/key", "before").expect("write");
    for i in 0..5 {
        wait_value(&c, i, "partition/key", "stale", "before");
    }
    let _cut = Partition::new(&c, &minority, &majority);
    let new_leader = c.agreed_leader(&majority, CONVERGE);
    c.put(new_leader, "partition/key", "after")
        .expect("the majority accepts writes");
    let follower = others[0];
    eventually(
        "the minority follower refuses default reads",
        Duration::from_secs(30),
        || match c.get(follower, "partition/key", "") {
            Err(e) if e == "HTTP 500 No cluster leader" => Ok(()),
            other => Err(format!("{other:?}")),
        },
    );
}

// ---------------------------------------------------------------- 9. a survivor stops

/// A server whose peers are all gone still stops on SIGTERM: the graceful
/// leave cannot reach a quorum, gives up after a few seconds, and the
/// process exits. Its log names each unreachable peer once per change, not
/// on every retry.
#[test]
fn a_server_whose_peers_died_exits_on_sigterm() {
    let mut c = Cluster::new(24, 3, 3);
    c.start_all();
    let all: Vec<usize> = (0..3).collect();
    let leader = c.agreed_leader(&all, CONVERGE);
    c.put(leader, "survivor/k", "v").expect("a write");
    let survivor = (leader + 1) % 3;
    for i in all.iter().copied().filter(|&i| i != survivor) {
        c.kill(i);
    }
    // Long enough for raft to retry the dead peers many times over.
    sleep_ms(3000);
    let pid = c.pid(survivor).expect("running");
    let pid = nix::unistd::Pid::from_raw(i32::try_from(pid).expect("a pid"));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
    let started = Instant::now();
    let status = c.wait_exit(survivor, Duration::from_secs(10));
    assert!(status.code().is_some(), "ended by a signal: {status}");
    eprintln!("survivor exited in {:?} with {status}", started.elapsed());
    let log = c.log_tail(survivor, 100_000);
    let unreachable = log
        .lines()
        .filter(|l| l.contains("ERROR") || l.contains("unreachable"))
        .count();
    assert!(
        unreachable <= 12,
        "{unreachable} ERROR/unreachable lines in the survivor's log:\n{}",
        c.log_tail(survivor, 40)
    );
}
