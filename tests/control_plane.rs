//! Control plane and telemetry at library level: the real control server on a tempdir
//! socket and the real telemetry server on 127.0.0.1:0, driven by the real client and by
//! raw hyper requests. A small fake supervisor answers the `ControlRequest`s; it stands
//! in for the supervisor only so that the HTTP layer can be tested on its own.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::collections::BTreeMap;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use metrics_exporter_prometheus::PrometheusHandle;
use pilotfish::config::{MetricDef, MetricKind};
use pilotfish::control::client::{self, ClientCommand, ClientError};
use pilotfish::control::{
    server, ControlRequest, JobStatus, MetricValue, ReloadSummary, ServiceStatus, StatusSnapshot,
    WatchStatus,
};
use pilotfish::telemetry::{self, UserMetrics};
use tokio::net::UnixStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

// ---------------------------------------------------------------- harness

/// Every user metric any test uses: the recorder is process-global and installed once.
fn defs() -> Vec<MetricDef> {
    let def = |name: &str, kind, buckets: Option<Vec<f64>>| MetricDef {
        name: name.to_owned(),
        kind,
        help: format!("test metric {name}"),
        buckets,
    };
    vec![
        def("cp_counter", MetricKind::Counter, None),
        def("cp_gauge", MetricKind::Gauge, None),
        def("um_count", MetricKind::Counter, None),
        def("um_frac", MetricKind::Counter, None),
        def("um_level", MetricKind::Gauge, None),
        def("um_atomic", MetricKind::Gauge, None),
        def(
            "um_latency",
            MetricKind::Histogram,
            Some(vec![0.5, 1.0, 5.0]),
        ),
        def("tm_requests", MetricKind::Counter, None),
    ]
}

fn recorder() -> PrometheusHandle {
    telemetry::install_recorder(&defs())
}

fn snapshot(maintenance: bool) -> StatusSnapshot {
    StatusSnapshot {
        version: "9.9.9-test".into(),
        maintenance,
        jobs: vec![
            JobStatus {
                name: "web".into(),
                state: "running".into(),
                pid: Some(4242),
                runs: 3,
                restarts: 2,
                last_exit: Some(143),
                health: Some("healthy".into()),
                port: Some(8080),
            },
            JobStatus {
                name: "setup".into(),
                state: "completed".into(),
                pid: None,
                runs: 1,
                restarts: 0,
                last_exit: Some(0),
                health: None,
                port: None,
            },
        ],
        services: vec![ServiceStatus {
            name: "web".into(),
            id: "web-host".into(),
            state: "passing".into(),
            address: Some("10.0.0.5:8080".into()),
            ..ServiceStatus::default()
        }],
        watches: vec![WatchStatus {
            name: "db".into(),
            target: "service db".into(),
            instances: Some(2),
            ..WatchStatus::default()
        }],
        templates: Vec::new(),
    }
}

/// What the fake supervisor saw and how it answers reloads.
#[derive(Default)]
struct Seen {
    env: BTreeMap<String, Option<String>>,
    maintenance: Option<bool>,
    reload_errors: Option<Vec<String>>,
}

/// Answers control requests like the supervisor would, recording what it was told;
/// metrics go through a real `UserMetrics`.
fn spawn_fake_supervisor(
    mut rx: mpsc::Receiver<ControlRequest>,
    seen: Arc<Mutex<Seen>>,
) -> JoinHandle<()> {
    let metrics = UserMetrics::new(&defs());
    tokio::spawn(async move {
        while let Some(request) = rx.recv().await {
            match request {
                ControlRequest::PutEnv { vars, reply } => {
                    seen.lock().unwrap().env.extend(vars);
                    let _ = reply.send(());
                }
                ControlRequest::Reload { reply } => {
                    let errors = seen.lock().unwrap().reload_errors.clone();
                    let _ = reply.send(match errors {
                        Some(e) => Err(e),
                        None => Ok(ReloadSummary {
                            unchanged: vec!["db".into()],
                            started: vec!["worker".into()],
                            stopped: vec![],
                            restarted: vec!["web".into()],
                        }),
                    });
                }
                ControlRequest::Maintenance { enable, reply } => {
                    seen.lock().unwrap().maintenance = Some(enable);
                    let _ = reply.send(());
                }
                ControlRequest::PutMetric { values, reply } => {
                    let _ = reply.send(metrics.apply(&values));
                }
                ControlRequest::Status { reply } => {
                    let m = seen.lock().unwrap().maintenance.unwrap_or(false);
                    let _ = reply.send(snapshot(m));
                }
            }
        }
    })
}

