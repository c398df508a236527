//! Network coordinates on a real three-server cluster on loopback
//! (`127.0.143.x` and `127.0.144.x`): every server's coordinate, computed by Vivaldi from
//! the timed gossip exchanges, reaches the replicated state with a
//! non-zero vector; `PUT /v1/coordinate/update` is validated, queued and
//! batched into the state every server answers alike; `?near=` sorts the
//! catalog and health reads by estimated distance; a deregistered node's
//! coordinate goes with it. The agents sync every 200–400 ms and the
//! servers flush every 300 ms here (Consul's cadence is 15 s and 5 s).

// Only parts of the shared harness are used here.
#[allow(dead_code, unused_imports)]
mod common;

use std::time::Duration;

use common::{eventually, text, Cluster};
use serde_json::{json, Value};

const CONVERGE: Duration = Duration::from_secs(60);

fn cluster(subnet: u8) -> Cluster {
    let mut c = Cluster::new(subnet, 3, 3);
    c.args = [
        "--sync-coordinate-interval-min",
        "200ms",
        "--coordinate-update-period",
        "300ms",
    ]
    .map(String::from)
    .to_vec();
    c.start_all();
    c.agreed_leader(&[0, 1, 2], CONVERGE);
    c
}

/// serf's distance (seconds): `‖a−b‖ + heights`, adjusted when positive.
fn distance(a: &Value, b: &Value) -> f64 {
    let f = |c: &Value, k: &str| c[k].as_f64().expect("a number");
    let va = a["Vec"].as_array().expect("Vec");
    let vb = b["Vec"].as_array().expect("Vec");
    let norm = va
        .iter()
        .zip(vb)
        .map(|(x, y)| (x.as_f64().unwrap_or(0.0) - y.as_f64().unwrap_or(0.0)).powi(2))
        .sum::<f64>()
        .sqrt();
    let raw = norm + f(a, "Height") + f(b, "Height");
    let adjusted = raw + f(a, "Adjustment") + f(b, "Adjustment");
    if adjusted > 0.0 {
        adjusted
    } else {
        raw
    }
}

/// A coordinate `x` seconds from the origin along the first axis.
fn coord_at(x: f64) -> Value {
    json!({"Vec": [x, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0], "Error": 0.2, "Adjustment": 0.0, "Height": 1.0e-5})
}

fn put(c: &Cluster, i: usize, path: &str, body: &Value) -> (u16, String) {
    let (status, _, body) = c
        .request(i, "PUT", path, body.to_string().as_bytes())
        .expect("an answer");
    (status, text(&body))
}

fn names(rows: &Value, key: impl Fn(&Value) -> &Value) -> Vec<String> {
    rows.as_array()
        .expect("an array")
        .iter()
        .map(|r| key(r).as_str().expect("a name").to_string())
        .collect()
}

