//! The autopilot pattern end to end: a `pilotfish run` supervisor registers
//! its service jobs with a real agent (`pilotfish agent --dev`) through the
//! Consul HTTP API, heartbeats and fails them, re-registers after the agent
//! lost them, uses the agent's maintenance API, deregisters on shutdown, and
//! turns blocking queries into `watch.<name>` events.

#[allow(dead_code, unused_imports)]
mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use common::agent::{free_port, Agent};
use common::runner::{read, wait_for, Pilotfish};

fn get_json(agent: &Agent, path: &str) -> Value {
    let (status, _, body) = agent.request("GET", path, b"").expect("agent answers");
    assert_eq!(status, 200, "{path}: {}", common::text(&body));
    serde_json::from_slice(&body).expect("JSON")
}

fn put(agent: &Agent, path: &str, body: &str) {
    let (status, _, answer) = agent
        .request("PUT", path, body.as_bytes())
        .expect("agent answers");
    assert_eq!(status, 200, "{path}: {}", common::text(&answer));
}

fn passing(agent: &Agent, service: &str) -> Vec<Value> {
    get_json(agent, &format!("/v1/health/service/{service}?passing"))
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn hostname() -> String {
    nix::unistd::gethostname()
        .expect("hostname")
        .into_string()
        .expect("UTF-8 hostname")
}

/// Lines in a file the event jobs append to.
fn count(path: &Path) -> usize {
    read(path).lines().count()
}

/// A config whose `[consul]` table points at `agent`, then `rest`.
fn config_for(agent: &Agent, rest: &str) -> String {
    format!("[consul]\naddress = \"{}\"\n{rest}", agent.http)
}

fn wait_until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
    start.elapsed()
}