struct Control {
    _dir: tempfile::TempDir,
    socket: PathBuf,
    seen: Arc<Mutex<Seen>>,
    shutdown: CancellationToken,
    server: Option<JoinHandle<std::io::Result<()>>>,
}

impl Control {
    async fn start() -> Control {
        recorder();
        let dir = tempfile::tempdir().unwrap();
        // A parent that does not exist yet: bind must create it.
        let socket = dir.path().join("run").join("pilotfish.sock");
        let (tx, rx) = mpsc::channel(16);
        let seen = Arc::new(Mutex::new(Seen::default()));
        spawn_fake_supervisor(rx, seen.clone());
        let listener = server::bind(&socket).unwrap();
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(server::serve(
            listener,
            socket.clone(),
            tx,
            shutdown.clone(),
        ));
        Control {
            _dir: dir,
            socket,
            seen,
            shutdown,
            server: Some(server),
        }
    }

    async fn run(&self, cmd: ClientCommand) -> Result<String, ClientError> {
        client::run(&self.socket, cmd).await
    }

    async fn raw(&self, method: Method, path: &str, body: &[u8]) -> (StatusCode, String) {
        raw(&self.socket, method, path, body.to_vec()).await
    }

    async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(server) = self.server.take() {
            server.await.unwrap().unwrap();
        }
    }
}

impl Drop for Control {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// One raw HTTP/1.1 request on the Unix socket.
async fn raw(socket: &Path, method: Method, path: &str, body: Vec<u8>) -> (StatusCode, String) {
    let stream = UnixStream::connect(socket).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "localhost")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8(body.to_vec()).unwrap())
}

/// The value on the unlabelled sample line `name value` of a Prometheus rendering.
fn sample(rendered: &str, name: &str) -> Option<f64> {
    rendered.lines().find_map(|line| {
        let (n, v) = line.split_once(' ')?;
        (n == name).then(|| v.parse().ok())?
    })
}

// ---------------------------------------------------------------- control endpoints

#[tokio::test]
async fn ping_prints_ok_and_accepts_any_method() {
    let c = Control::start().await;
    assert_eq!(c.run(ClientCommand::Ping).await.unwrap(), "ok");
    for method in [Method::GET, Method::POST, Method::PUT, Method::DELETE] {
        assert_eq!(
            c.raw(method.clone(), "/v3/ping", b"").await,
            (StatusCode::OK, "\n".to_owned()),
            "{method}"
        );
    }
    c.stop().await;
}

#[tokio::test]
async fn status_as_json_and_as_table() {
    let c = Control::start().await;
    let json = c.run(ClientCommand::Status { json: true }).await.unwrap();
    let parsed: StatusSnapshot = serde_json::from_str(&json).unwrap();
    assert_eq!(parsed, snapshot(false));

    let table = c.run(ClientCommand::Status { json: false }).await.unwrap();
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        [
            "NAME",
            "STATE",
            "PID",
            "RUNS",
            "RESTARTS",
            "LAST-EXIT",
            "HEALTH"
        ]
    );
    assert_eq!(
        lines[1].split_whitespace().collect::<Vec<_>>(),
        ["web", "running", "4242", "3", "2", "143", "healthy"]
    );
    assert_eq!(
        lines[2].split_whitespace().collect::<Vec<_>>(),
        ["setup", "completed", "-", "1", "0", "0", "-"]
    );
    assert!(table.contains("maintenance off"), "{table}");
    let rows: Vec<Vec<&str>> = table
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert!(
        rows.contains(&vec![
            "web",
            "web-host",
            "passing",
            "10.0.0.5:8080",
            "-",
            "ok"
        ]),
        "{table}"
    );
    assert!(
        rows.contains(&vec!["db", "service", "db", "2", "-", "ok"]),
        "{table}"
    );

    let (code, body) = c.raw(Method::GET, "/v3/status", b"").await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(
        serde_json::from_str::<StatusSnapshot>(&body).unwrap(),
        snapshot(false)
    );
    c.stop().await;
}

