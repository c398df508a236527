//! The agent's KV, txn, session, status and operator endpoints, driven over
//! real HTTP against the real binary (`pilotfish agent --dev`) on free
//! loopback ports, with Consul's codes, texts, shapes and index headers.

#![allow(clippy::unwrap_used)]

// Only parts of the cluster harness are used here.
#[allow(dead_code, unused_imports)]
mod common;

use std::time::{Duration, Instant};

use common::agent::{consul_index, Agent};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

/// A `--dev` agent (node `n1`) and a client for its HTTP API.
struct Api {
    agent: Agent,
    base: String,
    http: reqwest::Client,
}

impl Api {
    fn start() -> Api {
        let agent = Agent::dev()
            .args(["--node", "n1", "--log-level", "warn"])
            .start();
        Api {
            base: agent.url(""),
            agent,
            http: {
                pilotfish::discovery::server::tls::install_default_provider();
                reqwest::Client::new()
            },
        }
    }

    async fn call(&self, method: Method, path: &str, body: Option<Vec<u8>>) -> Reply {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(b) = body {
            req = req.body(b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let index = resp
            .headers()
            .get("x-consul-index")
            .map(|v| v.to_str().unwrap().parse::<u64>().unwrap());
        let content_type = resp
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_string());
        let body = resp.bytes().await.unwrap().to_vec();
        Reply {
            status,
            index,
            content_type,
            body,
        }
    }

    async fn get(&self, path: &str) -> Reply {
        self.call(Method::GET, path, None).await
    }

    async fn put(&self, path: &str, body: &str) -> Reply {
        self.call(Method::PUT, path, Some(body.as_bytes().to_vec()))
            .await
    }

    async fn delete(&self, path: &str) -> Reply {
        self.call(Method::DELETE, path, None).await
    }

    /// A session without checks (Patroni's shape); returns its ID.
    async fn session(&self, behavior: &str) -> String {
        let r = self
            .put(
                "/v1/session/create",
                &json!({"name": "t", "checks": [], "lockdelay": "0.001s", "behavior": behavior})
                    .to_string(),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        r.json()["ID"].as_str().unwrap().to_string()
    }
}

struct Reply {
    status: StatusCode,
    index: Option<u64>,
    content_type: Option<String>,
    body: Vec<u8>,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    fn ok_true(&self) {
        assert_eq!(
            (self.status, self.text().as_str()),
            (StatusCode::OK, "true")
        );
    }
    fn ok_false(&self) {
        assert_eq!(
            (self.status, self.text().as_str()),
            (StatusCode::OK, "false")
        );
    }
}

#[tokio::test]
async fn kv_crud_keeps_exact_shapes_flags_and_indexes() {
    let a = Api::start();
    a.put("/v1/kv/svc/config", "hello").await.ok_true();
    let r = a.get("/v1/kv/svc/config").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.content_type.as_deref(), Some("application/json"));
    let pair = &r.json()[0];
    assert_eq!(pair["Key"], "svc/config");
    assert_eq!(pair["Value"], "aGVsbG8=");
    assert_eq!(pair["Flags"], 0);
    assert!(pair.get("Session").is_none(), "no Session when unlocked");
    let modify = pair["ModifyIndex"].as_u64().unwrap();
    assert_eq!(r.index, Some(modify), "single key answers its ModifyIndex");

    // Go's api.Lock flag survives as an exact 64-bit integer.
    a.put("/v1/kv/svc/config?flags=3304740253564472344", "")
        .await
        .ok_true();
    let r = a.get("/v1/kv/svc/config").await;
    assert!(String::from_utf8_lossy(&r.body).contains("\"Flags\":3304740253564472344"));
    assert_eq!(r.json()[0]["Value"], Value::Null, "empty body stores nil");
    // A plain PUT resets flags to 0.
    a.put("/v1/kv/svc/config", "x").await.ok_true();
    assert_eq!(a.get("/v1/kv/svc/config").await.json()[0]["Flags"], 0);

    // Another key's write does not move this key's index.
    let before = a.get("/v1/kv/svc/config").await.index.unwrap();
    a.put("/v1/kv/other", "y").await.ok_true();
    assert_eq!(a.get("/v1/kv/svc/config").await.index, Some(before));

    a.delete("/v1/kv/svc/config").await.ok_true();
    let r = a.get("/v1/kv/svc/config").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert!(r.body.is_empty());
    assert!(
        r.index.unwrap() > before,
        "404 carries the tombstone's index"
    );
    // A key never written still answers with an index (never 0).
    let r = a.get("/v1/kv/never").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert!(r.index.unwrap() >= 1);

    // Errors.
    let r = a.get("/v1/kv/").await;
    assert_eq!(
        (r.status, r.text().as_str()),
        (StatusCode::BAD_REQUEST, "Missing key name")
    );
    let r = a.put("/v1/kv/", "v").await;
    assert_eq!(
        (r.status, r.text().as_str()),
        (StatusCode::BAD_REQUEST, "Missing key name")
    );
    let r = a.call(Method::POST, "/v1/kv/a", None).await;
    assert_eq!(
        (r.status, r.text().as_str()),
        (StatusCode::METHOD_NOT_ALLOWED, "method POST not allowed")
    );
    let r = a.put("/v1/kv/a?flags=x", "v").await;
    assert_eq!(
        (r.status, r.text().as_str()),
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            "strconv.ParseUint: parsing \"x\": invalid syntax"
        )
    );
    let r = a.get("/v1/kv/a?stale&consistent").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = a.get("/v1/kv/a?dc=dc2").await;
    assert_eq!(
        (r.status, r.text().as_str()),
        (StatusCode::INTERNAL_SERVER_ERROR, "No path to datacenter")
    );
}

