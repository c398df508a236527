//! The agent, catalog and health endpoints and the check runner, served
//! in-process on a loopback port, driven with the exact bodies real clients
//! send (ContainerPilot, Registrator, python-consul).
#![allow(clippy::unwrap_used)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use pilotfish::discovery::server::{checks, http, Server, ServerConfig};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

struct Agent {
    base: String,
    server: Server,
    client: reqwest::Client,
    shutdown: CancellationToken,
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

struct Reply {
    status: u16,
    index: Option<u64>,
    text: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("{e}: {}", self.text))
    }
}

async fn start(enable_script_checks: bool) -> Agent {
    let server = Server::open(ServerConfig {
        node: "n1".into(),
        datacenter: "dc1".into(),
        domain: "consul.".into(),
        advertise: IpAddr::V4(Ipv4Addr::LOCALHOST),
        data_dir: None,
        enable_script_checks,
        recursors: vec![],
        snapshot_threshold: pilotfish::discovery::server::raft::compaction::SNAPSHOT_THRESHOLD,
    })
    .await
    .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let shutdown = CancellationToken::new();
    tokio::spawn(http::serve(listener, server.clone(), shutdown.clone()));
    tokio::spawn(checks::run(server.clone(), shutdown.clone()));
    Agent {
        base,
        server,
        client: reqwest::Client::builder().no_proxy().build().unwrap(),
        shutdown,
    }
}