#[tokio::test]
async fn putenv_sets_values_split_on_first_equals_and_unsets() {
    let c = Control::start().await;
    let out = c
        .run(ClientCommand::PutEnv(vec![
            "DSN=postgres://u:p@h/db?sslmode=require".into(),
            "EMPTY=".into(),
        ]))
        .await
        .unwrap();
    assert_eq!(out, "");
    c.run(ClientCommand::UnsetEnv(vec!["OLD".into()]))
        .await
        .unwrap();
    let env = c.seen.lock().unwrap().env.clone();
    assert_eq!(
        env.get("DSN"),
        Some(&Some("postgres://u:p@h/db?sslmode=require".to_owned()))
    );
    assert_eq!(env.get("EMPTY"), Some(&Some(String::new())));
    assert_eq!(env.get("OLD"), Some(&None));

    // ContainerPilot's wire format, byte for byte.
    let (code, body) = c
        .raw(Method::POST, "/v3/environ", br#"{"A":"1","B":null}"#)
        .await;
    assert_eq!((code, body.as_str()), (StatusCode::OK, "\n"));
    assert_eq!(c.seen.lock().unwrap().env.get("B"), Some(&None));
    c.stop().await;
}

#[tokio::test]
async fn putenv_without_equals_fails_before_connecting() {
    // No server at this path: the argument error must come first.
    let dir = tempfile::tempdir().unwrap();
    let err = client::run(
        &dir.path().join("none.sock"),
        ClientCommand::PutEnv(vec!["GOOD=1".into(), "NOEQUALS".into()]),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, ClientError::BadArgument { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("\"NOEQUALS\""), "{msg}");
    assert!(msg.contains("NOEQUALS=VALUE"), "{msg}");

    let err = client::run(
        &dir.path().join("none.sock"),
        ClientCommand::PutMetric(vec!["=3".into()]),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, ClientError::BadArgument { .. }), "{err:?}");
}

#[tokio::test]
async fn environ_rejects_bad_json_and_bad_values_with_422() {
    let c = Control::start().await;
    let (code, body) = c.raw(Method::POST, "/v3/environ", b"{not json").await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(body.contains("not valid JSON"), "{body}");

    let (code, body) = c.raw(Method::POST, "/v3/environ", b"[1,2]").await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(body.contains("must be a JSON object"), "{body}");

    let (code, body) = c
        .raw(
            Method::POST,
            "/v3/environ",
            br#"{"PORT":8080,"DEBUG":true,"A=B":"x","OK":"fine"}"#,
        )
        .await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY);
    let lines: Vec<&str> = body.lines().collect();
    assert_eq!(lines.len(), 3, "{body}");
    assert!(body.contains("\"PORT\"") && body.contains("8080"), "{body}");
    assert!(body.contains("\"DEBUG\""), "{body}");
    assert!(body.contains("\"A=B\""), "{body}");
    // Nothing was applied, not even the good one.
    assert!(!c.seen.lock().unwrap().env.contains_key("OK"));
    c.stop().await;
}

#[tokio::test]
async fn reload_prints_changes_or_every_error() {
    let c = Control::start().await;
    let out = c.run(ClientCommand::Reload).await.unwrap();
    assert!(out.contains("started: worker"), "{out}");
    assert!(out.contains("restarted: web"), "{out}");
    assert!(out.contains("unchanged: db"), "{out}");
    assert!(!out.contains("stopped"), "{out}");

    let (code, body) = c.raw(Method::POST, "/v3/reload", b"").await;
    assert_eq!(code, StatusCode::OK);
    let summary: ReloadSummary = serde_json::from_str(&body).unwrap();
    assert_eq!(summary.started, ["worker"]);

    c.seen.lock().unwrap().reload_errors = Some(vec![
        "job \"web\": exec is empty".into(),
        "job \"db\": port 0 is invalid".into(),
    ]);
    let (code, body) = c.raw(Method::POST, "/v3/reload", b"").await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        body,
        "job \"web\": exec is empty\njob \"db\": port 0 is invalid\n"
    );
    let err = c.run(ClientCommand::Reload).await.unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("422"), "{msg}");
    assert!(
        msg.contains("exec is empty") && msg.contains("port 0 is invalid"),
        "{msg}"
    );
    c.stop().await;
}