#[test]
fn a_service_job_registers_fails_recovers_survives_an_agent_restart_and_leaves() {
    let agent = Agent::dev().start();
    let (http, dns, server) = (agent.http.port(), agent.dns, agent.server_port);
    let config = config_for(
        &agent,
        r#"

[[jobs]]
name = "web"
exec = ["sleep", "1000"]
port = 8080
interfaces = ["static:127.0.0.1"]
tags = ["rest"]
meta = { version = "2" }
[jobs.health]
exec = ["test", "-f", "{dir}/healthy"]
interval = "300ms"
ttl = "10s"

[[jobs]]
name = "env"
exec = ["sh", "-c", "env > {dir}/env.txt; sleep 1000"]
"#,
    );
    let mut pf = Pilotfish::start(&config);
    let dir = pf.dir().to_path_buf();
    let id = format!("web-{}", hostname());

    // Absent until the first passing check, then passing with every field.
    std::thread::sleep(Duration::from_millis(800));
    assert!(passing(&agent, "web").is_empty());
    std::fs::write(dir.join("healthy"), "").expect("touch");
    wait_for("web passing", || passing(&agent, "web").len() == 1);
    let entry = &passing(&agent, "web")[0];
    assert_eq!(entry["Service"]["ID"], id.as_str());
    assert_eq!(entry["Service"]["Address"], "127.0.0.1");
    assert_eq!(entry["Service"]["Port"], 8080);
    assert_eq!(entry["Service"]["Tags"], serde_json::json!(["rest"]));
    assert_eq!(entry["Service"]["Meta"]["version"], "2");
    let check = entry["Checks"]
        .as_array()
        .expect("checks")
        .iter()
        .find(|c| c["CheckID"] == format!("service:{id}").as_str())
        .expect("the TTL check service:<id>")
        .clone();
    assert_eq!(check["Type"], "ttl");
    assert_eq!(check["Status"], "passing");

    // Every job sees where the agent and the service are.
    wait_for("env dump", || {
        read(&dir.join("env.txt")).contains("PILOTFISH_WEB_PORT")
    });
    let env = read(&dir.join("env.txt"));
    assert!(env.contains("PILOTFISH_WEB_IP=127.0.0.1\n"), "{env}");
    assert!(env.contains("PILOTFISH_WEB_PORT=8080\n"), "{env}");
    assert!(
        env.contains(&format!("CONSUL_HTTP_ADDR=http://{}\n", agent.http)),
        "{env}"
    );

    // A failing check turns the service critical at once, with its output.
    std::fs::remove_file(dir.join("healthy")).expect("rm");
    wait_until("web critical", Duration::from_secs(3), || {
        passing(&agent, "web").is_empty()
    });
    let checks = get_json(&agent, "/v1/health/checks/web");
    let check = &checks[0];
    assert_eq!(check["Status"], "critical");
    assert!(
        check["Output"]
            .as_str()
            .unwrap_or_default()
            .contains("exited with status 1"),
        "{check}"
    );
    // Still registered: only out of ?passing.
    assert_eq!(
        get_json(&agent, "/v1/catalog/service/web")
            .as_array()
            .map(Vec::len),
        Some(1)
    );
    std::fs::write(dir.join("healthy"), "").expect("touch");
    wait_for("web passing again", || passing(&agent, "web").len() == 1);

    // Maintenance through the agent's API: registered, but not passing.
    let out = pf.cli(&["maintenance", "enable"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for("maintenance check", || {
        get_json(&agent, "/v1/agent/checks")
            .as_object()
            .is_some_and(|m| m.contains_key(&format!("_service_maintenance:{id}")))
    });
    assert!(passing(&agent, "web").is_empty());
    assert_eq!(
        get_json(&agent, "/v1/catalog/service/web")
            .as_array()
            .map(Vec::len),
        Some(1)
    );
    let status = pf.status_json();
    assert_eq!(status["services"][0]["state"], "maintenance", "{status}");
    let out = pf.cli(&["maintenance", "disable"]);
    assert!(out.status.success());
    wait_for("web passing after maintenance", || {
        passing(&agent, "web").len() == 1
    });

    // The agent restarts and forgets everything (a --dev agent keeps
    // nothing): pilotfish registers again by itself at the next heartbeat.
    drop(agent);
    std::thread::sleep(Duration::from_secs(1));
    let agent = Agent::dev().ports(http, dns, server).start();
    let took = wait_until(
        "re-registration after the agent restart",
        Duration::from_secs(10),
        || passing(&agent, "web").len() == 1,
    );
    eprintln!("re-registered {took:?} after the agent answered again");
    assert!(pf.log().contains("registering again"), "{}", pf.log());

    // A clean shutdown leaves nothing behind.
    pf.signal("TERM");
    let (status, log) = pf.wait(Duration::from_secs(20));
    assert!(status.success(), "{log}");
    assert_eq!(
        get_json(&agent, "/v1/catalog/service/web"),
        serde_json::json!([]),
        "{log}"
    );
    assert!(log.contains(&format!("service {id} deregistered")), "{log}");
}

#[test]
fn a_service_without_a_health_check_heartbeats_while_it_runs() {
    let agent = Agent::dev().start();
    let config = config_for(
        &agent,
        r#"

[[jobs]]
name = "plain"
exec = ["sh", "-c", "sleep 2; exit 3"]
port = 9000
interfaces = ["static:127.0.0.1"]
id = "plain-1"
restarts = "never"

# Keeps pilotfish running after plain has ended.
[[jobs]]
name = "keeper"
exec = ["sleep", "1000"]
"#,
    );
    let _pf = Pilotfish::start(&config);
    wait_for("plain passing", || passing(&agent, "plain").len() == 1);
    assert_eq!(passing(&agent, "plain")[0]["Service"]["ID"], "plain-1");
    // The process ends: critical at once, not after the TTL.
    wait_until("plain critical", Duration::from_secs(5), || {
        passing(&agent, "plain").is_empty()
    });
    let checks = get_json(&agent, "/v1/health/checks/plain");
    assert!(
        checks[0]["Output"]
            .as_str()
            .unwrap_or_default()
            .contains("exited with status 3"),
        "{checks}"
    );
}

#[test]
fn watches_fire_once_per_real_change_and_survive_an_agent_outage() {
    let agent = Agent::dev().start();
    let (http, dns, server) = (agent.http.port(), agent.dns, agent.server_port);
    let config = config_for(
        &agent,
        r#"

[[watches]]
name = "backend"

[[watches]]
name = "flag"
key = "config/flag"

[[jobs]]
name = "on-changed"
exec = ["sh", "-c", "echo x >> {dir}/changed"]
when = { source = "watch.backend", each = "changed" }

[[jobs]]
name = "on-healthy"
exec = ["sh", "-c", "echo x >> {dir}/healthy"]
when = { source = "watch.backend", each = "healthy" }

[[jobs]]
name = "on-unhealthy"
exec = ["sh", "-c", "echo x >> {dir}/unhealthy"]
when = { source = "watch.backend", each = "unhealthy" }

[[jobs]]
name = "on-flag"
exec = ["sh", "-c", "echo x >> {dir}/flag"]
when = { source = "watch.flag", each = "changed" }
"#,
    );
    let mut pf = Pilotfish::start(&config);
    let dir = pf.dir().to_path_buf();
    let (changed, healthy, unhealthy, flag) = (
        dir.join("changed"),
        dir.join("healthy"),
        dir.join("unhealthy"),
        dir.join("flag"),
    );
    let counts = || {
        (
            count(&changed),
            count(&healthy),
            count(&unhealthy),
            count(&flag),
        )
    };
    let settle = || std::thread::sleep(Duration::from_millis(700));

    // Empty at start: one `unhealthy`, nothing else.
    wait_for("the initial unhealthy", || count(&unhealthy) == 1);
    settle();
    assert_eq!(counts(), (0, 0, 1, 0));

    let register = |id: &str, port: u16| {
        put(
            &agent,
            "/v1/agent/service/register",
            &format!(
                r#"{{"ID":"{id}","Name":"backend","Address":"127.0.0.2","Port":{port},"Check":{{"TTL":"60s","Status":"passing"}}}}"#
            ),
        )
    };
    register("b1", 5000);
    wait_for("changed and healthy", || counts() == (1, 1, 1, 0));

    // A health check's output changes Consul's index, not the instances.
    put(
        &agent,
        "/v1/agent/check/update/service:b1",
        r#"{"Status":"passing","Output":"something new"}"#,
    );
    settle();
    assert_eq!(counts(), (1, 1, 1, 0));

    register("b2", 5001);
    wait_for("second instance", || counts() == (2, 1, 1, 0));

    put(&agent, "/v1/agent/service/deregister/b1", "");
    wait_for("one left", || counts() == (3, 1, 1, 0));
    put(&agent, "/v1/agent/service/deregister/b2", "");
    wait_for("none left", || counts() == (4, 1, 2, 0));

    // KV: the value changing fires, the same value written again does not.
    put(&agent, "/v1/kv/config/flag", "on");
    wait_for("flag changed", || count(&flag) == 1);
    put(&agent, "/v1/kv/config/flag", "on");
    settle();
    assert_eq!(count(&flag), 1);
    put(&agent, "/v1/kv/config/flag", "off");
    wait_for("flag changed again", || count(&flag) == 2);

    // The agent is gone for 10 s: no event, no exit, one log line per watch.
    let before = counts();
    drop(agent);
    std::thread::sleep(Duration::from_secs(10));
    assert!(matches!(pf.child.try_wait(), Ok(None)), "{}", pf.log());
    assert_eq!(counts(), before);
    let agent = Agent::dev().ports(http, dns, server).start();
    // The new agent is empty: the watch answers with what it had (no
    // instances, no key) — the key is gone, which is a change.
    wait_for("the flag watch sees the key gone", || count(&flag) == 3);
    settle();
    assert_eq!(counts().0, before.0);
    assert_eq!(counts().2, before.2);
    wait_for("the backend watch answered again", || {
        pf.log().contains("watch backend: the agent at")
    });
    assert_eq!(counts().0, before.0);
    assert_eq!(counts().2, before.2);
    let log = pf.log();
    let outage_lines = log
        .lines()
        .filter(|l| l.contains("watch backend") && l.contains("retrying with backoff"))
        .count();
    assert_eq!(outage_lines, 1, "{log}");

    let status = pf.status_json();
    let watches = status["watches"].as_array().expect("watches");
    assert_eq!(watches.len(), 2, "{status}");
    assert_eq!(watches[0]["name"], "backend");
    assert_eq!(watches[0]["instances"], 0);
    drop(agent);
    let _ = free_port("127.0.0.1");
}

/// config-examples/app.toml as shipped, driven by its environment variables:
/// the app registers through its coprocess client agent into a real server,
/// telemetry registers too, the backend watch runs its job, and a SIGTERM
/// leaves nothing in the catalog because services leave before any job
/// stops and the agent stops after the app.
#[test]
fn the_app_example_registers_through_its_coprocess_agent_and_leaves_nothing_behind() {
    let (server_ip, agent_ip) = ("127.0.78.1", "127.0.78.2");
    let server_port = free_port(server_ip);
    let data = tempfile::tempdir().expect("tempdir");
    let server = Agent::on(server_ip)
        .args(["--server", "--bootstrap-expect", "1", "--bind", server_ip])
        .args(["--encrypt", common::CLUSTER_KEY, "--node", "server1"])
        .arg("--data-dir")
        .arg(data.path())
        .server_port(server_port)
        .wait_for_leader()
        .start();
    let app_port = free_port(agent_ip);
    let telemetry_port = free_port(agent_ip);
    let example = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("config-examples/app.toml"),
    )
    .expect("config-examples/app.toml");
    // The only edits: the ports a shared test machine cannot promise, and the
    // control socket (the harness adds its own).
    let config = example
        .replace("8000", &app_port.to_string())
        .replace("port = 9090", &format!("port = {telemetry_port}"))
        .replace(
            "[control]\nsocket = \"${PILOTFISH_SOCKET:-/var/run/pilotfish.sock}\"\n",
            "",
        );
    let http_port = free_port(agent_ip);
    let env = [
        format!("CONSUL={server_ip}"),
        format!("PILOTFISH_ENCRYPT={}", common::CLUSTER_KEY),
        format!("CONSUL_SERVER_PORT={server_port}"),
        format!("CONSUL_AGENT_BIND={agent_ip}"),
        format!("CONSUL_AGENT_CLIENT={agent_ip}"),
        format!("CONSUL_AGENT_HTTP_PORT={http_port}"),
        format!("CONSUL_AGENT_DNS_PORT={}", free_port(agent_ip)),
        format!(
            "CONSUL_AGENT_DATA_DIR={}",
            data.path().join("agent").display()
        ),
        format!("APP_INTERFACE=static:{agent_ip}"),
    ];
    let mut prefix = vec!["env".to_string()];
    prefix.extend(env);
    let prefix: Vec<&str> = prefix.iter().map(String::as_str).collect();
    let mut pf = Pilotfish::start_with(&config, &prefix);

    wait_until("app passing on the server", Duration::from_secs(60), || {
        passing(&server, "app").len() == 1
    });
    let entry = &passing(&server, "app")[0];
    assert_eq!(entry["Service"]["Address"], agent_ip);
    assert_eq!(entry["Service"]["Port"], app_port);
    assert_eq!(entry["Node"]["Node"], hostname(), "{entry}");
    wait_for("the telemetry service", || {
        passing(&server, "pilotfish").len() == 1
    });
    assert_eq!(
        passing(&server, "pilotfish")[0]["Service"]["Port"],
        telemetry_port
    );

    put(
        &server,
        "/v1/catalog/register",
        r#"{"Node":"db1","Address":"10.9.9.9","Service":{"Service":"backend","Port":5432}}"#,
    );
    wait_for("the backend watch's job", || {
        pf.log().contains("backend changed")
    });

    pf.signal("TERM");
    let (status, log) = pf.wait(Duration::from_secs(30));
    assert!(status.success(), "{log}");
    for service in ["app", "pilotfish"] {
        assert_eq!(
            get_json(&server, &format!("/v1/catalog/service/{service}")),
            serde_json::json!([]),
            "{service} left behind:\n{log}"
        );
    }
    // Deregistered first, then the app stopped, the agent last.
    let at = |needle: &str| {
        log.find(needle)
            .unwrap_or_else(|| panic!("no {needle:?} in:\n{log}"))
    };
    let deregistered = at(&format!("service app-{} deregistered", hostname()));
    let app_stopped = at("job app: its process was killed by signal 15");
    let agent_stopped = at("job consul-agent: its process exited with status 0");
    assert!(
        deregistered < app_stopped && app_stopped < agent_stopped,
        "{log}"
    );
}

/// config-examples/quickstart.toml (the README's run command) as shipped,
/// on ports a shared machine can give: the embedded server as a coprocess,
/// the demo app registered and passing, answered by DNS, the watch logging.
#[test]
fn the_quickstart_runs_the_whole_pattern_with_nothing_installed() {
    let ip = "127.0.0.1";
    let (http, dns, server, app) = (free_port(ip), free_port(ip), free_port(ip), free_port(ip));
    let example = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("config-examples/quickstart.toml"),
    )
    .expect("config-examples/quickstart.toml");
    let config = example
        .replace("8500", &http.to_string())
        .replace("8600", &dns.to_string())
        .replace("8300", &server.to_string())
        .replace("8080", &app.to_string())
        .replace(
            "[control]\nsocket = \"${PILOTFISH_SOCKET:-/tmp/pilotfish-quickstart.sock}\"\n",
            "",
        );
    let mut pf = Pilotfish::start_with(&config, &[]);
    let addr: std::net::SocketAddr = format!("{ip}:{http}").parse().expect("addr");
    wait_until("the app passing", Duration::from_secs(60), || {
        common::http(addr, "GET", "/v1/health/service/app?passing", b"").is_ok_and(|(s, _, b)| {
            s == 200
                && serde_json::from_slice::<Value>(&b)
                    .is_ok_and(|v| v.as_array().is_some_and(|a| a.len() == 1))
        })
    });
    let out = std::process::Command::new("dig")
        .args([
            "+short",
            "-p",
            &dns.to_string(),
            "@127.0.0.1",
            "app.service.consul",
            "SRV",
        ])
        .output()
        .expect("dig");
    let srv = String::from_utf8_lossy(&out.stdout);
    assert!(srv.contains(&format!(" {app} ")), "{srv}");
    wait_for("the watch's job", || {
        pf.log().contains("app instances changed")
    });
    pf.signal("TERM");
    let (status, log) = pf.wait(Duration::from_secs(30));
    assert!(status.success(), "{log}");
}

/// A service job that a reload adds registers like one present at start;
/// one that a reload removes leaves the catalog.
#[test]
fn reload_adds_and_removes_registrations() {
    let agent = Agent::dev().start();
    let keeper = r#"
[[jobs]]
name = "keeper"
exec = ["sleep", "1000"]
"#;
    let added = r#"
[[jobs]]
name = "late"
exec = ["sleep", "1000"]
port = 9100
interfaces = ["static:127.0.0.1"]
"#;
    let pf = Pilotfish::start(&config_for(&agent, keeper));
    pf.wait_ready();
    common::runner::write_config(pf.dir(), &config_for(&agent, &format!("{keeper}{added}")));
    let out = pf.cli(&["reload"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for("late passing", || passing(&agent, "late").len() == 1);
    common::runner::write_config(pf.dir(), &config_for(&agent, keeper));
    let out = pf.cli(&["reload"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for("late gone from the catalog", || {
        get_json(&agent, "/v1/catalog/service/late") == serde_json::json!([])
    });
}
