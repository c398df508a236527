//! pilotfish in a `FROM scratch` image finds no CA certificates anywhere.
//! Plain HTTP needs none: the agent serves, forms its cluster and runs HTTP
//! checks, and the supervisor's client talks to it.

#[allow(dead_code, unused_imports)]
mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::Duration;

use common::agent::Agent;

#[test]
fn an_agent_without_trust_roots_serves_and_runs_http_checks() {
    let agent = Agent::dev()
        .env("SSL_CERT_FILE", Some("/nonexistent/ca.pem"))
        .env("SSL_CERT_DIR", Some("/nonexistent"))
        .wait_for_leader()
        .start();
    let backend = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = backend.local_addr().expect("addr");
    std::thread::spawn(move || {
        for conn in backend.incoming() {
            let Ok(mut c) = conn else { continue };
            let mut buf = [0u8; 1024];
            let _ = c.read(&mut buf);
            let _ =
                c.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
        }
    });
    let body = format!(
        r#"{{"Name":"web","Port":{},"Check":{{"HTTP":"http://{addr}/","Interval":"1s"}}}}"#,
        addr.port()
    );
    let (status, _, answer) = agent
        .request("PUT", "/v1/agent/service/register", body.as_bytes())
        .expect("agent answers");
    assert_eq!(status, 200, "{}", common::text(&answer));
    common::eventually("the HTTP check passes", Duration::from_secs(20), || {
        let (_, _, body) = agent
            .request("GET", "/v1/health/service/web?passing", b"")
            .map_err(|e| e.to_string())?;
        let v: serde_json::Value = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
        if v.as_array().is_some_and(|a| a.len() == 1) {
            Ok(())
        } else {
            Err(common::text(&body))
        }
    });
}