#[tokio::test]
async fn maintenance_enable_and_disable() {
    let c = Control::start().await;
    let (code, body) = c.raw(Method::POST, "/v3/maintenance/enable", b"").await;
    assert_eq!((code, body.as_str()), (StatusCode::OK, "\n"));
    assert_eq!(c.seen.lock().unwrap().maintenance, Some(true));
    let out = c
        .run(ClientCommand::Maintenance { enable: false })
        .await
        .unwrap();
    assert_eq!(out, "maintenance disabled");
    assert_eq!(c.seen.lock().unwrap().maintenance, Some(false));
    c.run(ClientCommand::Maintenance { enable: true })
        .await
        .unwrap();
    let table = c.run(ClientCommand::Status { json: false }).await.unwrap();
    assert!(table.contains("maintenance on"), "{table}");
    c.stop().await;
}

#[tokio::test]
async fn putmetric_applies_values_and_reports_every_problem() {
    let c = Control::start().await;
    let handle = recorder();
    c.run(ClientCommand::PutMetric(vec![
        "cp_counter=2".into(),
        "cp_gauge=7.5".into(),
    ]))
    .await
    .unwrap();
    let rendered = handle.render();
    assert_eq!(sample(&rendered, "cp_counter"), Some(2.0), "{rendered}");
    assert_eq!(sample(&rendered, "cp_gauge"), Some(7.5), "{rendered}");

    // ContainerPilot's CLI sends strings.
    let (code, _) = c
        .raw(Method::POST, "/v3/metric", br#"{"cp_gauge":"3"}"#)
        .await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(sample(&handle.render(), "cp_gauge"), Some(3.0));

    let err = c
        .run(ClientCommand::PutMetric(vec![
            "nope=1".into(),
            "cp_gauge=abc".into(),
            "cp_counter=-1".into(),
        ]))
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("unknown metric \"nope\""), "{msg}");
    assert!(msg.contains("\"abc\""), "{msg}");
    assert!(msg.contains("-1"), "{msg}");
    assert_eq!(sample(&handle.render(), "cp_gauge"), Some(3.0));

    for bad in [
        &b"{oops"[..],
        b"[]",
        br#"{"cp_gauge":true}"#,
        br#"{"cp_gauge":null}"#,
    ] {
        let (code, body) = c.raw(Method::POST, "/v3/metric", bad).await;
        assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert!(!body.is_empty());
    }
    c.stop().await;
}

#[tokio::test]
async fn wrong_method_is_405_and_unknown_path_is_404() {
    let c = Control::start().await;
    for path in [
        "/v3/environ",
        "/v3/reload",
        "/v3/maintenance/enable",
        "/v3/maintenance/disable",
        "/v3/metric",
    ] {
        let (code, body) = c.raw(Method::GET, path, b"").await;
        assert_eq!(code, StatusCode::METHOD_NOT_ALLOWED, "{path}");
        assert!(body.contains("POST"), "{body}");
    }
    let (code, _) = c.raw(Method::POST, "/v3/status", b"").await;
    assert_eq!(code, StatusCode::METHOD_NOT_ALLOWED);
    // Nothing was asked of the supervisor by the refused requests.
    assert_eq!(c.seen.lock().unwrap().maintenance, None);

    for path in ["/v3/env", "/", "/v2/reload", "/v3/maintenance"] {
        let (code, _) = c.raw(Method::POST, path, b"").await;
        assert_eq!(code, StatusCode::NOT_FOUND, "{path}");
    }
    let err = c.run(ClientCommand::Ping).await;
    assert!(err.is_ok());
    c.stop().await;
}

