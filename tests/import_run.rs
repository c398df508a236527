//! A ContainerPilot 2.x image switched to pilotfish with one command, as a
//! migrating user does it: `pilotfish config import cp.json -- APP ARGS`,
//! `pilotfish config check` with and without the image's variables, then
//! `pilotfish run` of the result against `pilotfish agent --dev`: the hooks,
//! the application, the coprocess, the task and the sensor run, the service
//! and the telemetry endpoint register, a backend change runs onChange, and
//! SIGTERM runs preStop and postStop around the application's stop.

#[allow(dead_code, unused_imports)]
mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use common::agent::{free_port, Agent};
use common::runner::{read, wait_for, Pilotfish, BIN};

fn fixture(name: &str) -> String {
    format!(
        "{}/tests/fixtures/containerpilot/{name}",
        env!("CARGO_MANIFEST_DIR")
    )
}

fn get_json(agent: &Agent, path: &str) -> Value {
    let (status, _, body) = agent.request("GET", path, b"").expect("agent answers");
    assert_eq!(status, 200, "{path}: {}", common::text(&body));
    serde_json::from_slice(&body).expect("JSON")
}

fn count(text: &str, line: &str) -> usize {
    text.lines().filter(|l| *l == line).count()
}

#[test]
fn a_converted_2x_config_runs_its_jobs_and_registers_its_service() {
    let work = tempfile::tempdir().expect("tempdir");
    let dir = work.path();
    let log = dir.join("log");
    // The image's management script: every hook says it ran.
    let manage = dir.join("manage.sh");
    std::fs::write(
        &manage,
        format!(
            "#!/bin/sh\nLOG={log}\ncase \"$1\" in\n  health) exit 0 ;;\n  sensor) echo 7 ;;\n  coprocess) echo coprocess >> $LOG; exec sleep 1000 ;;\n  *) echo \"$1\" >> $LOG ;;\nesac\n",
            log = log.display()
        ),
    )
    .expect("write manage.sh");
    std::fs::set_permissions(&manage, std::fs::Permissions::from_mode(0o755)).expect("chmod");

    // One command converts it; the application comes after `--`.
    let app = format!("echo app >> {}; exec sleep 1000", log.display());
    let out = Command::new(BIN)
        .args(["config", "import", &fixture("v2-app.json"), "-o"])
        .arg(dir.join("pf.toml"))
        .args(["--", "sh", "-c", &app])
        .output()
        .expect("run import");
    let stderr = common::text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("ContainerPilot 2.x converted"), "{stderr}");
    assert!(
        stderr.contains("implicit: telemetry.service = \"containerpilot\""),
        "{stderr}"
    );
    let toml = std::fs::read_to_string(dir.join("pf.toml")).expect("converted file");

    // config check: valid with the image's defaults; a bad value names its key.
    let check = |env: &[(&str, &str)]| {
        Command::new(BIN)
            .args(["config", "check"])
            .arg(dir.join("pf.toml"))
            .env_remove("PORT")
            .envs(env.iter().copied())
            .output()
            .expect("run check")
    };
    let ok = check(&[]);
    assert!(ok.status.success(), "{}", common::text(&ok.stderr));
    assert!(common::text(&ok.stdout).contains("ok (8 jobs)"));
    let bad = check(&[("PORT", "eighty"), ("SERVICE_NAME", "no_underscores")]);
    assert_eq!(bad.status.code(), Some(64));
    let errs = common::text(&bad.stderr);
    assert!(
        errs.contains("jobs[1].port: \"eighty\" (from \"${PORT:-8080}\") is not a whole number"),
        "{errs}"
    );
    assert!(
        errs.contains("jobs[1].name: \"no_underscores\" has a port, so it is a service name"),
        "{errs}"
    );

    // Run it against a real agent.
    let agent = Agent::dev().start();
    let port = free_port("127.0.0.1");
    let telemetry = free_port("0.0.0.0");
    let mut pf = Pilotfish::start_with_env(
        &toml,
        &[
            ("CONSUL", &agent.http.to_string()),
            ("MANAGE", &manage.display().to_string()),
            ("SERVICE_NAME", "shop"),
            ("PORT", &port.to_string()),
            ("TELEMETRY_PORT", &telemetry.to_string()),
            ("LOG_LEVEL", "DEBUG"),
        ],
    );
    // preStart, then the application and the coprocess; the task repeats.
    wait_for("app, coprocess and two task runs", || {
        let l = read(&log);
        l.contains("app\n") && l.contains("coprocess\n") && count(&l, "task") >= 2
    });
    let l = read(&log);
    assert_eq!(l.lines().next(), Some("preStart"), "{l}");

    // The service registers under the name from the environment and passes.
    wait_for("shop passing", || {
        get_json(&agent, "/v1/health/service/shop?passing")
            .as_array()
            .is_some_and(|a| a.len() == 1)
    });
    let entry = &get_json(&agent, "/v1/health/service/shop?passing")[0];
    assert_eq!(entry["Service"]["Port"], port);
    assert_eq!(entry["Service"]["Tags"], serde_json::json!(["web", "v2"]));

    // The telemetry endpoint registers as ContainerPilot's did, and the
    // sensor's number reaches it.
    wait_for("containerpilot registered", || {
        get_json(&agent, "/v1/catalog/service/containerpilot")
            .as_array()
            .is_some_and(|a| a.len() == 1)
    });
    let svc = &get_json(&agent, "/v1/catalog/service/containerpilot")[0];
    assert_eq!(svc["ServicePort"], telemetry);
    let addr: std::net::SocketAddr = format!(
        "{}:{telemetry}",
        svc["ServiceAddress"].as_str().expect("address")
    )
    .parse()
    .expect("telemetry address");
    wait_for("the sensor's value", || {
        common::http(addr, "GET", "/metrics", b"")
            .map(|(_, _, body)| common::text(&body).contains("app_queue_depth 7"))
            .unwrap_or(false)
    });

    // A change of the backend runs onChange.
    let (status, _, _) = agent
        .request(
            "PUT",
            "/v1/agent/service/register",
            br#"{"Name":"db","ID":"db1","Port":5432}"#,
        )
        .expect("register db");
    assert_eq!(status, 200);
    wait_for("onChange", || read(&log).contains("onChange\n"));

    // SIGTERM: deregistered, preStop before the application stops, postStop after.
    pf.signal("TERM");
    let (_, output) = pf.wait(Duration::from_secs(20));
    let l = read(&log);
    let pos = |s: &str| l.lines().position(|x| x == s);
    let (pre_stop, post_stop) = (pos("preStop"), pos("postStop"));
    assert!(pre_stop.is_some() && post_stop > pre_stop, "{l}\n{output}");
    assert!(
        get_json(&agent, "/v1/catalog/service/shop")
            .as_array()
            .is_some_and(Vec::is_empty),
        "{output}"
    );
    // Logging went to stdout at the level the variable gave, in capitals.
    assert!(output.contains("DEBUG"), "{output}");
}
