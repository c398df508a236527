//! Request bodies replayed byte for byte as HashiCorp's Go client
//! (`github.com/hashicorp/consul/api`) marshals them — `json.Encoder`'s
//! trailing newline and `\u0026` escapes, the field order of the Go
//! structs, `omitempty` dropping empty fields and every field without it
//! sent as `null` when nil (consul-breadth.md §1) — against the real binary
//! (`pilotfish agent --dev`), each checked by its effect: what the agent,
//! the catalog, KV and the sessions hold afterwards, not only the status.

#![allow(clippy::unwrap_used)]

// Only parts of the cluster harness are used here.
#[allow(dead_code, unused_imports)]
mod common;

use common::agent::Agent;
use reqwest::Method;
use serde_json::{json, Value};

/// A `--dev` agent (node `n1`) and a client that sends what the Go client
/// sends: `Content-Type: application/json` on every call (newer api
/// versions do so even without a body), `application/octet-stream` for KV
/// values.
struct GoClient {
    _agent: Agent,
    base: String,
    http: reqwest::Client,
}

struct Reply {
    status: u16,
    text: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("{e}: {}", self.text))
    }
}

impl GoClient {
    fn start() -> GoClient {
        let agent = Agent::dev()
            .args(["--node", "n1", "--log-level", "warn"])
            .start();
        GoClient {
            base: agent.url(""),
            _agent: agent,
            http: {
                pilotfish::discovery::server::tls::install_default_provider();
                reqwest::Client::new()
            },
        }
    }

    async fn send(&self, method: Method, path: &str, content_type: &str, body: &[u8]) -> Reply {
        let req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header("Content-Type", content_type)
            .header("User-Agent", "Go-http-client/1.1");
        let req = if body.is_empty() {
            req
        } else {
            req.body(body.to_vec())
        };
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        Reply { status, text }
    }

    /// A JSON body, `PUT`, answered 200.
    async fn put(&self, path: &str, body: &str) -> Reply {
        let r = self
            .send(
                Method::PUT,
                path,
                "application/json; charset=utf-8",
                body.as_bytes(),
            )
            .await;
        assert_eq!(r.status, 200, "PUT {path} {body}: {}", r.text);
        r
    }