#[tokio::test]
async fn body_over_one_mebibyte_is_413() {
    let c = Control::start().await;
    let mut body = br#"{"A":""#.to_vec();
    body.resize(server::BODY_LIMIT + 1, b'x');
    let (code, text) = c.raw(Method::POST, "/v3/environ", &body).await;
    assert_eq!(code, StatusCode::PAYLOAD_TOO_LARGE, "{text}");
    // Just under the limit is accepted.
    let mut body = br#"{"BIG":""#.to_vec();
    body.resize(server::BODY_LIMIT - 2, b'x');
    body.extend_from_slice(br#""}"#);
    let (code, text) = c.raw(Method::POST, "/v3/environ", &body).await;
    assert_eq!(code, StatusCode::OK, "{text}");
    c.stop().await;
}

#[tokio::test]
async fn requests_are_counted_by_route_and_code() {
    let c = Control::start().await;
    let handle = recorder();
    let count = |rendered: &str, path: &str, code: &str| {
        let want = format!("pilotfish_control_requests_total{{path=\"{path}\",code=\"{code}\"}} ");
        rendered
            .lines()
            .find_map(|l| l.strip_prefix(want.as_str()))
            .map_or(0.0, |v| v.parse::<f64>().unwrap())
    };
    let before = handle.render();
    c.raw(Method::GET, "/v3/status", b"").await;
    c.raw(Method::GET, "/v3/reload", b"").await;
    c.raw(Method::GET, "/no/such/path/123", b"").await;
    let after = handle.render();
    assert!(count(&after, "/v3/status", "200") >= count(&before, "/v3/status", "200") + 1.0);
    assert!(count(&after, "/v3/reload", "405") >= count(&before, "/v3/reload", "405") + 1.0);
    assert!(count(&after, "unknown", "404") >= count(&before, "unknown", "404") + 1.0);
    assert!(
        !after.contains("/no/such/path"),
        "raw paths must not become labels"
    );
    c.stop().await;
}

// ---------------------------------------------------------------- socket lifecycle

#[tokio::test]
async fn socket_is_mode_0600_and_removed_at_shutdown() {
    let c = Control::start().await;
    let socket = c.socket.clone();
    let meta = std::fs::metadata(&socket).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    c.stop().await;
    assert!(!socket.exists(), "socket file left behind");
}

#[tokio::test]
async fn stale_socket_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stale.sock");
    // A socket file nobody listens on, as left by a killed pilotfish.
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    assert!(path.exists());
    let listener = server::bind(&path).unwrap();
    let (tx, _rx) = mpsc::channel(1);
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(server::serve(listener, path.clone(), tx, shutdown.clone()));
    assert_eq!(client::run(&path, ClientCommand::Ping).await.unwrap(), "ok");
    shutdown.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn live_socket_is_refused_and_kept() {
    let c = Control::start().await;
    let err = server::bind(&c.socket).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse);
    let msg = err.to_string();
    assert!(msg.contains("another pilotfish is serving"), "{msg}");
    assert!(msg.contains(&c.socket.display().to_string()), "{msg}");
    // The first server still answers.
    assert_eq!(c.run(ClientCommand::Ping).await.unwrap(), "ok");
    c.stop().await;
}

#[tokio::test]
async fn non_socket_file_is_not_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("important.txt");
    std::fs::write(&path, "keep me").unwrap();
    let err = server::bind(&path).unwrap_err();
    assert!(err.to_string().contains("is not a socket"), "{err}");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "keep me");
}