#[test]
fn coordinates_from_real_rtts_reach_every_server_and_sort_near_queries() {
    let c = cluster(143);

    // 1. Every server's own coordinate, from its RTTs, is in the state of
    //    every server, away from the origin.
    eventually(
        "a non-zero coordinate for s1, s2 and s3 on every server",
        CONVERGE,
        || {
            for i in 0..3 {
                let rows = c.get_json(i, "/v1/coordinate/nodes?stale")?;
                let mut seen = names(&rows, |r| &r["Node"]);
                seen.sort();
                if seen != ["s1", "s2", "s3"] {
                    return Err(format!("{}: nodes {seen:?}", c.nodes[i].name));
                }
                for r in rows.as_array().expect("rows") {
                    let v = r["Coord"]["Vec"].as_array().expect("Vec");
                    if v.len() != 8 || v.iter().all(|x| x.as_f64() == Some(0.0)) {
                        return Err(format!("{}: {r}", c.nodes[i].name));
                    }
                    if r["Segment"] != "" || r["Coord"]["Error"].as_f64() >= Some(1.5) {
                        return Err(format!("not learned yet: {r}"));
                    }
                }
            }
            Ok(())
        },
    );
    // The estimates settle: a gossip exchange on loopback takes a few
    // milliseconds (debug build, a loaded machine), far from the 10 s cap.
    eventually("the servers' coordinates converge", CONVERGE, || {
        let rows = c.get_json(0, "/v1/coordinate/nodes")?;
        let all = rows.as_array().ok_or("rows")?;
        for a in all {
            if a["Coord"]["Error"].as_f64() > Some(0.8) {
                return Err(format!("{a}"));
            }
            for b in all {
                let d = distance(&a["Coord"], &b["Coord"]);
                if !(d > 0.0 && d < 0.2) {
                    return Err(format!("{} → {}: {d}", a["Node"], b["Node"]));
                }
            }
        }
        Ok(())
    });
    let one = c.get_json(1, "/v1/coordinate/node/s2").expect("node s2");
    assert_eq!(names(&one, |r| &r["Node"]), ["s2"]);
    let (status, _, body) = c
        .request(0, "GET", "/v1/coordinate/node/nope", b"")
        .expect("an answer");
    assert_eq!((status, body.len()), (404, 0));

    // The servers' map: one datacenter, every server.
    let dcs = c.get_json(2, "/v1/coordinate/datacenters").expect("dcs");
    assert_eq!(dcs[0]["Datacenter"], "dc1");
    assert_eq!(dcs[0]["AreaID"], "wan");
    assert_eq!(
        names(&dcs[0]["Coordinates"], |r| &r["Node"]),
        ["s1", "s2", "s3"]
    );

    // 2. The update endpoint: validation with Consul's statuses and texts.
    let (status, body) = put(&c, 0, "/v1/coordinate/update", &json!("nope"));
    assert_eq!(status, 400);
    assert!(body.starts_with("Request decode failed: "), "{body}");
    let short =
        json!({"Node": "s1", "Coord": {"Vec": [0.1], "Error": 1, "Adjustment": 0, "Height": 0}});
    assert_eq!(
        put(&c, 1, "/v1/coordinate/update", &short),
        (500, "incompatible coordinate".to_string())
    );

    // External nodes at known places, a source at the origin, and one
    // without a coordinate; each runs a "web" instance.
    for (node, addr) in [
        ("src", "10.9.0.1"),
        ("near", "10.9.0.2"),
        ("mid", "10.9.0.3"),
        ("far", "10.9.0.4"),
        ("nowhere", "10.9.0.5"),
    ] {
        let reg = json!({
            "Node": node, "Address": addr,
            "Service": {"Service": "web", "Port": 80},
            "Check": {"CheckID": "web-alive", "Name": "web", "Status": "passing", "ServiceID": "web"}
        });
        assert_eq!(put(&c, 0, "/v1/catalog/register", &reg).0, 200);
    }
    let places = [("src", 0.0), ("far", 3.0), ("near", 0.4), ("mid", 1.0)];
    for (i, (node, x)) in places.into_iter().enumerate() {
        let upd = json!({"Node": node, "Segment": "", "Coord": coord_at(x)});
        // Queued on any server: 200 with an empty body.
        assert_eq!(
            put(&c, i % 3, "/v1/coordinate/update", &upd),
            (200, String::new())
        );
    }
    // A node the catalog does not know is dropped at apply.
    let ghost = json!({"Node": "ghost", "Coord": coord_at(2.0)});
    assert_eq!(put(&c, 2, "/v1/coordinate/update", &ghost).0, 200);

    eventually(
        "the queued updates applied on every server",
        CONVERGE,
        || {
            for i in 0..3 {
                for (node, x) in places {
                    let got = c.get_json(i, &format!("/v1/coordinate/node/{node}?stale"))?;
                    if got[0]["Coord"] != coord_at(x) {
                        return Err(format!("{}: {node} = {got}", c.nodes[i].name));
                    }
                }
            }
            Ok(())
        },
    );
    let (status, _, body) = c
        .request(1, "GET", "/v1/coordinate/node/ghost", b"")
        .expect("an answer");
    assert_eq!((status, body.len()), (404, 0), "{}", text(&body));

    // 3. ?near= sorts by distance from the source, those without a
    //    coordinate last; servers (within a few ms of the origin) first.
    let nodes = c.get_json(0, "/v1/catalog/nodes?near=src").expect("nodes");
    let order = names(&nodes, |r| &r["Node"]);
    assert_eq!(order[0], "src", "{order:?}");
    assert_eq!(order[4..], ["near", "mid", "far", "nowhere"], "{order:?}");
    let mut servers = order[1..4].to_vec();
    servers.sort();
    assert_eq!(servers, ["s1", "s2", "s3"]);
    // Without ?near: by name.
    let plain = names(&c.get_json(0, "/v1/catalog/nodes").expect("nodes"), |r| {
        &r["Node"]
    });
    assert_eq!(
        plain,
        ["far", "mid", "near", "nowhere", "s1", "s2", "s3", "src"]
    );
    // A source without a coordinate leaves the order alone.
    let unsorted = names(
        &c.get_json(1, "/v1/catalog/nodes?near=nowhere")
            .expect("nodes"),
        |r| &r["Node"],
    );
    assert_eq!(unsorted, plain);

    let web = ["src", "near", "mid", "far", "nowhere"];
    let svc = c
        .get_json(1, "/v1/catalog/service/web?near=src")
        .expect("service");
    assert_eq!(names(&svc, |r| &r["Node"]), web);
    let health = c
        .get_json(2, "/v1/health/service/web?near=far")
        .expect("health");
    assert_eq!(
        names(&health, |r| &r["Node"]["Node"]),
        ["far", "mid", "near", "src", "nowhere"]
    );
    let checks = c
        .get_json(0, "/v1/health/checks/web?near=near")
        .expect("checks");
    assert_eq!(
        names(&checks, |r| &r["Node"]),
        ["near", "src", "mid", "far", "nowhere"]
    );
    let state = c
        .get_json(0, "/v1/health/state/passing?near=mid")
        .expect("state");
    let order = names(&state, |r| &r["Node"]);
    let mut web_rows: Vec<&String> = order.iter().filter(|n| web.contains(&n.as_str())).collect();
    web_rows.dedup();
    assert_eq!(web_rows, ["mid", "near", "src", "far", "nowhere"]);

    // ?near=_agent: this agent's own node, ordered as the coordinates say
    // (read twice around the query so no sync moved them in between).
    eventually("?near=_agent ordered by distance from s2", CONVERGE, || {
        let before = c
            .request(1, "GET", "/v1/coordinate/nodes", b"")
            .map_err(|e| e.to_string())?;
        let nodes = c.get_json(1, "/v1/catalog/nodes?near=_agent")?;
        let after = c
            .request(1, "GET", "/v1/coordinate/nodes", b"")
            .map_err(|e| e.to_string())?;
        if before.2 != after.2 {
            return Err("coordinates moved during the query".into());
        }
        let coords: Value = serde_json::from_slice(&after.2).map_err(|e| e.to_string())?;
        let coord_of = |n: &str| {
            coords
                .as_array()
                .and_then(|rows| rows.iter().find(|r| r["Node"] == n))
                .map(|r| r["Coord"].clone())
        };
        let me = coord_of("s2").ok_or("no coordinate for s2")?;
        let got = names(&nodes, |r| &r["Node"]);
        let dist: Vec<f64> = got
            .iter()
            .map(|n| coord_of(n).map_or(f64::INFINITY, |cd| distance(&me, &cd)))
            .collect();
        if dist.windows(2).all(|w| w[0] <= w[1] + 1e-9)
            && got.last().map(String::as_str) == Some("nowhere")
        {
            Ok(())
        } else {
            Err(format!("{got:?} at {dist:?}"))
        }
    });

    // 4. A deregistered node takes its coordinate with it.
    let dereg = json!({"Node": "mid"});
    assert_eq!(put(&c, 0, "/v1/catalog/deregister", &dereg).0, 200);
    eventually("mid's coordinate gone everywhere", CONVERGE, || {
        for i in 0..3 {
            match c.request(i, "GET", "/v1/coordinate/node/mid?stale", b"") {
                Ok((404, _, _)) => {}
                other => return Err(format!("{}: {other:?}", c.nodes[i].name)),
            }
        }
        Ok(())
    });
}

#[test]
fn coordinate_node_reads_block_until_a_batch_lands() {
    let c = cluster(144);
    eventually("s1 has a coordinate", CONVERGE, || {
        c.get_json(0, "/v1/coordinate/node/s1").map(|_| ())
    });
    let (_, headers, _) = c
        .request(0, "GET", "/v1/coordinate/nodes", b"")
        .expect("an answer");
    let index = common::agent::consul_index(&headers);
    let started = std::time::Instant::now();
    let (status, headers, _) = c
        .request(
            0,
            "GET",
            &format!("/v1/coordinate/nodes?index={index}&wait=30s"),
            b"",
        )
        .expect("an answer");
    assert_eq!(status, 200);
    assert!(common::agent::consul_index(&headers) > index);
    // Woken by the next batch (every 300 ms here), not by the 30 s wait.
    assert!(started.elapsed() < Duration::from_secs(20));
}