    async fn get(&self, path: &str) -> Value {
        let r = self
            .send(Method::GET, path, "application/json; charset=utf-8", b"")
            .await;
        assert_eq!(r.status, 200, "GET {path}: {}", r.text);
        r.json()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_service_registrations_as_the_go_client_marshals_them() {
    let go = GoClient::start();

    // `Agent().ServiceRegister(&AgentServiceRegistration{Name:"web",Port:8080})`.
    go.put(
        "/v1/agent/service/register",
        "{\"Name\":\"web\",\"Port\":8080,\"Check\":null,\"Checks\":null}\n",
    )
    .await;
    let web = go.get("/v1/agent/service/web").await;
    assert_eq!(web["ID"], "web");
    assert_eq!(web["Port"], 8080);
    assert_eq!(web["Weights"], json!({"Passing": 1, "Warning": 1}));
    assert_eq!(web["Tags"], json!([]));
    assert_eq!(web["Meta"], json!({}));
    assert!(web.get("TaggedAddresses").is_none(), "{web}");
    assert!(web.get("Proxy").is_none() && web.get("Connect").is_none());
    let checks = go.get("/v1/agent/checks").await;
    assert_eq!(
        checks,
        json!({}),
        "Check:null and Checks:null make no check"
    );

    // Every field the Go struct has, in its order; `&` escaped as `\u0026`.
    go.put(
        "/v1/agent/service/register",
        concat!(
            "{\"ID\":\"web-1\",\"Name\":\"web\",\"Tags\":[\"v1\",\"primary\"],\"Port\":8080,",
            "\"Address\":\"10.1.2.3\",\"TaggedAddresses\":{\"lan\":{\"Address\":\"10.1.2.3\",\"Port\":8080},",
            "\"wan\":{\"Address\":\"198.51.100.7\",\"Port\":80}},\"EnableTagOverride\":true,",
            "\"Meta\":{\"env\":\"prod\",\"team\":\"a\\u0026b\"},\"Weights\":{\"Passing\":10,\"Warning\":2},",
            "\"Check\":{\"TTL\":\"15s\",\"DeregisterCriticalServiceAfter\":\"1m\"},\"Checks\":null,",
            "\"Locality\":{\"Region\":\"us-east-1\",\"Zone\":\"us-east-1a\"}}\n"
        ),
    )
    .await;
    let web1 = go.get("/v1/agent/service/web-1").await;
    assert_eq!(web1["Meta"], json!({"env": "prod", "team": "a&b"}));
    assert_eq!(web1["Weights"], json!({"Passing": 10, "Warning": 2}));
    assert_eq!(web1["EnableTagOverride"], true);
    assert_eq!(
        web1["TaggedAddresses"],
        json!({
            "lan": {"Address": "10.1.2.3", "Port": 8080},
            "wan": {"Address": "198.51.100.7", "Port": 80},
            // Added by the agent for a service at an IPv4 address.
            "lan_ipv4": {"Address": "10.1.2.3", "Port": 8080},
            "wan_ipv4": {"Address": "10.1.2.3", "Port": 8080},
        })
    );
    assert_eq!(
        web1["Locality"],
        json!({"Region": "us-east-1", "Zone": "us-east-1a"})
    );
    let checks = go.get("/v1/agent/checks").await;
    let check = &checks["service:web-1"];
    assert_eq!(check["ServiceID"], "web-1");
    assert_eq!(check["Type"], "ttl");
    assert_eq!(check["Status"], "critical");
    assert_eq!(
        check["Definition"]["DeregisterCriticalServiceAfter"], "1m0s",
        "{check}"
    );
    // The catalog holds the same instance.
    let rows = go.get("/v1/catalog/service/web?tag=primary").await;
    assert_eq!(rows.as_array().unwrap().len(), 1, "{rows}");
    assert_eq!(rows[0]["ServiceID"], "web-1");
    assert_eq!(
        rows[0]["ServiceWeights"],
        json!({"Passing": 10, "Warning": 2})
    );
    assert_eq!(
        rows[0]["ServiceTaggedAddresses"]["wan"]["Address"],
        "198.51.100.7"
    );
    assert_eq!(rows[0]["ServiceLocality"]["Zone"], "us-east-1a");

    // A Connect proxy: `Proxy` with the Go struct's order; `MeshGateway`
    // and `Expose` are struct values, always sent.
    go.put(
        "/v1/agent/service/register",
        concat!(
            "{\"Kind\":\"connect-proxy\",\"ID\":\"web-proxy\",\"Name\":\"web-proxy\",\"Port\":21000,",
            "\"Check\":null,\"Checks\":null,\"Proxy\":{\"DestinationServiceName\":\"web\",",
            "\"DestinationServiceID\":\"web-1\",\"LocalServiceAddress\":\"127.0.0.1\",",
            "\"LocalServicePort\":8080,\"Config\":{\"protocol\":\"http\",\"Nested\":{\"KeepCase\":1}},",
            "\"Upstreams\":[{\"DestinationName\":\"db\",\"LocalBindPort\":9191,\"MeshGateway\":{}}],",
            "\"MeshGateway\":{},\"Expose\":{}}}\n"
        ),
    )
    .await;
    let proxy = go.get("/v1/agent/service/web-proxy").await;
    assert_eq!(proxy["Kind"], "connect-proxy");
    assert_eq!(
        proxy["Proxy"],
        json!({
            "DestinationServiceName": "web", "DestinationServiceID": "web-1",
            "LocalServiceAddress": "127.0.0.1", "LocalServicePort": 8080, "Mode": "",
            "Config": {"protocol": "http", "Nested": {"KeepCase": 1}},
            "Upstreams": [{"DestinationName": "db", "LocalBindPort": 9191, "MeshGateway": {}}],
            "MeshGateway": {}, "Expose": {},
        })
    );
    let rows = go.get("/v1/catalog/service/web-proxy").await;
    assert_eq!(rows[0]["ServiceKind"], "connect-proxy");
    assert_eq!(rows[0]["ServiceProxy"], proxy["Proxy"]);
    let entries = go.get("/v1/health/service/web-proxy").await;
    assert_eq!(entries[0]["Service"]["Proxy"], proxy["Proxy"]);

    // Connect-native.
    go.put(
        "/v1/agent/service/register",
        "{\"Name\":\"native\",\"Port\":9000,\"Check\":null,\"Checks\":null,\"Connect\":{\"Native\":true}}\n",
    )
    .await;
    let native = go.get("/v1/agent/service/native").await;
    assert_eq!(native["Connect"], json!({"Native": true}));
    let entries = go.get("/v1/health/service/native").await;
    assert_eq!(entries[0]["Service"]["Connect"], json!({"Native": true}));

    // `Agent().CheckRegister(&AgentCheckRegistration{ID:"mem",Name:"Memory",
    // AgentServiceCheck:{TTL:"30s"}})`, then `UpdateTTL` and `PassTTL`.
    go.put(
        "/v1/agent/check/register",
        "{\"ID\":\"mem\",\"Name\":\"Memory\",\"TTL\":\"30s\"}\n",
    )
    .await;
    let checks = go.get("/v1/agent/checks").await;
    assert_eq!(checks["mem"]["Name"], "Memory");
    assert_eq!(checks["mem"]["Status"], "critical");
    go.put(
        "/v1/agent/check/update/mem",
        "{\"Status\":\"warning\",\"Output\":\"75% used\"}\n",
    )
    .await;
    let checks = go.get("/v1/agent/checks").await;
    assert_eq!(
        (&checks["mem"]["Status"], &checks["mem"]["Output"]),
        (&json!("warning"), &json!("75% used"))
    );
    go.put("/v1/agent/check/pass/mem?note=all+good", "").await;
    let checks = go.get("/v1/agent/checks").await;
    assert_eq!(checks["mem"]["Output"], "all good");

    // Invalid weights are refused as Consul's agent refuses them.
    let r = go
        .send(
            Method::PUT,
            "/v1/agent/service/register",
            "application/json",
            b"{\"Name\":\"w0\",\"Weights\":{\"Passing\":0,\"Warning\":1},\"Check\":null,\"Checks\":null}\n",
        )
        .await;
    assert_eq!(
        (r.status, r.text.as_str()),
        (400, "Invalid Weights: Passing must be greater than 0")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalog_register_and_deregister_as_the_go_client_marshals_them() {
    let go = GoClient::start();

    // `Catalog().Register(&CatalogRegistration{Node:"ext-1",Address:"10.0.0.9",
    // Service:&AgentService{ID:"redis1",Service:"redis",Port:6379},
    // Check:&AgentCheck{...}})`: every field without omitempty, nil ones
    // `null`, `Weights` a zero value.
    let r = go
        .put(
            "/v1/catalog/register",
            concat!(
                "{\"ID\":\"\",\"Node\":\"ext-1\",\"Address\":\"10.0.0.9\",\"TaggedAddresses\":null,",
                "\"NodeMeta\":null,\"Datacenter\":\"\",\"Service\":{\"ID\":\"redis1\",\"Service\":\"redis\",",
                "\"Tags\":null,\"Meta\":null,\"Port\":6379,\"Address\":\"\",",
                "\"Weights\":{\"Passing\":0,\"Warning\":0},\"EnableTagOverride\":false},",
                "\"Check\":{\"Node\":\"ext-1\",\"CheckID\":\"redis-alive\",\"Name\":\"Redis alive\",",
                "\"Status\":\"passing\",\"Notes\":\"\",\"Output\":\"PONG\",\"ServiceID\":\"redis1\",",
                "\"ServiceName\":\"redis\",\"Type\":\"\",\"ExposedPort\":0,\"Definition\":{\"Interval\":\"0s\",",
                "\"Timeout\":\"0s\",\"DeregisterCriticalServiceAfter\":\"0s\",\"HTTP\":\"\",\"Header\":null,",
                "\"Method\":\"\",\"Body\":\"\",\"TLSServerName\":\"\",\"TLSSkipVerify\":false,\"TCP\":\"\",",
                "\"TCPUseTLS\":false,\"UDP\":\"\",\"GRPC\":\"\",\"OSService\":\"\",\"GRPCUseTLS\":false}},",
                "\"Checks\":null,\"SkipNodeUpdate\":false}\n"
            ),
        )
        .await;
    assert_eq!(r.text, "true");
    let rows = go.get("/v1/catalog/service/redis").await;
    assert_eq!(rows.as_array().unwrap().len(), 1, "{rows}");
    let row = &rows[0];
    assert_eq!(
        (&row["Node"], &row["Address"]),
        (&json!("ext-1"), &json!("10.0.0.9"))
    );
    assert_eq!(row["ServicePort"], 6379);
    assert_eq!(row["ServiceTags"], json!([]));
    // The Go client's `{0,0}` is not valid weights: Consul's default.
    assert_eq!(row["ServiceWeights"], json!({"Passing": 1, "Warning": 1}));
    let checks = go.get("/v1/health/checks/redis").await;
    assert_eq!(checks.as_array().unwrap().len(), 1, "{checks}");
    assert_eq!(checks[0]["CheckID"], "redis-alive");
    assert_eq!(checks[0]["Status"], "passing");
    assert_eq!(checks[0]["Output"], "PONG");
    assert_eq!(checks[0]["Definition"]["Interval"], "0s", "{}", checks[0]);
    let entries = go.get("/v1/health/service/redis?passing=1").await;
    assert_eq!(entries.as_array().unwrap().len(), 1, "{entries}");

    // `Catalog().Deregister(&CatalogDeregistration{Node:"ext-1",ServiceID:"redis1"})`.
    go.put(
        "/v1/catalog/deregister",
        "{\"Node\":\"ext-1\",\"Datacenter\":\"\",\"ServiceID\":\"redis1\",\"CheckID\":\"\"}\n",
    )
    .await;
    assert_eq!(go.get("/v1/catalog/service/redis").await, json!([]));
    let node = go.get("/v1/catalog/node/ext-1").await;
    assert_eq!(node["Node"]["Address"], "10.0.0.9", "the node stays");
    assert_eq!(node["Services"], json!({}));
    // ... and the whole node.
    go.put(
        "/v1/catalog/deregister",
        "{\"Node\":\"ext-1\",\"Datacenter\":\"\",\"ServiceID\":\"\",\"CheckID\":\"\"}\n",
    )
    .await;
    assert_eq!(go.get("/v1/catalog/node/ext-1").await, Value::Null);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_kv_and_txn_as_the_go_client_sends_them() {
    let go = GoClient::start();

    // `Session().Create(&SessionEntry{Name:"lock",TTL:"10s",Behavior:"delete",
    // LockDelay:15*time.Second})`: a map, so sorted keys, only the set ones.
    let r = go
        .put(
            "/v1/session/create",
            "{\"Behavior\":\"delete\",\"LockDelay\":\"15000ms\",\"Name\":\"lock\",\"TTL\":\"10s\"}\n",
        )
        .await;
    let sid = r.json()["ID"].as_str().unwrap().to_string();
    let info = go.get(&format!("/v1/session/info/{sid}")).await;
    assert_eq!(info[0]["Behavior"], "delete");
    assert_eq!(info[0]["LockDelay"], 15_000_000_000u64);
    assert_eq!(info[0]["TTL"], "10s");
    assert_eq!(info[0]["NodeChecks"], json!(["serfHealth"]));
    // `Renew` sends no body and reads an array.
    let r = go.put(&format!("/v1/session/renew/{sid}"), "").await;
    assert_eq!(r.json()[0]["ID"], sid.as_str());
    // `Create(nil)`: no body at all.
    let r = go.put("/v1/session/create", "").await;
    let default_sid = r.json()["ID"].as_str().unwrap().to_string();
    let info = go.get(&format!("/v1/session/info/{default_sid}")).await;
    assert_eq!(info[0]["Behavior"], "release");
    assert_eq!(info[0]["LockDelay"], 15_000_000_000u64);
    // `CreateNoChecks`: `"Checks":[]` means none.
    let r = go
        .put("/v1/session/create", "{\"Checks\":[],\"Name\":\"nc\"}\n")
        .await;
    let nc = r.json()["ID"].as_str().unwrap().to_string();
    let info = go.get(&format!("/v1/session/info/{nc}")).await;
    assert_eq!(info[0]["NodeChecks"], json!([]));
    // `KV().Put` / `Acquire`: raw bytes as application/octet-stream.
    let kv = |path: &str, body: &'static [u8]| {
        let path = path.to_string();
        let go = &go;
        async move {
            let r = go
                .send(Method::PUT, &path, "application/octet-stream", body)
                .await;
            assert_eq!(r.status, 200, "{path}: {}", r.text);
            r.text
        }
    };
    assert_eq!(kv("/v1/kv/app/config?flags=42", b"a=1\n").await, "true");
    assert_eq!(
        kv(&format!("/v1/kv/app/leader?acquire={sid}"), b"n1").await,
        "true"
    );
    let pair = go.get("/v1/kv/app/config").await;
    assert_eq!(pair[0]["Flags"], 42);
    assert_eq!(pair[0]["Value"], "YT0xCg==");
    let pair = go.get("/v1/kv/app/leader").await;
    assert_eq!(pair[0]["Session"], sid.as_str());

    // `Txn()`: each op has all four verbs, the unused three `null`.
    let r = go
        .put(
            "/v1/txn",
            concat!(
                "[{\"KV\":{\"Verb\":\"set\",\"Key\":\"foo\",\"Value\":\"YmFy\",\"Flags\":0,\"Index\":0,",
                "\"Session\":\"\"},\"Node\":null,\"Service\":null,\"Check\":null},",
                "{\"KV\":null,\"Node\":{\"Verb\":\"set\",\"Node\":{\"ID\":\"\",\"Node\":\"ext-2\",",
                "\"Address\":\"10.0.0.10\",\"Datacenter\":\"\",\"TaggedAddresses\":null,\"Meta\":null,",
                "\"CreateIndex\":0,\"ModifyIndex\":0}},\"Service\":null,\"Check\":null},",
                "{\"KV\":null,\"Node\":null,\"Service\":{\"Verb\":\"set\",\"Node\":\"ext-2\",",
                "\"Service\":{\"ID\":\"s1\",\"Service\":\"svc\",\"Tags\":null,\"Meta\":null,\"Port\":80,",
                "\"Address\":\"\",\"Weights\":{\"Passing\":0,\"Warning\":0},\"EnableTagOverride\":false}},",
                "\"Check\":null}]\n"
            ),
        )
        .await;
    assert_eq!(r.json()["Errors"], Value::Null, "{}", r.text);
    let pair = go.get("/v1/kv/foo").await;
    assert_eq!(pair[0]["Value"], "YmFy");
    let rows = go.get("/v1/catalog/service/svc").await;
    assert_eq!(rows[0]["Node"], "ext-2");
    assert_eq!(rows[0]["Address"], "10.0.0.10");
    assert_eq!(
        rows[0]["ServiceWeights"],
        json!({"Passing": 1, "Warning": 1})
    );

    // Query strings as `url.Values.Encode()` writes them: sorted keys, flags
    // with empty values, `+` for a space.
    let rows = go.get("/v1/catalog/service/svc?dc=dc1&stale=").await;
    assert_eq!(rows.as_array().unwrap().len(), 1);
    let keys = go.get("/v1/kv/app/?keys=&separator=%2F").await;
    assert_eq!(keys, json!(["app/config", "app/leader"]));
}