#[tokio::test]
async fn unreachable_socket_names_path_and_fix() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("missing.sock");
    let err = client::run(&path, ClientCommand::Ping).await.unwrap_err();
    assert!(matches!(err, ClientError::Connect { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains(&path.display().to_string()), "{msg}");
    assert!(msg.contains("is pilotfish running?"), "{msg}");
    assert!(msg.contains("--socket or PILOTFISH_SOCKET"), "{msg}");
}

#[tokio::test]
async fn supervisor_gone_is_503() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gone.sock");
    let (tx, rx) = mpsc::channel(1);
    drop(rx);
    let listener = server::bind(&path).unwrap();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(server::serve(listener, path.clone(), tx, shutdown.clone()));
    let (code, body) = raw(&path, Method::POST, "/v3/reload", vec![]).await;
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body, "pilotfish is shutting down\n");
    let err = client::run(&path, ClientCommand::Status { json: true })
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("pilotfish is shutting down"),
        "{err}"
    );

    // A reply dropped without an answer is the same.
    let (tx, mut rx) = mpsc::channel::<ControlRequest>(1);
    tokio::spawn(async move {
        while let Some(request) = rx.recv().await {
            drop(request);
        }
    });
    shutdown.cancel();
    task.await.unwrap().unwrap();
    let listener = server::bind(&path).unwrap();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(server::serve(listener, path.clone(), tx, shutdown.clone()));
    let (code, _) = raw(&path, Method::POST, "/v3/maintenance/enable", vec![]).await;
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
    shutdown.cancel();
    task.await.unwrap().unwrap();
}

// ---------------------------------------------------------------- user metrics

#[tokio::test]
async fn user_metrics_unknown_name_lists_declared_names() {
    recorder();
    let m = UserMetrics::new(&defs());
    let errors = m
        .apply(&[("um_typo".into(), MetricValue::Number(1.0))])
        .unwrap_err();
    assert_eq!(errors.len(), 1);
    assert!(errors[0].contains("\"um_typo\""), "{}", errors[0]);
    assert!(
        errors[0].contains("um_count") && errors[0].contains("um_level"),
        "{}",
        errors[0]
    );

    let none = UserMetrics::new(&[]);
    let errors = none
        .apply(&[("x".into(), MetricValue::Number(1.0))])
        .unwrap_err();
    assert!(
        errors[0].contains("no metrics are declared"),
        "{}",
        errors[0]
    );
}

#[tokio::test]
async fn user_metrics_reject_bad_values_naming_metric_and_value() {
    recorder();
    let m = UserMetrics::new(&defs());
    let cases = [
        ("um_level", MetricValue::Text("fast".into()), "\"fast\""),
        ("um_level", MetricValue::Text("NaN".into()), "NaN"),
        ("um_level", MetricValue::Text("inf".into()), "inf"),
        ("um_level", MetricValue::Number(f64::INFINITY), "inf"),
        ("um_count", MetricValue::Number(-1.0), "-1"),
        ("um_count", MetricValue::Text("-0.5".into()), "-0.5"),
    ];
    for (name, value, shown) in cases {
        let errors = m
            .apply(&[(name.into(), value.clone())])
            .expect_err(&format!("{name}={value:?} must be refused"));
        assert_eq!(errors.len(), 1);
        assert!(errors[0].contains(name), "{}", errors[0]);
        assert!(errors[0].contains(shown), "{}", errors[0]);
    }
    // Negative gauges and histogram values are fine.
    m.apply(&[("um_level".into(), MetricValue::Number(-4.0))])
        .unwrap();
}

#[tokio::test]
async fn user_metrics_apply_all_or_nothing() {
    let handle = recorder();
    let m = UserMetrics::new(&defs());
    m.apply(&[("um_atomic".into(), MetricValue::Number(1.0))])
        .unwrap();
    let errors = m
        .apply(&[
            ("um_atomic".into(), MetricValue::Number(99.0)),
            ("um_count".into(), MetricValue::Number(-3.0)),
            ("bogus".into(), MetricValue::Number(1.0)),
        ])
        .unwrap_err();
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert_eq!(sample(&handle.render(), "um_atomic"), Some(1.0));
}