impl Agent {
    async fn call(&self, method: reqwest::Method, path: &str, body: Option<&str>) -> Reply {
        let mut req = self.client.request(method, format!("{}{path}", self.base));
        if let Some(b) = body {
            req = req.body(b.to_string());
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let index = resp
            .headers()
            .get("x-consul-index")
            .map(|v| v.to_str().unwrap().parse().unwrap());
        Reply {
            status,
            index,
            text: resp.text().await.unwrap(),
        }
    }

    async fn get(&self, path: &str) -> Reply {
        self.call(reqwest::Method::GET, path, None).await
    }

    async fn put(&self, path: &str, body: &str) -> Reply {
        self.call(reqwest::Method::PUT, path, Some(body)).await
    }

    async fn put_ok(&self, path: &str, body: &str) {
        let r = self.put(path, body).await;
        assert_eq!(r.status, 200, "PUT {path}: {}", r.text);
    }

    /// The status of one of this agent's checks, if registered.
    async fn check_status(&self, id: &str) -> Option<String> {
        let checks = self.get("/v1/agent/checks").await.json();
        checks[id]["Status"].as_str().map(String::from)
    }

    /// Poll until the check has `status` (10 s at most).
    async fn wait_status(&self, id: &str, status: &str) -> Value {
        let start = Instant::now();
        loop {
            let checks = self.get("/v1/agent/checks").await.json();
            if checks[id]["Status"] == status {
                return checks[id].clone();
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "check {id} never became {status}: {}",
                checks[id]
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Poll until at least `n` blocking queries are parked on the server (10 s at most).
    async fn wait_parked(&self, n: usize) {
        let start = Instant::now();
        while self.server.parked_queries() < n {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "{} blocking queries parked, not {n}",
                self.server.parked_queries()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn passing(&self, service: &str) -> Vec<Value> {
        let r = self
            .get(&format!("/v1/health/service/{service}?passing=1"))
            .await;
        assert_eq!(r.status, 200);
        assert!(r.index.unwrap() > 0);
        r.json().as_array().unwrap().clone()
    }
}

#[tokio::test]
async fn ttl_check_is_critical_until_passed_and_expires() {
    let a = start(false).await;
    a.put_ok(
        "/v1/agent/service/register",
        r#"{"Name":"web","ID":"web-1","Port":80,"Check":{"TTL":"1s"}}"#,
    )
    .await;
    assert_eq!(
        a.check_status("service:web-1").await.as_deref(),
        Some("critical")
    );
    assert!(a.passing("web").await.is_empty());
    let all = a.get("/v1/health/service/web").await.json();
    assert_eq!(all.as_array().unwrap().len(), 1);

    a.put_ok("/v1/agent/check/pass/service:web-1?note=fine", "")
        .await;
    let check = a.get("/v1/agent/checks").await.json()["service:web-1"].clone();
    assert_eq!(check["Status"], "passing");
    assert_eq!(check["Output"], "fine");
    let entries = a.passing("web").await;
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0]["Service"]["ID"], "web-1");

    // Not refreshed within the TTL: critical again.
    let check = a.wait_status("service:web-1", "critical").await;
    assert_eq!(check["Output"], "TTL expired");
    assert!(a.passing("web").await.is_empty());

    // warn and fail are TTL updates too; GET works (python-consul 0.7).
    let r = a.get("/v1/agent/check/warn/service:web-1").await;
    assert_eq!(r.status, 200);
    assert_eq!(
        a.check_status("service:web-1").await.as_deref(),
        Some("warning")
    );
    assert!(a.passing("web").await.is_empty(), "warning is not passing");
}

#[tokio::test]
async fn containerpilot_register_and_heartbeat() {
    let a = start(false).await;
    // ContainerPilot 3.x through Go api 1.0: `Checks` is always null.
    a.put_ok(
        "/v1/agent/service/register",
        r#"{"ID":"app-host1","Name":"app","Tags":["blue"],"Port":8000,"Address":"10.0.0.5","EnableTagOverride":false,"Check":{"TTL":"10s","Notes":"TTL for app set by containerpilot","DeregisterCriticalServiceAfter":"10m"},"Checks":null}"#,
    )
    .await;
    a.put_ok(
        "/v1/agent/check/update/service:app-host1",
        r#"{"Status":"passing","Output":"ok"}"#,
    )
    .await;
    let entries = a.passing("app").await;
    assert_eq!(entries.len(), 1);
    let e = &entries[0];
    assert_eq!(e["Service"]["ID"], "app-host1");
    assert_eq!(e["Service"]["Address"], "10.0.0.5");
    assert_eq!(e["Service"]["Port"], 8000);
    assert_eq!(e["Service"]["Tags"], json!(["blue"]));
    assert_eq!(e["Node"]["Node"], "n1");
    assert_eq!(e["Node"]["Datacenter"], "dc1");
    let checks = e["Checks"].as_array().unwrap();
    assert_eq!(checks[0]["CheckID"], "serfHealth");
    let c = &checks[1];
    assert_eq!(c["CheckID"], "service:app-host1");
    assert_eq!(c["Name"], "Service 'app' check");
    assert_eq!(c["Output"], "ok");
    assert_eq!(c["Notes"], "TTL for app set by containerpilot");
    assert_eq!(c["Type"], "ttl");
    assert_eq!(c["ServiceName"], "app");
    assert_eq!(c["ServiceTags"], json!(["blue"]));
    assert_eq!(c["Definition"]["TTL"], "10s");
    assert_eq!(c["Definition"]["DeregisterCriticalServiceAfter"], "10m0s");
    assert!(c["ModifyIndex"].as_u64().unwrap() > 0);

    // A bad status and an unknown check are refused.
    let r = a
        .put(
            "/v1/agent/check/update/service:app-host1",
            r#"{"Status":"bogus"}"#,
        )
        .await;
    assert_eq!(
        (r.status, r.text.as_str()),
        (400, "Invalid check status: 'bogus'")
    );
    let r = a
        .put(
            "/v1/agent/check/update/service:nope",
            r#"{"Status":"passing"}"#,
        )
        .await;
    assert_eq!(r.status, 404);

    // Stop: deregistration.
    a.put_ok("/v1/agent/service/deregister/app-host1", "").await;
    assert!(a.get("/v1/health/service/app").await.json() == json!([]));
    assert_eq!(a.check_status("service:app-host1").await, None);
}

#[tokio::test]
async fn registrator_body_with_meta_and_percent_encoded_ids() {
    let a = start(false).await;
    a.put_ok(
        "/v1/agent/service/register",
        r#"{"ID":"host1:redis-1:6379","Name":"redis","Tags":["cache"],"Port":32768,"Address":"10.0.0.7","Meta":{"check_http":"/health","Env":"prod"},"Check":null,"Checks":null}"#,
    )
    .await;
    let services = a.get("/v1/agent/services").await;
    assert_eq!(services.index, None, "agent endpoints send no index");
    let s = &services.json()["host1:redis-1:6379"];
    assert_eq!(s["Service"], "redis");
    assert_eq!(s["Meta"], json!({"check_http": "/health", "Env": "prod"}));
    assert_eq!(s["Port"], 32768);
    assert_eq!(s["Weights"], json!({"Passing": 1, "Warning": 1}));
    let one = a.get("/v1/agent/service/host1%3Aredis-1%3A6379").await;
    assert_eq!(one.json()["ID"], "host1:redis-1:6379");

    // Registrator deregisters with PUT; python-consul 0.7 with GET and `:` raw.
    a.put_ok("/v1/agent/service/deregister/host1%3Aredis-1%3A6379", "")
        .await;
    assert_eq!(a.get("/v1/agent/services").await.json(), json!({}));

    // Patroni: `scope/name` arrives as `scope%2Fname`; lowercase keys.
    a.put_ok(
        "/v1/agent/service/register",
        r#"{"name":"pg","id":"batman/node1","address":"10.0.0.8","port":5432,"tags":["master"],"enabletagoverride":true}"#,
    )
    .await;
    let s = a.get("/v1/agent/services").await.json();
    assert_eq!(s["batman/node1"]["EnableTagOverride"], true);
    let r = a.get("/v1/agent/service/deregister/batman%2Fnode1").await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(a.get("/v1/agent/services").await.json(), json!({}));

    // Missing name; wrong method.
    let r = a.put("/v1/agent/service/register", r#"{"Port":1}"#).await;
    assert_eq!((r.status, r.text.as_str()), (400, "Missing service name"));
    let r = a.get("/v1/agent/service/register").await;
    assert_eq!((r.status, r.text.as_str()), (405, "method GET not allowed"));
}

/// A one-route HTTP server answering every request with `status`.
async fn tiny_http(status: u16) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = sock.read(&mut buf).await;
                let reply = format!(
                    "HTTP/1.1 {status} X\r\nContent-Length: 7\r\nConnection: close\r\n\r\nhealthy"
                );
                let _ = sock.write_all(reply.as_bytes()).await;
            });
        }
    });
    (addr, task)
}

