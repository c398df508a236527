//! A client agent (`pilotfish agent` without `--server`) joined to a server:
//! it keeps its own services and checks, writes through the server, serves
//! reads from its replica, puts back registrations the servers lost
//! (anti-entropy), and a client that stops answering gets a critical
//! `serfHealth` that drops it from `?passing`.

// Only the cluster key of the shared harness is used here.
#[allow(dead_code, unused_imports)]
mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::agent::{free_port, Agent};
use serde_json::Value;

/// An agent on `ip` in the test cluster (its key), logging warnings.
fn start(ip: &str, name: &str, data: &Path, server: bool, join: Option<&str>, port: u16) -> Agent {
    let mut b = Agent::on(ip)
        .args(["--encrypt", common::CLUSTER_KEY, "--log-level", "warn"])
        .args(["--node", name, "--bind", ip, "--data-dir"])
        .arg(data)
        .server_port(port);
    if server {
        b = b.args(["--server", "--bootstrap-expect", "1"]);
    }
    if let Some(j) = join {
        b = b.args(["--retry-join", j]);
    }
    b.start()
}

struct Http(reqwest::Client);

impl Http {
    async fn call(
        &self,
        method: reqwest::Method,
        a: &Agent,
        path: &str,
        body: &str,
    ) -> (u16, String) {
        match self
            .0
            .request(method, format!("http://{}{path}", a.http))
            .body(body.to_string())
            .timeout(Duration::from_secs(15))
            .send()
            .await
        {
            Ok(r) => {
                let status = r.status().as_u16();
                (status, r.text().await.unwrap_or_default())
            }
            Err(e) => (0, e.to_string()),
        }
    }

    async fn get_json(&self, a: &Agent, path: &str) -> Value {
        let (status, body) = self.call(reqwest::Method::GET, a, path, "").await;
        if status != 200 {
            return Value::Null;
        }
        serde_json::from_str(&body).unwrap_or(Value::Null)
    }

    async fn put(&self, a: &Agent, path: &str, body: &str) -> (u16, String) {
        self.call(reqwest::Method::PUT, a, path, body).await
    }
}

/// Poll `check` until it holds or `secs` pass.
async fn eventually<F, Fut>(secs: u64, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !check().await {
        assert!(Instant::now() < deadline, "not within {secs} s: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_agent_keeps_its_services_in_sync_and_fails_when_silent() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let (sip, cip) = ("127.0.91.1", "127.0.91.2");
    let port = free_port(sip);
    let server = start(sip, "srv", &tmp.path().join("s"), true, None, port);
    let client = start(
        cip,
        "cli",
        &tmp.path().join("c"),
        false,
        Some(&format!("{sip}:{port}")),
        port,
    );
    pilotfish::discovery::server::tls::install_default_provider();
    let h = Http(
        reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("client"),
    );

    // The client joins and is listed as a client on the server.
    eventually(20, "the client is an alive member", || async {
        let m = h.get_json(&server, "/v1/agent/members").await;
        m.as_array().is_some_and(|a| {
            a.iter()
                .any(|m| m["Name"] == "cli" && m["Status"] == 1 && m["Tags"]["role"] == "node")
        })
    })
    .await;

    // Registrations and writes made on the client land on the server.
    eventually(20, "the client registers a service", || async {
        h.put(
            &client,
            "/v1/agent/service/register",
            r#"{"Name":"web","Port":80,"Check":{"TTL":"60s"}}"#,
        )
        .await
        .0 == 200
    })
    .await;
    assert_eq!(
        h.put(&client, "/v1/agent/check/pass/service:web", "")
            .await
            .0,
        200
    );
    assert_eq!(
        h.put(&client, "/v1/kv/from-client", "hi").await,
        (200, "true".into())
    );
    eventually(10, "the service is passing on the server", || async {
        h.get_json(&server, "/v1/health/service/web?passing")
            .await
            .as_array()
            .is_some_and(|a| a.len() == 1 && a[0]["Node"]["Node"] == "cli")
    })
    .await;
    // Reads on the client come from its replica.
    eventually(10, "the client reads the server's data", || async {
        h.call(reqwest::Method::GET, &client, "/v1/kv/from-client?raw", "")
            .await
            == (200, "hi".to_string())
    })
    .await;
    let info = client.cli(&["info"]);
    let text = String::from_utf8_lossy(&info.stdout);
    assert!(info.status.success(), "{text}");
    assert!(text.contains("\tserver = false"), "{text}");
    assert!(
        !text.contains("raft:"),
        "a client prints no raft section:\n{text}"
    );

    // Lost on the servers: anti-entropy puts it back.
    assert_eq!(
        h.put(
            &server,
            "/v1/catalog/deregister",
            r#"{"Node":"cli","ServiceID":"web"}"#
        )
        .await
        .0,
        200
    );
    eventually(20, "the deregistered service reappears", || async {
        h.get_json(&server, "/v1/catalog/service/web")
            .await
            .as_array()
            .is_some_and(|a| a.len() == 1)
    })
    .await;
    // The client's replica may trail the server by a moment.
    eventually(10, "the client sees the check again", || async {
        h.put(&client, "/v1/agent/check/pass/service:web", "")
            .await
            .0
            == 200
    })
    .await;
    eventually(10, "passing again", || async {
        h.get_json(&server, "/v1/health/service/web?passing")
            .await
            .as_array()
            .is_some_and(|a| a.len() == 1)
    })
    .await;

    // A client that stops answering: serfHealth critical, out of ?passing.
    drop(client);
    eventually(20, "the silent client's serfHealth is critical", || async {
        h.get_json(&server, "/v1/health/node/cli")
            .await
            .as_array()
            .is_some_and(|a| {
                a.iter().any(|c| {
                    c["CheckID"] == "serfHealth"
                        && c["Status"] == "critical"
                        && c["Output"] == "Agent not live or unreachable"
                })
            })
    })
    .await;
    assert_eq!(
        h.get_json(&server, "/v1/health/service/web?passing").await,
        serde_json::json!([])
    );
    let members = h.get_json(&server, "/v1/agent/members").await;
    assert!(
        members
            .as_array()
            .is_some_and(|a| a.iter().any(|m| m["Name"] == "cli" && m["Status"] == 4)),
        "{members}"
    );
}