#[tokio::test]
async fn user_counter_accumulates_fractions_and_histogram_uses_buckets() {
    let handle = recorder();
    let m = UserMetrics::new(&defs());
    let rendered = handle.render();
    // Declared metrics show up before any value arrives.
    assert_eq!(sample(&rendered, "um_frac"), Some(0.0), "{rendered}");
    assert!(
        rendered.contains("# HELP um_frac test metric um_frac"),
        "{rendered}"
    );

    m.apply(&[("um_frac".into(), MetricValue::Number(0.5))])
        .unwrap();
    assert_eq!(sample(&handle.render(), "um_frac"), Some(0.0));
    m.apply(&[("um_frac".into(), MetricValue::Text("0.75".into()))])
        .unwrap();
    assert_eq!(sample(&handle.render(), "um_frac"), Some(1.0));
    m.apply(&[("um_frac".into(), MetricValue::Number(3.0))])
        .unwrap();
    assert_eq!(sample(&handle.render(), "um_frac"), Some(4.0));

    m.apply(&[
        ("um_latency".into(), MetricValue::Number(0.2)),
        ("um_latency".into(), MetricValue::Text("2".into())),
    ])
    .unwrap();
    let rendered = handle.render();
    assert!(
        rendered.contains("# TYPE um_latency histogram"),
        "{rendered}"
    );
    assert!(
        rendered.contains("um_latency_bucket{le=\"0.5\"} 1"),
        "{rendered}"
    );
    assert!(
        rendered.contains("um_latency_bucket{le=\"5\"} 2"),
        "{rendered}"
    );
    assert!(rendered.contains("um_latency_count 2"), "{rendered}");
}

// ---------------------------------------------------------------- telemetry server

struct Telemetry {
    base: String,
    shutdown: CancellationToken,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn start_telemetry() -> Telemetry {
    let handle = recorder();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("{}", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::channel(16);
    spawn_fake_supervisor(rx, Arc::new(Mutex::new(Seen::default())));
    let shutdown = CancellationToken::new();
    tokio::spawn(telemetry::serve(listener, handle, tx, shutdown.clone()));
    Telemetry { base, shutdown }
}

async fn http_get(addr: &str, method: Method, path: &str) -> (StatusCode, String, String) {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr)
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let status = response.status();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        content_type,
        String::from_utf8(body.to_vec()).unwrap(),
    )
}

#[tokio::test]
async fn telemetry_metrics_shows_user_metric_after_apply() {
    let t = start_telemetry().await;
    let m = UserMetrics::new(&defs());
    m.apply(&[("tm_requests".into(), MetricValue::Number(41.0))])
        .unwrap();
    m.apply(&[("tm_requests".into(), MetricValue::Text("1".into()))])
        .unwrap();
    telemetry::record_job_start("tm-job", true);
    let (code, content_type, body) = http_get(&t.base, Method::GET, "/metrics").await;
    assert_eq!(code, StatusCode::OK);
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    assert!(body.contains("# TYPE tm_requests counter"), "{body}");
    assert_eq!(sample(&body, "tm_requests"), Some(42.0), "{body}");
    assert!(
        body.contains("pilotfish_job_restarts_total{job=\"tm-job\"} 1"),
        "{body}"
    );
}

#[tokio::test]
async fn telemetry_status_is_json_snapshot() {
    let t = start_telemetry().await;
    let (code, content_type, body) = http_get(&t.base, Method::GET, "/status").await;
    assert_eq!(code, StatusCode::OK);
    assert!(
        content_type.starts_with("application/json"),
        "{content_type}"
    );
    let parsed: StatusSnapshot = serde_json::from_str(&body).unwrap();
    assert_eq!(parsed, snapshot(false));
}

#[tokio::test]
async fn telemetry_other_methods_are_405_and_paths_404() {
    let t = start_telemetry().await;
    for path in ["/metrics", "/status"] {
        let (code, _, _) = http_get(&t.base, Method::POST, path).await;
        assert_eq!(code, StatusCode::METHOD_NOT_ALLOWED, "{path}");
    }
    let (code, _, _) = http_get(&t.base, Method::GET, "/v3/status").await;
    assert_eq!(code, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn telemetry_stops_on_shutdown() {
    let handle = recorder();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, _rx) = mpsc::channel(1);
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(telemetry::serve(listener, handle, tx, shutdown.clone()));
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("telemetry server did not stop")
        .unwrap()
        .unwrap();
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}