#[tokio::test]
async fn kv_cas_creates_once_and_checks_modify_index() {
    let a = Api::start();
    a.put("/v1/kv/init?cas=0", "sys1").await.ok_true();
    a.put("/v1/kv/init?cas=0", "sys2").await.ok_false();
    let idx = a.get("/v1/kv/init").await.json()[0]["ModifyIndex"]
        .as_u64()
        .unwrap();
    a.put(&format!("/v1/kv/init?cas={}", idx + 100), "z")
        .await
        .ok_false();
    a.put(&format!("/v1/kv/init?cas={idx}"), "sys3")
        .await
        .ok_true();
    let r = a.get("/v1/kv/init?raw").await;
    assert_eq!(r.text(), "sys3");
    let idx = r.index.unwrap();
    a.delete(&format!("/v1/kv/init?cas={}", idx - 1))
        .await
        .ok_false();
    a.delete(&format!("/v1/kv/init?cas={idx}")).await.ok_true();
    // Absent key + cas ⇒ true.
    a.delete("/v1/kv/init?cas=5").await.ok_true();
    let r = a.put("/v1/kv/k?cas=0&acquire=s", "v").await;
    assert_eq!(
        (r.status, r.text().as_str()),
        (
            StatusCode::BAD_REQUEST,
            "Conflicting flags: acquire=s&cas=0"
        )
    );
    let r = a.delete("/v1/kv/k?cas=0&recurse").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.text().starts_with("Conflicting flags: "));
    let r = a.put("/v1/kv/k?cas=", "v").await;
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR);
}

#[tokio::test]
async fn kv_recurse_keys_separator_and_raw() {
    let a = Api::start();
    // The root of an empty store: keys ⇒ [], recurse ⇒ 404.
    let r = a.get("/v1/kv/?keys").await;
    assert_eq!((r.status, r.json()), (StatusCode::OK, json!([])));
    assert_eq!(a.get("/v1/kv/?recurse").await.status, StatusCode::NOT_FOUND);
    for k in ["web/a", "web/b/c", "web/b/d", "webx", "db/x"] {
        a.put(&format!("/v1/kv/{k}"), k).await.ok_true();
    }
    let r = a.get("/v1/kv/web?recurse").await;
    let keys: Vec<&str> = r
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["Key"].as_str().unwrap().to_owned().leak() as &str)
        .collect();
    assert_eq!(
        keys,
        ["web/a", "web/b/c", "web/b/d", "webx"],
        "byte prefix, sorted"
    );
    let r = a.get("/v1/kv/?recurse=1").await;
    assert_eq!(r.json().as_array().unwrap().len(), 5);
    let r = a.get("/v1/kv/web/?keys&separator=/").await;
    assert_eq!(r.json(), json!(["web/a", "web/b/"]));
    let r = a.get("/v1/kv/web/?keys=True").await;
    assert_eq!(r.json(), json!(["web/a", "web/b/c", "web/b/d"]));
    let r = a.get("/v1/kv/nothing/?keys").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert!(r.index.is_some());

    let r = a.get("/v1/kv/web/b/c?raw").await;
    assert_eq!(r.text(), "web/b/c");
    assert_eq!(r.content_type.as_deref(), Some("text/plain"));

    // A prefix index covers deletes (tombstones).
    let idx = a.get("/v1/kv/web/?recurse").await.index.unwrap();
    a.delete("/v1/kv/web/?recurse").await.ok_true();
    let r = a.get("/v1/kv/web/?recurse").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert!(r.index.unwrap() > idx);
    assert_eq!(a.get("/v1/kv/webx").await.status, StatusCode::OK);
    a.delete("/v1/kv/?recurse").await.ok_true();
    assert_eq!(a.get("/v1/kv/?keys").await.json(), json!([]));
}