#[tokio::test]
async fn http_check_passes_then_fails_when_the_target_stops() {
    let a = start(false).await;
    let (addr, server) = tiny_http(200).await;
    // python-consul 0.7 builds lowercase check bodies.
    a.put_ok(
        "/v1/agent/service/register",
        &format!(
            r#"{{"name":"api","id":"api-1","port":{},"check":{{"http":"http://{addr}/health","interval":"1s","timeout":"1s"}}}}"#,
            addr.port()
        ),
    )
    .await;
    let c = a.wait_status("service:api-1", "passing").await;
    assert_eq!(
        c["Output"],
        format!("HTTP GET http://{addr}/health: 200 OK Output: healthy")
    );
    assert_eq!(c["Type"], "http");
    assert_eq!(a.passing("api").await.len(), 1);

    server.abort();
    let _ = server.await;
    let c = a.wait_status("service:api-1", "critical").await;
    assert!(c["Output"].as_str().unwrap().contains("GET http://"));
    assert!(a.passing("api").await.is_empty());
}

#[tokio::test]
async fn http_429_is_warning() {
    let a = start(false).await;
    let (addr, _server) = tiny_http(429).await;
    a.put_ok(
        "/v1/agent/check/register",
        &format!(r#"{{"Name":"busy","HTTP":"http://{addr}/","Interval":"1s"}}"#),
    )
    .await;
    a.wait_status("busy", "warning").await;
}

#[tokio::test]
async fn tcp_check_follows_the_listener() {
    let a = start(false).await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    a.put_ok(
        "/v1/agent/service/register",
        &format!(
            r#"{{"Name":"db","Port":{},"Checks":[{{"TCP":"{addr}","Interval":"1s"}},{{"TTL":"30s","Status":"passing"}}]}}"#,
            addr.port()
        ),
    )
    .await;
    // Several checks: implicit IDs are numbered.
    let c = a.wait_status("service:db:1", "passing").await;
    assert_eq!(c["Output"], format!("TCP connect {addr}: Success"));
    assert_eq!(
        a.check_status("service:db:2").await.as_deref(),
        Some("passing"),
        "initial status as given"
    );
    drop(listener);
    let c = a.wait_status("service:db:1", "critical").await;
    assert!(c["Output"].as_str().unwrap().starts_with("dial tcp"));
}

#[tokio::test]
async fn script_checks_need_the_flag() {
    let a = start(false).await;
    let r = a
        .put(
            "/v1/agent/service/register",
            r#"{"Name":"s","Check":{"Args":["/bin/sh","-c","exit 0"],"Interval":"1s"}}"#,
        )
        .await;
    assert_eq!(r.status, 500);
    assert!(
        r.text.starts_with("Scripts are disabled on this agent"),
        "{}",
        r.text
    );
    assert_eq!(a.get("/v1/agent/services").await.json(), json!({}));
    let r = a
        .put(
            "/v1/agent/check/register",
            r#"{"Name":"legacy","Script":"exit 0","Interval":"1s"}"#,
        )
        .await;
    assert_eq!(r.status, 500);

    let a = start(true).await;
    a.put_ok(
        "/v1/agent/service/register",
        r#"{"Name":"s","Check":{"ScriptArgs":["/bin/sh","-c","echo degraded; exit 1"],"Interval":"1s"}}"#,
    )
    .await;
    let c = a.wait_status("service:s", "warning").await;
    assert_eq!(c["Output"], "degraded\n");
    assert_eq!(c["Type"], "script");
    a.put_ok(
        "/v1/agent/check/register",
        r#"{"Name":"legacy","Script":"exit 0","Interval":"1s"}"#,
    )
    .await;
    a.wait_status("legacy", "passing").await;
    a.put_ok(
        "/v1/agent/check/register",
        r#"{"Name":"broken","Args":["/bin/sh","-c","exit 2"],"Interval":"1s"}"#,
    )
    .await;
    a.wait_status("broken", "critical").await;
}

#[tokio::test]
async fn blocking_health_query_wakes_only_for_its_service() {
    let a = start(false).await;
    for name in ["x", "y"] {
        a.put_ok(
            "/v1/agent/service/register",
            &format!(r#"{{"Name":"{name}","Tags":["v1"]}}"#),
        )
        .await;
    }
    let first = a.get("/v1/health/service/x").await;
    let index = first.index.unwrap();
    let base = a.base.clone();
    let client = a.client.clone();
    let started = Instant::now();
    let watch = tokio::spawn(async move {
        let r = client
            .get(format!("{base}/v1/health/service/x?index={index}&wait=5s"))
            .send()
            .await
            .unwrap();
        let idx: u64 = r.headers()["x-consul-index"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        (idx, r.json::<Value>().await.unwrap())
    });
    // Parked: the watcher and the check runner's own query on the catalog.
    a.wait_parked(2).await;
    // A change to y must not answer the watcher of x...
    a.put_ok(
        "/v1/agent/service/register",
        r#"{"Name":"y","Tags":["v2"]}"#,
    )
    .await;
    // A period in which nothing may happen: no poll can show an absence.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!watch.is_finished(), "woke on a change to another service");
    // ...a change to x does.
    a.put_ok(
        "/v1/agent/service/register",
        r#"{"Name":"x","Tags":["v2"]}"#,
    )
    .await;
    let (idx, body) = watch.await.unwrap();
    assert!(idx > index);
    assert_eq!(body[0]["Service"]["Tags"], json!(["v2"]));
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn maintenance_mode_adds_and_removes_a_critical_check() {
    let a = start(false).await;
    a.put_ok(
        "/v1/agent/service/register",
        r#"{"Name":"web","ID":"web-1","Check":{"TTL":"30s","Status":"passing"}}"#,
    )
    .await;
    assert_eq!(a.passing("web").await.len(), 1);

    let r = a.put("/v1/agent/service/maintenance/web-1", "").await;
    assert_eq!(
        (r.status, r.text.as_str()),
        (400, "Missing value for enable")
    );
    let r = a
        .put("/v1/agent/service/maintenance/web-1?enable=yes", "")
        .await;
    assert_eq!(
        (r.status, r.text.as_str()),
        (400, "Invalid value for enable: \"yes\"")
    );
    let r = a
        .put("/v1/agent/service/maintenance/nope?enable=true", "")
        .await;
    assert_eq!(r.status, 404);

    // py-consul sends enable=True.
    a.put_ok("/v1/agent/service/maintenance/web-1?enable=True", "")
        .await;
    let checks = a.get("/v1/agent/checks").await.json();
    let m = &checks["_service_maintenance:web-1"];
    assert_eq!(m["Status"], "critical");
    assert_eq!(m["Name"], "Service Maintenance Mode");
    assert_eq!(m["ServiceID"], "web-1");
    assert_eq!(
        m["Notes"],
        "Maintenance mode is enabled for this service, but no reason was provided. This is a default message."
    );
    assert!(a.passing("web").await.is_empty());
    a.put_ok("/v1/agent/service/maintenance/web-1?enable=false", "")
        .await;
    assert_eq!(a.check_status("_service_maintenance:web-1").await, None);
    assert_eq!(a.passing("web").await.len(), 1);

    a.put_ok("/v1/agent/maintenance?enable=true&reason=upgrade", "")
        .await;
    let checks = a.get("/v1/agent/checks").await.json();
    assert_eq!(checks["_node_maintenance"]["Notes"], "upgrade");
    assert_eq!(checks["_node_maintenance"]["ServiceID"], "");
    assert!(a.passing("web").await.is_empty(), "node checks count");
    a.put_ok("/v1/agent/maintenance?enable=0", "").await;
    assert_eq!(a.passing("web").await.len(), 1);
}

#[tokio::test]
async fn agent_self_members_and_join() {
    let a = start(false).await;
    let me = a.get("/v1/agent/self").await.json();
    assert_eq!(me["Config"]["NodeName"], "n1");
    assert_eq!(me["Config"]["Datacenter"], "dc1");
    assert!(me.as_object().unwrap().values().all(|v| v.is_object()));
    for section in me["Stats"].as_object().unwrap().values() {
        assert!(section.as_object().unwrap().values().all(|v| v.is_string()));
    }
    let members = a.get("/v1/agent/members").await.json();
    assert_eq!(members[0]["Name"], "n1");
    assert_eq!(members[0]["Status"], 1);
    // The cluster protocol's port (serf's own 8301 does not exist here).
    assert_eq!(members[0]["Port"], 8300);
    assert_eq!(members[0]["Tags"]["role"], "consul");

    assert_eq!(a.get("/v1/agent/join/127.0.0.1").await.status, 200);
    assert_eq!(a.put("/v1/agent/join/127.0.0.1:8300", "").await.status, 200);
    let r = a.put("/v1/agent/join/no-such-host.invalid", "").await;
    assert_eq!(r.status, 500);
    assert!(r.text.starts_with("1 error occurred:"), "{}", r.text);
    assert_eq!(a.get("/v1/agent/force-leave/n2").await.status, 200);
    assert_eq!(a.put("/v1/agent/leave", "").await.status, 200);
}

#[tokio::test]
async fn catalog_reads_and_writes() {
    let a = start(false).await;
    // python-consul catalog.register: lowercase keys.
    let r = a
        .put(
            "/v1/catalog/register",
            r#"{"node":"ext1","address":"10.1.0.1","service":{"service":"search","id":"s1","port":9200,"tags":["Primary","v7"]},"check":{"name":"search alive","serviceid":"s1","status":"passing"}}"#,
        )
        .await;
    assert_eq!((r.status, r.text.as_str()), (200, "true"));

    let services = a.get("/v1/catalog/services").await;
    assert!(services.index.unwrap() > 1);
    assert_eq!(services.json()["search"], json!(["Primary", "v7"]));

    let rows = a.get("/v1/catalog/service/search?tag=primary&tag=v7").await;
    let row = &rows.json()[0];
    assert_eq!(row["Node"], "ext1");
    assert_eq!(row["ServiceID"], "s1");
    assert_eq!(row["ServiceAddress"], "");
    assert_eq!(row["ServicePort"], 9200);
    assert_eq!(row["ServiceEnableTagOverride"], false);
    assert!(row["ModifyIndex"].as_u64().unwrap() > 0);
    let none = a.get("/v1/catalog/service/search?tag=replica").await;
    assert_eq!(none.json(), json!([]));
    assert!(none.index.unwrap() > 0);

    let nodes = a.get("/v1/catalog/nodes").await.json();
    let names: Vec<&str> = nodes
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["Node"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["ext1", "n1"]);
    let node = a.get("/v1/catalog/node/ext1").await.json();
    assert_eq!(node["Services"]["s1"]["Service"], "search");
    let unknown = a.get("/v1/catalog/node/ghost").await;
    assert_eq!((unknown.status, unknown.text.as_str()), (200, "null"));
    assert!(unknown.index.unwrap() > 0);
    // The list form the Go client's NodeServiceList reads, filterable.
    let list = a.get("/v1/catalog/node-services/ext1").await;
    assert!(list.index.unwrap() > 0);
    let list = list.json();
    assert_eq!(list["Node"]["Node"], "ext1");
    assert_eq!(list["Node"]["Address"], "10.1.0.1");
    assert_eq!(list["Services"][0]["ID"], "s1");
    assert_eq!(list["Services"][0]["Port"], 9200);
    assert_eq!(list["Services"][0]["Tags"], json!(["Primary", "v7"]));
    assert_eq!(list["Services"].as_array().unwrap().len(), 1);
    let filtered = a
        .get("/v1/catalog/node-services/ext1?filter=Port%20%3D%3D%201")
        .await
        .json();
    assert_eq!(filtered["Services"], json!([]));
    let unknown = a.get("/v1/catalog/node-services/ghost").await;
    assert_eq!(unknown.status, 200);
    assert_eq!(unknown.json(), json!({"Node": null, "Services": []}));
    let r = a.get("/v1/catalog/node-services/").await;
    assert_eq!((r.status, r.text.as_str()), (400, "Missing node name"));
    assert_eq!(
        a.get("/v1/catalog/datacenters").await.json(),
        json!(["dc1"])
    );
    let r = a.get("/v1/catalog/services?dc=elsewhere").await;
    assert_eq!((r.status, r.text.as_str()), (500, "No path to datacenter"));
    assert_eq!(a.get("/v1/catalog/services?dc=DC1").await.status, 200);
    let r = a.get("/v1/catalog/services?stale&consistent").await;
    assert_eq!(r.status, 400);

    // Health views of the same data.
    let checks = a.get("/v1/health/checks/search").await.json();
    assert_eq!(checks[0]["CheckID"], "search alive");
    assert_eq!(checks[0]["ServiceTags"], json!(["Primary", "v7"]));
    let node_checks = a.get("/v1/health/node/ext1").await.json();
    assert_eq!(node_checks.as_array().unwrap().len(), 2);
    let critical = a.get("/v1/health/state/critical").await.json();
    assert_eq!(critical, json!([]));
    let any = a.get("/v1/health/state/any").await.json();
    assert_eq!(any.as_array().unwrap().len(), 3, "two serfHealth + one");
    assert_eq!(a.get("/v1/health/state/bogus").await.status, 400);
    let r = a.get("/v1/health/service/search?passing=maybe").await;
    assert_eq!(r.status, 400);
    assert_eq!(
        a.passing("SEARCH").await.len(),
        1,
        "names are case-insensitive"
    );

    let r = a
        .put(
            "/v1/catalog/deregister",
            r#"{"Node":"ext1","ServiceID":"s1"}"#,
        )
        .await;
    assert_eq!((r.status, r.text.as_str()), (200, "true"));
    assert_eq!(a.get("/v1/catalog/service/search").await.json(), json!([]));
}

#[tokio::test]
async fn check_register_and_deregister() {
    let a = start(false).await;
    let r = a
        .put(
            "/v1/agent/check/register",
            r#"{"Name":"mem","ServiceID":"ghost","TTL":"10s"}"#,
        )
        .await;
    assert_eq!(
        (r.status, r.text.as_str()),
        (500, "ServiceID \"ghost\" does not exist")
    );
    let r = a.put("/v1/agent/check/register", r#"{"TTL":"10s"}"#).await;
    assert_eq!((r.status, r.text.as_str()), (400, "Missing check name"));
    let r = a
        .put(
            "/v1/agent/check/register",
            r#"{"Name":"x","HTTP":"http://a/"}"#,
        )
        .await;
    assert_eq!(
        (r.status, r.text.as_str()),
        (
            400,
            "Invalid check: Interval must be > 0 for Script, HTTP, or TCP checks"
        )
    );
    // python-consul: lowercase, `ttl` as a Go string, explicit id.
    a.put_ok(
        "/v1/agent/check/register",
        r#"{"name":"mem","id":"mem/usage:1","ttl":"10s","notes":"memory"}"#,
    )
    .await;
    a.put_ok("/v1/agent/check/pass/mem%2Fusage%3A1", "").await;
    assert_eq!(
        a.check_status("mem/usage:1").await.as_deref(),
        Some("passing")
    );
    // A node check: it shows on every service's entries.
    let r = a.get("/v1/agent/check/deregister/mem%2Fusage%3A1").await;
    assert_eq!(r.status, 200);
    assert_eq!(a.check_status("mem/usage:1").await, None);
}

#[tokio::test(start_paused = true)]
async fn deregister_critical_service_after_removes_the_service() {
    let a = start(false).await;
    a.put_ok(
        "/v1/agent/service/register",
        r#"{"Name":"job","ID":"job-1","Check":{"TTL":"10s","Status":"passing","DeregisterCriticalServiceAfter":"1m"}}"#,
    )
    .await;
    // The clock is paused: each poll's sleep advances it, and the deadlines
    // and bounds below are exact virtual times, not speed expectations.
    let registered = Instant::now();
    while a.check_status("service:job-1").await.as_deref() != Some("critical") {
        assert!(
            registered.elapsed() < Duration::from_secs(30),
            "TTL expired after 10 s"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(a.get("/v1/agent/services").await.json()["job-1"].is_object());
    loop {
        let services = a.get("/v1/agent/services").await.json();
        if services == json!({}) {
            break;
        }
        assert!(
            registered.elapsed() < Duration::from_secs(75),
            "still registered 75 s after the TTL check was registered: {services}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(
        registered.elapsed() > Duration::from_secs(30),
        "deregistered {:?} after registering: it was critical for less than 1m",
        registered.elapsed()
    );
    assert_eq!(a.get("/v1/catalog/service/job").await.json(), json!([]));
}

/// The keys of a JSON object, sorted.
fn keys(v: &Value) -> Vec<&str> {
    let mut k: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    k.sort_unstable();
    k
}

#[tokio::test]
async fn service_fields_render_per_endpoint_as_consul_does() {
    let a = start(false).await;
    // A plain service: what each endpoint shows of the fields it left out.
    a.put_ok(
        "/v1/agent/service/register",
        r#"{"Name":"plain","Check":null,"Checks":null}"#,
    )
    .await;
    let agent = a.get("/v1/agent/service/plain").await.json();
    assert_eq!(
        keys(&agent),
        [
            "Address",
            "Datacenter",
            "EnableTagOverride",
            "ID",
            "Meta",
            "Port",
            "Service",
            "Tags",
            "Weights"
        ],
        "{agent}"
    );
    assert_eq!(agent["Weights"], json!({"Passing": 1, "Warning": 1}));
    let row = &a.get("/v1/catalog/service/plain").await.json()[0];
    assert_eq!(row["ServiceKind"], "");
    assert_eq!(row["ServiceSocketPath"], "");
    assert_eq!(row["ServiceTaggedAddresses"], json!({}));
    assert_eq!(row["ServiceLocality"], Value::Null);
    assert_eq!(
        row["ServiceProxy"],
        json!({"Mode": "", "MeshGateway": {}, "Expose": {}})
    );
    assert_eq!(row["ServiceConnect"], json!({}));
    assert_eq!(row["ServiceWeights"], json!({"Passing": 1, "Warning": 1}));
    let health = &a.get("/v1/health/service/plain").await.json()[0]["Service"];
    assert_eq!(
        keys(health),
        [
            "Address",
            "Connect",
            "CreateIndex",
            "EnableTagOverride",
            "ID",
            "Meta",
            "ModifyIndex",
            "PeerName",
            "Proxy",
            "Service",
            "Tags",
            "Weights"
        ],
        "{health}"
    );
    assert_eq!(
        health["Proxy"],
        json!({"Mode": "", "MeshGateway": {}, "Expose": {}})
    );
    assert_eq!(
        (&health["Connect"], &health["PeerName"]),
        (&json!({}), &json!(""))
    );
    let node = a.get("/v1/catalog/node/n1").await.json();
    assert_eq!(
        node["Services"]["plain"], *health,
        "catalog/node shows NodeService"
    );
    // `Port` is `omitempty` there, and only there.
    assert_eq!(agent["Port"], 0);
    assert_eq!(row["ServicePort"], 0);

    // Every field set, through the agent (python-consul's lower-case keys):
    // kept as given, the agent's own tagged addresses added for an IPv6
    // service address.
    let gw = r#"{"name":"gw","id":"gw-1","kind":"mesh-gateway","address":"2001:db8::5","port":8443,
            "socket_path":"/run/gw.sock","tagged_addresses":{"wan":{"address":"198.51.100.1","port":443}},
            "weights":{"passing":3,"warning":2},"locality":{"region":"eu","zone":"eu-1"},
            "proxy":{"mode":"transparent","mesh_gateway":{"mode":"local"},
                     "expose":{"checks":true,"paths":[{"path":"/health","listener_port":21500,"local_path_port":8080}]}}}"#;
    a.put_ok("/v1/agent/service/register", gw).await;
    let agent = a.get("/v1/agent/service/gw-1").await.json();
    assert_eq!(agent["Kind"], "mesh-gateway");
    assert_eq!(agent["SocketPath"], "/run/gw.sock");
    assert_eq!(agent["Weights"], json!({"Passing": 3, "Warning": 2}));
    assert_eq!(agent["Locality"], json!({"Region": "eu", "Zone": "eu-1"}));
    assert_eq!(
        agent["TaggedAddresses"],
        json!({
            "wan": {"Address": "198.51.100.1", "Port": 443},
            "lan_ipv6": {"Address": "2001:db8::5", "Port": 8443},
            "wan_ipv6": {"Address": "2001:db8::5", "Port": 8443},
        })
    );
    let proxy = json!({
        "Mode": "transparent", "MeshGateway": {"Mode": "local"},
        "Expose": {"Checks": true, "Paths": [{"ListenerPort": 21500, "Path": "/health", "LocalPathPort": 8080}]},
    });
    assert_eq!(agent["Proxy"], proxy, "a gateway shows its proxy");
    let row = &a.get("/v1/catalog/service/gw").await.json()[0];
    assert_eq!(row["ServiceKind"], "mesh-gateway");
    assert_eq!(row["ServiceSocketPath"], "/run/gw.sock");
    assert_eq!(row["ServiceProxy"], proxy);
    assert_eq!(row["ServiceTaggedAddresses"], agent["TaggedAddresses"]);
    assert_eq!(row["ServiceLocality"], agent["Locality"]);
    let health = &a.get("/v1/health/service/gw").await.json()[0]["Service"];
    assert_eq!(health["Kind"], "mesh-gateway");
    assert_eq!(health["Proxy"], proxy);
    assert_eq!(health["TaggedAddresses"], agent["TaggedAddresses"]);

    // Re-registering the same definition changes nothing (no index bump).
    let before = a.get("/v1/catalog/service/gw").await.index.unwrap();
    a.put_ok("/v1/agent/service/register", gw).await;
    assert_eq!(a.get("/v1/agent/service/gw-1").await.json(), agent);
    assert_eq!(a.get("/v1/catalog/service/gw").await.index.unwrap(), before);
}

#[tokio::test]
async fn the_server_is_the_consul_service_with_tagged_addresses() {
    let a = start(false).await;
    let services = a.get("/v1/catalog/services").await.json();
    assert_eq!(services, json!({"consul": []}));
    let rows = a.get("/v1/catalog/service/consul").await.json();
    assert_eq!(rows.as_array().unwrap().len(), 1, "{rows}");
    let row = &rows[0];
    assert_eq!(
        (&row["Node"], &row["ServiceID"], &row["ServicePort"]),
        (&json!("n1"), &json!("consul"), &json!(8300))
    );
    assert_eq!(row["ServiceAddress"], "");
    assert_eq!(row["ServiceMeta"]["version"], "1.0.0");
    assert_eq!(
        row["TaggedAddresses"],
        json!({"lan": "127.0.0.1", "lan_ipv4": "127.0.0.1", "wan": "127.0.0.1", "wan_ipv4": "127.0.0.1"})
    );
    let entries = a.passing("consul").await;
    assert_eq!(entries.len(), 1);
    let checks: Vec<&Value> = entries[0]["Checks"].as_array().unwrap().iter().collect();
    assert_eq!(checks.len(), 1);
    assert_eq!(checks[0]["CheckID"], "serfHealth");
    // The agent's own maps leave it out, as Consul's do.
    assert_eq!(a.get("/v1/agent/services").await.json(), json!({}));
    assert_eq!(a.get("/v1/agent/service/consul").await.status, 404);
    let me = a.get("/v1/agent/self").await.json();
    assert_eq!(me["Stats"]["agent"]["services"], "0");
    // Agent registrations keep the node's tagged addresses.
    a.put_ok("/v1/agent/service/register", r#"{"Name":"web","Port":80}"#)
        .await;
    let node = a.get("/v1/catalog/node/n1").await.json();
    assert_eq!(node["Node"]["TaggedAddresses"]["wan_ipv4"], "127.0.0.1");
    assert_eq!(keys(&node["Services"]), ["consul", "web"]);
}
