//! The servers' own `consul` service (consul-breadth.md §3.1) on a real
//! three-server cluster: every server is in the catalog as service `consul`
//! (ID `consul`, its server port, no tags, no address, its node's
//! `serfHealth` as its health), kept by the leader as servers fail (critical,
//! still listed, out of `?passing` and DNS), come back, and leave (gone), and
//! DNS `consul.service.consul` answers what the catalog holds.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

// Only parts of the cluster harness are used here.
#[allow(dead_code, unused_imports)]
mod common;

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use common::{eventually, Cluster};
use serde_json::Value;

const CONVERGE: Duration = Duration::from_secs(60);

/// `(node, address, port, serfHealth status)` of each `consul` entry in
/// `/v1/health/service/consul` on server `i`.
fn consul_entries(
    c: &Cluster,
    i: usize,
    query: &str,
) -> Result<BTreeSet<(String, String, u64, String)>, String> {
    let v = c.get_json(i, &format!("/v1/health/service/consul{query}"))?;
    let rows = v.as_array().ok_or_else(|| format!("not a list: {v}"))?;
    rows.iter()
        .map(|e| {
            let serf = e["Checks"]
                .as_array()
                .and_then(|cs| cs.iter().find(|c| c["CheckID"] == "serfHealth"))
                .ok_or_else(|| format!("no serfHealth in {e}"))?;
            Ok((
                e["Node"]["Node"].as_str().unwrap_or_default().to_string(),
                e["Node"]["Address"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                e["Service"]["Port"].as_u64().unwrap_or_default(),
                serf["Status"].as_str().unwrap_or_default().to_string(),
            ))
        })
        .collect()
}

fn want(c: &Cluster, servers: &[(usize, &str)]) -> BTreeSet<(String, String, u64, String)> {
    servers
        .iter()
        .map(|&(i, status)| {
            (
                c.nodes[i].name.clone(),
                c.nodes[i].ip.to_string(),
                u64::from(c.ports.server),
                status.to_string(),
            )
        })
        .collect()
}

/// The addresses `consul.service.consul` resolves to through server `i`'s DNS.
fn dns_servers(c: &Cluster, i: usize) -> Result<BTreeSet<IpAddr>, String> {
    let dns = SocketAddr::new(IpAddr::V4(c.nodes[i].ip), c.ports.dns);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    Ok(rt
        .block_on(pilotfish::discovery::resolve::resolve_all(
            "consul.service.consul",
            Some(dns),
        ))
        .unwrap_or_default()
        .into_iter()
        .collect())
}

fn ips(c: &Cluster, servers: &[usize]) -> BTreeSet<IpAddr> {
    servers.iter().map(|&i| IpAddr::V4(c.nodes[i].ip)).collect()
}

#[test]
fn servers_are_the_consul_service_as_they_join_fail_and_leave() {
    let mut c = Cluster::new(57, 3, 3);
    c.start_all();
    let all = [0, 1, 2];
    let leader = c.agreed_leader(&all, CONVERGE);
    let passing = want(&c, &[(0, "passing"), (1, "passing"), (2, "passing")]);
    for i in all {
        eventually("three consul instances", CONVERGE, || {
            let got = consul_entries(&c, i, "")?;
            (got == passing).then_some(()).ok_or(format!("{got:?}"))
        });
    }
    // The catalog's views agree: the services list, the rows, the node.
    let services = c.get_json(leader, "/v1/catalog/services").unwrap();
    assert_eq!(services["consul"], serde_json::json!([]), "{services}");
    let rows = c.get_json(leader, "/v1/catalog/service/consul").unwrap();
    for row in rows.as_array().unwrap() {
        assert_eq!(row["ServiceID"], "consul", "{row}");
        assert_eq!(row["ServiceAddress"], "", "{row}");
        assert_eq!(row["ServiceTags"], serde_json::json!([]), "{row}");
        assert_eq!(row["ServiceMeta"]["raft_version"], "3", "{row}");
        let addr = row["Address"].clone();
        assert_eq!(row["TaggedAddresses"]["lan"], addr, "{row}");
        assert_eq!(row["TaggedAddresses"]["wan_ipv4"], addr, "{row}");
    }
    eventually("DNS names the three servers", CONVERGE, || {
        let got = dns_servers(&c, leader)?;
        (got == ips(&c, &all))
            .then_some(())
            .ok_or(format!("{got:?}"))
    });

    // A follower dies: still listed, critical, out of `?passing` and DNS.
    let victim = all.iter().copied().find(|&i| i != leader).unwrap();
    let rest: Vec<usize> = all.iter().copied().filter(|&i| i != victim).collect();
    c.kill(victim);
    let statuses: Vec<(usize, &str)> = all
        .iter()
        .map(|&i| (i, if i == victim { "critical" } else { "passing" }))
        .collect();
    let failed = want(&c, &statuses);
    eventually("the dead server critical", CONVERGE, || {
        let got = consul_entries(&c, leader, "")?;
        (got == failed).then_some(()).ok_or(format!("{got:?}"))
    });
    let alive: Vec<(usize, &str)> = rest.iter().map(|&i| (i, "passing")).collect();
    assert_eq!(
        consul_entries(&c, leader, "?passing").unwrap(),
        want(&c, &alive)
    );
    eventually("DNS drops the dead server", CONVERGE, || {
        let got = dns_servers(&c, leader)?;
        (got == ips(&c, &rest))
            .then_some(())
            .ok_or(format!("{got:?}"))
    });

    // It comes back: passing again.
    c.start(victim);
    eventually("the server passing again", CONVERGE, || {
        let got = consul_entries(&c, leader, "")?;
        (got == passing).then_some(()).ok_or(format!("{got:?}"))
    });

    // It leaves: its node, service and check are gone.
    let out = c.cli(victim, &["leave"]).expect("pilotfish leave");
    assert!(out.contains("Graceful leave complete"), "{out}");
    c.wait_exit(victim, Duration::from_secs(30));
    eventually("the server that left gone", CONVERGE, || {
        let got = consul_entries(&c, leader, "")?;
        (got == want(&c, &alive))
            .then_some(())
            .ok_or(format!("{got:?}"))
    });
    let node = c
        .get_json(
            leader,
            &format!("/v1/catalog/node/{}", c.nodes[victim].name),
        )
        .unwrap();
    assert_eq!(node, Value::Null);
    eventually("DNS names the two servers", CONVERGE, || {
        let got = dns_servers(&c, leader)?;
        (got == ips(&c, &rest))
            .then_some(())
            .ok_or(format!("{got:?}"))
    });
}