#[tokio::test]
async fn kv_percent_encoded_keys_keep_their_slashes() {
    let a = Api::start();
    a.put("/v1/kv/service/scope%2Fname:1", "v").await.ok_true();
    let r = a.get("/v1/kv/service/scope/name:1").await;
    assert_eq!(r.json()[0]["Key"], "service/scope/name:1");
    let r = a.get("/v1/kv/service%2Fscope%2F?keys").await;
    assert_eq!(r.json(), json!(["service/scope/name:1"]));
    a.put("/v1/kv/sp%20ace+plus", "v").await.ok_true();
    assert_eq!(a.get("/v1/kv/sp ace+plus").await.status, StatusCode::OK);
}

#[tokio::test]
async fn kv_values_over_512_kib_are_refused_with_413() {
    let a = Api::start();
    let max = 512 * 1024;
    let r = a
        .call(Method::PUT, "/v1/kv/big", Some(vec![b'x'; max + 1]))
        .await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        r.text(),
        "Request body(524289 bytes) too large, max size: 524288 bytes. \
         See https://www.consul.io/docs/agent/config/config-files#kv_max_value_size."
    );
    assert_eq!(a.get("/v1/kv/big").await.status, StatusCode::NOT_FOUND);
    a.call(Method::PUT, "/v1/kv/big", Some(vec![b'x'; max]))
        .await
        .ok_true();
    assert_eq!(a.get("/v1/kv/big?raw").await.body.len(), max);
}

#[tokio::test]
async fn kv_acquire_release_and_session_behaviors() {
    let a = Api::start();
    let s1 = a.session("release").await;
    let s2 = a.session("delete").await;
    a.put(&format!("/v1/kv/leader?acquire={s1}"), "n1")
        .await
        .ok_true();
    let p = a.get("/v1/kv/leader").await.json()[0].clone();
    assert_eq!(
        (p["Session"].as_str(), p["LockIndex"].as_u64()),
        (Some(s1.as_str()), Some(1))
    );
    // The holder re-acquiring (Patroni every loop) gets true, LockIndex kept.
    a.put(&format!("/v1/kv/leader?acquire={s1}"), "n1b")
        .await
        .ok_true();
    let p = a.get("/v1/kv/leader").await.json()[0].clone();
    assert_eq!(
        (p["LockIndex"].as_u64(), p["Value"].as_str()),
        (Some(1), Some("bjFi"))
    );
    // Another session cannot take or release it.
    a.put(&format!("/v1/kv/leader?acquire={s2}"), "n2")
        .await
        .ok_false();
    a.put(&format!("/v1/kv/leader?release={s2}"), "n2")
        .await
        .ok_false();
    // A plain PUT keeps the holder.
    a.put("/v1/kv/leader", "n1c").await.ok_true();
    assert_eq!(
        a.get("/v1/kv/leader").await.json()[0]["Session"],
        s1.as_str()
    );
    a.put(&format!("/v1/kv/leader?release={s1}"), "n1")
        .await
        .ok_true();
    assert!(a.get("/v1/kv/leader").await.json()[0]
        .get("Session")
        .is_none());

    let r = a.put("/v1/kv/leader?acquire=nope", "x").await;
    assert_eq!(
        (r.status, r.text().as_str()),
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            "invalid session \"nope\""
        )
    );
    let r = a.put("/v1/kv/leader?acquire=", "x").await;
    assert_eq!(
        (r.status, r.text().as_str()),
        (StatusCode::INTERNAL_SERVER_ERROR, "missing session")
    );

    // Destroying a delete-behavior session deletes its keys.
    a.put(&format!("/v1/kv/members/n2?acquire={s2}"), "m")
        .await
        .ok_true();
    a.put(&format!("/v1/session/destroy/{s2}"), "")
        .await
        .ok_true();
    assert_eq!(
        a.get("/v1/kv/members/n2").await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn txn_commits_atomically_or_rolls_back_with_409() {
    let a = Api::start();
    let ops = json!([
        {"KV": {"Verb": "set", "Key": "t/a", "Value": "YQ=="}},
        {"KV": {"Verb": "set", "Key": "t/b", "Value": "Yg==", "Flags": 7}},
    ]);
    let r = a.put("/v1/txn", &ops.to_string()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let body = r.json();
    assert_eq!(body["Errors"], Value::Null);
    assert_eq!(body["Results"][1]["KV"]["Key"], "t/b");
    assert_eq!(body["Results"][1]["KV"]["Flags"], 7);

    // One failing check rolls back the set before it.
    let ops = json!([
        {"KV": {"Verb": "set", "Key": "t/a", "Value": "eg=="}},
        {"KV": {"Verb": "check-not-exists", "Key": "t/b"}},
    ]);
    let r = a.put("/v1/txn", &ops.to_string()).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    let body = r.json();
    assert_eq!(body["Results"], Value::Null);
    assert_eq!(body["Errors"][0]["OpIndex"], 1);
    assert_eq!(a.get("/v1/kv/t/a?raw").await.text(), "a");

    // Reads alone are served without a write, with index headers.
    let before = a.get("/v1/kv/t/?recurse").await.index;
    let r = a
        .put(
            "/v1/txn",
            &json!([{"KV": {"Verb": "get", "Key": "t/a"}}]).to_string(),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["Results"][0]["KV"]["Value"], "YQ==");
    assert!(r.index.is_some());
    assert_eq!(a.get("/v1/kv/t/?recurse").await.index, before);

    let r = a.put("/v1/txn", "{nope").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.text().starts_with("Failed to parse body: "));
    let many: Vec<Value> = (0..65)
        .map(|i| json!({"KV": {"Verb": "get", "Key": format!("k{i}")}}))
        .collect();
    let r = a.put("/v1/txn", &Value::Array(many).to_string()).await;
    assert_eq!(
        (r.status, r.text().as_str()),
        (
            StatusCode::PAYLOAD_TOO_LARGE,
            "Transaction contains too many operations (65 > 64)"
        )
    );
}

/// The bytes HashiCorp's Go client (`api.Txn`, as Terraform's consul
/// backend uses it) sends: every op kind present, the unused ones `null`,
/// and `Value` `null` on reads.
#[tokio::test]
async fn txn_takes_the_go_clients_null_ops() {
    let a = Api::start();
    let body = concat!(
        r#"[{"KV":{"Verb":"set","Key":"tf/state","Value":"c3RhdGU=","Flags":0,"Index":0,"Session":""},"#,
        r#""Node":null,"Service":null,"Check":null,"Session":null},"#,
        r#"{"KV":{"Verb":"get","Key":"tf/state","Value":null,"Flags":0,"Index":0,"Session":""},"#,
        r#""Node":null,"Service":null,"Check":null,"Session":null},"#,
        r#"{"KV":null,"Node":{"Verb":"set","Node":{"ID":"","Node":"tf-node","Address":"10.1.2.3","#,
        r#""Datacenter":"","TaggedAddresses":null,"Meta":null,"CreateIndex":0,"ModifyIndex":0}},"#,
        r#""Service":null,"Check":null,"Session":null}]"#
    );
    let r = a.put("/v1/txn", body).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let answer = r.json();
    assert_eq!(answer["Errors"], Value::Null);
    assert_eq!(answer["Results"][1]["KV"]["Value"], "c3RhdGU=");
    assert_eq!(a.get("/v1/kv/tf/state?raw").await.text(), "state");
    let node = a.get("/v1/catalog/node/tf-node").await.json();
    assert_eq!(node["Node"]["Address"], "10.1.2.3");

    // All kinds null is still no operation at all.
    let r = a
        .put(
            "/v1/txn",
            r#"[{"KV":null,"Node":null,"Service":null,"Check":null,"Session":null}]"#,
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.text().contains("exactly one of"), "{}", r.text());
}

#[tokio::test]
async fn txn_node_service_and_check_ops_apply_together_or_not_at_all() {
    let a = Api::start();
    let ops = json!([
        {"Node": {"Verb": "set", "Node": {"Node": "tx1", "Address": "10.9.0.1", "Meta": {"Rack": "r1"}}}},
        {"Service": {"Verb": "set", "Node": "tx1", "Service": {"ID": "web1", "Service": "web", "Port": 80, "Tags": ["a"]}}},
        {"Check": {"Verb": "set", "Check": {"Node": "tx1", "CheckID": "web1-alive", "Name": "alive", "Status": "passing", "ServiceID": "web1"}}},
        {"KV": {"Verb": "set", "Key": "tx/registered", "Value": "eWVz"}},
    ]);
    let r = a.put("/v1/txn", &ops.to_string()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let body = r.json();
    assert_eq!(body["Errors"], Value::Null);
    let results = body["Results"].as_array().unwrap();
    assert_eq!(results.len(), 4, "{body}");
    assert_eq!(results[0]["Node"]["Node"], "tx1");
    assert_eq!(results[0]["Node"]["Address"], "10.9.0.1");
    assert_eq!(results[0]["Node"]["Meta"]["Rack"], "r1");
    assert_eq!(results[0]["Node"]["Datacenter"], "dc1");
    assert_eq!(results[1]["Service"]["ID"], "web1");
    assert_eq!(results[1]["Service"]["Port"], 80);
    assert_eq!(results[2]["Check"]["Status"], "passing");
    assert_eq!(results[2]["Check"]["ServiceName"], "web");
    assert_eq!(results[3]["KV"]["Key"], "tx/registered");
    let service_index = results[1]["Service"]["ModifyIndex"].as_u64().unwrap();
    let r = a.get("/v1/health/service/web?passing").await;
    assert_eq!(r.json()[0]["Node"]["Node"], "tx1", "{}", r.text());

    // A stale CAS rolls back the whole txn: the node delete before it too.
    let ops = json!([
        {"Node": {"Verb": "delete", "Node": {"Node": "tx1"}}},
        {"Service": {"Verb": "cas", "Node": "tx1", "Service": {"ID": "web1", "Service": "web", "Port": 81, "ModifyIndex": service_index + 1000}}},
        {"Check": {"Verb": "get", "Check": {"Node": "tx1", "CheckID": "nope"}}},
    ]);
    let r = a.put("/v1/txn", &ops.to_string()).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text());
    let body = r.json();
    assert_eq!(body["Results"], Value::Null);
    assert_eq!(
        body["Errors"],
        json!([
            {"OpIndex": 1, "What": "failed to set service \"web1\" on node \"tx1\", index is stale"},
            {"OpIndex": 2, "What": "check \"nope\" on node \"tx1\" doesn't exist"},
        ])
    );
    assert_eq!(
        a.get("/v1/catalog/node/tx1").await.json()["Node"]["Node"],
        "tx1"
    );

    // The right index applies; reads alone come with an index header.
    let ops = json!([
        {"Service": {"Verb": "cas", "Node": "tx1", "Service": {"ID": "web1", "Service": "web", "Port": 81, "ModifyIndex": service_index}}},
    ]);
    let r = a.put("/v1/txn", &ops.to_string()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["Results"][0]["Service"]["Port"], 81);
    let r = a
        .put(
            "/v1/txn",
            &json!([{"Service": {"Verb": "get", "Node": "tx1", "Service": {"ID": "web1"}}}])
                .to_string(),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["Results"][0]["Service"]["Port"], 81);
    assert!(r.index.is_some());

    // A service on a node that does not exist; an unknown verb; bad input.
    let r = a
        .put(
            "/v1/txn",
            &json!([{"KV": {"Verb": "set", "Key": "tx/x", "Value": "eA=="}},
                    {"Service": {"Verb": "set", "Node": "ghost", "Service": {"Service": "x"}}}])
            .to_string(),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text());
    assert_eq!(
        r.json()["Errors"],
        json!([{"OpIndex": 1, "What": "Missing node registration"}])
    );
    assert_eq!(a.get("/v1/kv/tx/x").await.status, StatusCode::NOT_FOUND);
    let r = a
        .put(
            "/v1/txn",
            &json!([{"Node": {"Verb": "touch", "Node": {"Node": "tx1"}}}]).to_string(),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text());
    assert_eq!(
        r.json()["Errors"],
        json!([{"OpIndex": 0, "What": "unknown Node verb \"touch\""}])
    );
    let r = a
        .put(
            "/v1/txn",
            &json!([{"Check": {"Verb": "set", "Check": {"Node": "tx1", "CheckID": "c", "Status": "fine"}}}])
                .to_string(),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text());
    assert!(r.text().contains("Check.Check.Status"), "{}", r.text());
    assert!(r.text().contains("fine"), "{}", r.text());

    // Deleting the node takes its service and check with it.
    let r = a
        .put(
            "/v1/txn",
            &json!([{"Node": {"Verb": "delete", "Node": {"Node": "tx1"}}}]).to_string(),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(a.get("/v1/health/service/web").await.json(), json!([]));
}

#[tokio::test]
async fn sessions_create_renew_destroy_and_validate_ttl() {
    let a = Api::start();
    // Patroni's body: lowercase keys, fractional TTL, no checks.
    let r = a
        .put(
            "/v1/session/create",
            r#"{"name":"pg-n1","checks":[],"lockdelay":"0.001s","behavior":"delete", "ttl": "15.0s"}"#,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let id = r.json()["ID"].as_str().unwrap().to_string();
    let r = a.put(&format!("/v1/session/renew/{id}"), "").await;
    assert_eq!(r.status, StatusCode::OK);
    let s = &r.json()[0];
    assert_eq!(s["TTL"], "15.0s", "TTL verbatim");
    assert_eq!(s["Behavior"], "delete");
    assert_eq!(s["LockDelay"], 1_000_000);
    assert_eq!(s["Node"], "n1");
    assert_eq!(s["NodeChecks"], json!([]));

    let r = a.get(&format!("/v1/session/info/{id}")).await;
    assert_eq!(r.json()[0]["ID"], id.as_str());
    assert!(r.index.is_some());
    // No body ⇒ defaults (serfHealth, 15 s lock-delay, release).
    let r = a.put("/v1/session/create", "").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let list = a.get("/v1/session/list").await.json();
    assert_eq!(list.as_array().unwrap().len(), 2);
    let dflt = list
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["ID"] != id.as_str())
        .unwrap()
        .clone();
    assert_eq!(dflt["Checks"], json!(["serfHealth"]));
    assert_eq!(dflt["LockDelay"], 15_000_000_000u64);
    assert_eq!(dflt["Behavior"], "release");
    assert_eq!(
        a.get("/v1/session/node/n1")
            .await
            .json()
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert_eq!(a.get("/v1/session/node/other").await.json(), json!([]));

    a.put(&format!("/v1/session/destroy/{id}"), "")
        .await
        .ok_true();
    a.put(&format!("/v1/session/destroy/{id}"), "")
        .await
        .ok_true();
    assert_eq!(
        a.get(&format!("/v1/session/info/{id}")).await.json(),
        json!([])
    );
    let r = a.put(&format!("/v1/session/renew/{id}"), "").await;
    assert_eq!(
        (r.status, r.text()),
        (
            StatusCode::NOT_FOUND,
            format!("Session id '{id}' not found")
        )
    );

    let r = a.put("/v1/session/create", r#"{"TTL":"5s"}"#).await;
    assert_eq!(
        (r.status, r.text().as_str()),
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            "Invalid Session TTL '5000000000', must be between [10s=24h0m0s]"
        )
    );
    let r = a.put("/v1/session/create", r#"{"ttl":"10"}"#).await;
    assert_eq!(
        (r.status, r.text().as_str()),
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            "Session TTL '10' invalid: time: missing unit in duration \"10\""
        )
    );
    let r = a.put("/v1/session/create", r#"{"Behavior":"keep"}"#).await;
    assert_eq!(r.text(), "Invalid Behavior setting 'keep'");
    let r = a.put("/v1/session/create", "{").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.text().starts_with("Request decode failed: "));
    let r = a.put("/v1/session/create", r#"{"Checks":["web"]}"#).await;
    assert_eq!(r.text(), "Missing check 'web' registration");
    let r = a.get("/v1/session/create").await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn blocking_get_returns_on_change_and_times_out_without_one() {
    let a = Api::start();
    a.put("/v1/kv/svc/leader", "n1").await.ok_true();
    let idx = a.get("/v1/kv/svc/leader").await.index.unwrap();

    // No change: waits the whole wait (≤ wait × 17/16), then 200 with the same index.
    let t = Instant::now();
    let r = a
        .get(&format!("/v1/kv/svc/leader?index={idx}&wait=400ms"))
        .await;
    let took = t.elapsed();
    assert_eq!((r.status, r.index), (StatusCode::OK, Some(idx)));
    assert!(
        took >= Duration::from_millis(400),
        "returned early: {took:?}"
    );
    assert!(took < Duration::from_millis(1500), "took {took:?}");

    // A write elsewhere does not wake it; a write to the key does.
    let t = Instant::now();
    let waiter = a
        .agent
        .pending("GET", &format!("/v1/kv/svc/leader?index={idx}&wait=10s"));
    a.put("/v1/kv/svc/other", "x").await.ok_true();
    // A period in which nothing may happen: no poll can show an absence.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!waiter.is_finished(), "woken by a write to another key");
    a.put("/v1/kv/svc/leader", "n2").await.ok_true();
    let (_, headers, body) = waiter.answer(Duration::from_secs(10));
    let took = t.elapsed();
    assert!(took < Duration::from_secs(5), "took {took:?}");
    assert!(consul_index(&headers) > idx);
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body[0]["Value"], "bjI=");

    // A missing key blocks until it appears; the 404 carried the index to block on.
    let r = a.get("/v1/kv/svc/new").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let missing_idx = r.index.unwrap();
    let waiter = a.agent.pending(
        "GET",
        &format!("/v1/kv/svc/new?index={missing_idx}&wait=10s"),
    );
    // A period in which nothing may happen: it must not answer by itself.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!waiter.is_finished());
    a.put("/v1/kv/svc/new", "v").await.ok_true();
    assert_eq!(waiter.answer(Duration::from_secs(10)).0, 200);

    // A prefix watcher wakes on a delete under it.
    let pidx = a.get("/v1/kv/svc/?recurse").await.index.unwrap();
    let waiter = a
        .agent
        .pending("GET", &format!("/v1/kv/svc/?recurse&index={pidx}&wait=10s"));
    a.delete("/v1/kv/svc/other").await.ok_true();
    assert!(consul_index(&waiter.answer(Duration::from_secs(10)).1) > pidx);

    let r = a.get("/v1/kv/svc/leader?index=1&wait=10").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn blocking_session_list_wakes_on_create() {
    let a = Api::start();
    let idx = a.get("/v1/session/list").await.index.unwrap();
    let waiter = a
        .agent
        .pending("GET", &format!("/v1/session/list?index={idx}&wait=10s"));
    // A period in which nothing may happen: it must not answer by itself.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!waiter.is_finished());
    let id = a.session("release").await;
    let body: Value = serde_json::from_slice(&waiter.answer(Duration::from_secs(10)).2).unwrap();
    assert_eq!(body[0]["ID"], id.as_str());
}

#[tokio::test]
async fn status_and_raft_configuration_name_this_server() {
    let a = Api::start();
    let rpc = format!("127.0.0.1:{}", a.agent.server_port);
    let r = a.get("/v1/status/leader").await;
    assert_eq!((r.status, r.json()), (StatusCode::OK, json!(rpc)));
    assert_eq!(r.index, None, "status endpoints send no index");
    assert_eq!(a.get("/v1/status/peers").await.json(), json!([rpc]));
    let r = a.get("/v1/operator/raft/configuration").await.json();
    assert_eq!(r["Servers"][0]["Node"], "n1");
    assert_eq!(r["Servers"][0]["Leader"], true);
    assert_eq!(r["Servers"][0]["Voter"], true);
    assert_eq!(r["Servers"][0]["Address"], rpc);
}

#[test]
fn agent_refuses_to_start_without_dev_or_data_dir_and_stops_on_sigterm() {
    let stderr = Agent::on("127.0.0.1").refused();
    assert!(stderr.contains("--data-dir is required"), "{stderr}");

    let mut a = Api::start();
    a.agent.signal(nix::sys::signal::Signal::SIGTERM);
    let status = a.agent.wait_exit(Duration::from_secs(5));
    assert_eq!(
        status.code(),
        Some(0),
        "agent did not stop cleanly on SIGTERM"
    );
}
