//! `pilotfish config import` at the library level: real ContainerPilot configs
//! (autopilotpattern/consul, an autopilotpattern/nginx-style config, a JSON5-feature
//! config) converted, checked value by value, parsed back as `RawConfig`, and run
//! through pilotfish's full validation.

use pilotfish::config::import::{import_containerpilot, ImportError, Imported};
use pilotfish::config::raw::{RawConfig, RawEnabled, RawInt, RawJob, RawRestarts, StringOrList};
use pilotfish::config::{load_str, Restarts, Source, Trigger};

fn fixture(name: &str) -> String {
    let path = format!(
        "{}/tests/fixtures/containerpilot/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"))
}

fn import(name: &str) -> (Imported, RawConfig) {
    let out =
        import_containerpilot(&fixture(name)).unwrap_or_else(|e| panic!("importing {name}: {e}"));
    let raw: RawConfig = toml::from_str(&out.toml)
        .unwrap_or_else(|e| panic!("{name}: output is not a RawConfig: {e}\n{}", out.toml));
    (out, raw)
}

fn job<'a>(raw: &'a RawConfig, name: &str) -> &'a RawJob {
    raw.jobs
        .iter()
        .find(|j| j.name == name)
        .unwrap_or_else(|| panic!("no job {name}"))
}

fn argv(e: &Option<StringOrList>) -> Vec<&str> {
    match e {
        Some(StringOrList::Many(v)) => v.iter().map(String::as_str).collect(),
        other => panic!("expected an argv array, got {other:?}"),
    }
}

fn has_note(out: &Imported, prefix: &str, needle: &str) -> bool {
    out.notes
        .iter()
        .any(|n| n.starts_with(prefix) && n.contains(needle))
}

#[test]
fn autopilotpattern_consul() {
    let (out, raw) = import("consul.json5");
    assert_eq!(
        raw.consul.as_ref().and_then(|c| c.address.as_deref()),
        Some("http://127.0.0.1:8500")
    );
    let names: Vec<&str> = raw.jobs.iter().map(|j| j.name.as_str()).collect();
    assert_eq!(names, ["preStart", "consul", "consul", "preStop"]);

    assert_eq!(
        argv(&job(&raw, "preStart").exec),
        ["/usr/local/bin/consul-manage", "preStart"]
    );

    // The {{ if .CONSUL_DEV }} conditional: both branches, each enabled by it.
    let consul = &raw.jobs[1];
    assert_eq!(
        consul.enabled,
        Some(RawEnabled::One("${CONSUL_DEV:-} == ''".into()))
    );
    let dev = &raw.jobs[2];
    assert_eq!(
        dev.enabled,
        Some(RawEnabled::One("${CONSUL_DEV:-} != ''".into()))
    );
    assert_eq!(
        argv(&dev.exec),
        ["/bin/consul", "agent", "-dev", "-config-dir=/etc/consul"]
    );
    assert_eq!(
        argv(&consul.exec),
        [
            "/bin/consul",
            "agent",
            "-server",
            "-bootstrap-expect",
            "3",
            "-config-dir=/etc/consul",
            "-ui"
        ]
    );
    assert_eq!(consul.port, Some(RawInt::Int(8500)));
    let when = consul.when.as_ref().expect("consul.when");
    assert_eq!(when.source.as_deref(), Some("preStart"));
    assert_eq!(when.once.as_deref(), Some("exitSuccess"));
    let health = consul.health.as_ref().expect("consul.health");
    assert_eq!(
        argv(&health.exec),
        ["/usr/local/bin/consul-manage", "health"]
    );
    assert_eq!(health.interval.as_deref(), Some("10s"));
    assert_eq!(health.ttl.as_deref(), Some("25s"));
    assert_eq!(consul.restarts, None, "ContainerPilot's default: never");

    let pre_stop = job(&raw, "preStop");
    assert_eq!(argv(&pre_stop.exec), ["consul", "leave"]);
    let when = pre_stop.when.as_ref().expect("preStop.when");
    assert_eq!(
        (when.source.as_deref(), when.once.as_deref()),
        (Some("consul"), Some("stopping"))
    );

    // Exactly one note: the conditional became enabled conditions.
    assert_eq!(out.notes.len(), 1, "{:#?}", out.notes);
    assert!(
        has_note(&out, "template:", "read CONSUL_DEV; every branch was converted"),
        "{:#?}",
        out.notes
    );
    assert!(out.toml.contains(&out.notes[0]));

    // Nothing else was lost, so the result is a fully valid pilotfish config whose
    // jobs chain the same way as in ContainerPilot.
    let config = load_str(&out.toml).unwrap_or_else(|e| panic!("validation: {e}\n{}", out.toml));
    let consul = &config.jobs[1];
    assert_eq!(consul.name, "consul");
    assert_eq!(consul.restarts, Restarts::Never);
    assert_eq!(consul.service.as_ref().map(|s| s.port), Some(8500));
    match &config.jobs[2].when.trigger {
        Trigger::All(conds) => assert_eq!(conds[0].source, Source::Job("consul".into())),
        other => panic!("preStop trigger {other:?}"),
    }
}

#[test]
fn nginx_with_watch_on_change_sensor_and_telemetry() {
    let (out, raw) = import("nginx.json5");
    // The nested conditional collapses to a default where it can.
    assert_eq!(
        raw.consul.as_ref().and_then(|c| c.address.as_deref()),
        Some("http://${CONSUL:-consul}:8500")
    );
    // Which agent to talk to cannot be switched: the all-unset rendering, noted.
    assert!(
        has_note(&out, "consul:", "rendered it differently with CONSUL_AGENT set"),
        "{:#?}",
        out.notes
    );

    let logging = raw.logging.as_ref().expect("logging");
    assert_eq!(logging.level.as_deref(), Some("info"));
    assert_eq!(logging.format.as_deref(), Some("json"));

    let nginx = job(&raw, "nginx");
    assert_eq!(argv(&nginx.exec), ["nginx"]);
    assert_eq!(nginx.port, Some(RawInt::Int(80)));
    assert_eq!(
        nginx.interfaces,
        Some(StringOrList::Many(vec!["eth0".into()]))
    );
    assert_eq!(nginx.tags, ["web", "http"]);
    assert_eq!(nginx.enable_tag_override, Some(true));
    assert_eq!(
        nginx.deregister_critical_service_after.as_deref(),
        Some("10m")
    );
    let h = nginx.health.as_ref().expect("nginx.health");
    assert_eq!(
        argv(&h.exec),
        [
            "/usr/bin/curl",
            "--fail",
            "-s",
            "-o",
            "/dev/null",
            "http://localhost/nginx-health"
        ]
    );
    assert_eq!(
        (
            h.interval.as_deref(),
            h.ttl.as_deref(),
            h.timeout.as_deref()
        ),
        (Some("10s"), Some("25s"), Some("5s"))
    );

    let on_change = job(&raw, "onchange-backend");
    let when = on_change.when.as_ref().expect("onchange.when");
    assert_eq!(
        (
            when.source.as_deref(),
            when.each.as_deref(),
            when.once.as_deref()
        ),
        (Some("watch.backend"), Some("changed"), None)
    );
    assert_eq!(argv(&on_change.exec)[0], "consul-template");

    let agent = job(&raw, "consul-agent");
    assert_eq!(argv(&agent.exec)[6], "${CONSUL:-consul}");
    assert_eq!(agent.restarts, Some(RawRestarts::Word("unlimited".into())));
    assert!(has_note(&out, "jobs[3].restarts:", "backoff"));

    let sensor = job(&raw, "sensor");
    let when = sensor.when.as_ref().expect("sensor.when");
    assert_eq!(when.interval.as_deref(), Some("5s"));
    assert_eq!(sensor.timeout.as_deref(), Some("5s"));

    assert_eq!(raw.watches.len(), 1);
    assert_eq!(raw.watches[0].name, "backend");
    assert_eq!(raw.watches[0].service, None);
    assert_eq!(raw.watches[0].interval.as_deref(), Some("3s"));
    assert!(has_note(&out, "watches[0].interval:", "blocking queries"));

    let t = raw.telemetry.as_ref().expect("telemetry");
    assert_eq!(t.port, Some(RawInt::Int(9090)));
    assert_eq!(t.tags, ["nginx"]);
    let metrics: Vec<(&str, &str)> = t
        .metrics
        .iter()
        .map(|m| (m.name.as_str(), m.kind.as_str()))
        .collect();
    assert_eq!(
        metrics,
        [
            ("nginx_connections_unhandled_total", "counter"),
            ("nginx_connections_load", "gauge")
        ]
    );
    assert!(has_note(&out, "telemetry.metrics[1].name:", "#569"));
    assert_eq!(out.notes.len(), 4, "{:#?}", out.notes);

    let config = load_str(&out.toml).unwrap_or_else(|e| panic!("validation: {e}\n{}", out.toml));
    let sensor = config
        .jobs
        .iter()
        .find(|j| j.name == "sensor")
        .expect("sensor");
    assert!(matches!(sensor.when.trigger, Trigger::Interval(d) if d.as_secs() == 5));
    assert_eq!(sensor.restarts, Restarts::Unlimited);
    let on_change = config
        .jobs
        .iter()
        .find(|j| j.name == "onchange-backend")
        .expect("onchange");
    match &on_change.when.trigger {
        Trigger::All(c) => {
            assert_eq!(c[0].source, Source::Watch("backend".into()));
            assert!(c[0].repeat);
        }
        other => panic!("onchange trigger {other:?}"),
    }
    assert_eq!(config.telemetry.map(|t| t.metrics.len()), Some(2));
}

#[test]
fn json5_features_and_template_defaults() {
    let (out, raw) = import("json5-features.json5");
    let consul = raw.consul.as_ref().expect("consul");
    assert_eq!(
        consul.address.as_deref(),
        Some("https://consul.service:8500")
    );
    assert_eq!(consul.token.as_deref(), Some("${CONSUL_TOKEN:-anonymous}"));
    let tls = consul.tls.as_ref().expect("tls");
    assert_eq!(tls.ca_file.as_deref(), Some("/etc/ssl/consul-ca.pem"));
    assert_eq!(tls.verify, None, "pilotfish's default: verify");
    assert!(has_note(
        &out,
        "consul.tls.verify:",
        "verifies it by default"
    ));

    assert_eq!(raw.stop_timeout.as_deref(), Some("7s"));
    assert!(has_note(&out, "stopTimeout:", "always slept"));
    assert_eq!(
        raw.control.as_ref().and_then(|c| c.socket.as_deref()),
        Some("/var/run/cp.sock")
    );
    let logging = raw.logging.as_ref().expect("logging");
    assert_eq!(
        (logging.level.as_deref(), logging.format.as_deref()),
        (Some("debug"), Some("text"))
    );

    let app = job(&raw, "app");
    // Shell text is escaped so pilotfish passes it through unchanged.
    assert_eq!(
        argv(&app.exec),
        ["/bin/sh", "-c", "exec /app/run --home $${HOME} --pid $$$$"]
    );
    assert_eq!(app.port, Some(RawInt::Text("${APP_PORT:-8080}".into())));
    assert!(!out.notes.iter().any(|n| n.starts_with("jobs[0].port")));
    assert_eq!(app.restarts, Some(RawRestarts::Count(3)));
    assert_eq!(app.stop_timeout.as_deref(), Some("15s"));
    assert!(has_note(&out, "jobs[0].stopTimeout:", "never fired"));
    assert_eq!(app.initial_status.as_deref(), Some("warning"));
    assert_eq!(app.logging.as_ref().and_then(|l| l.raw), Some(true));
    let h = app.health.as_ref().expect("app.health");
    assert_eq!(
        argv(&h.exec),
        [
            "/bin/check",
            "--url",
            "http://localhost:${APP_PORT:-8080}/health"
        ]
    );
    assert_eq!(
        (h.interval.as_deref(), h.ttl.as_deref()),
        (Some("5s"), Some("15s"))
    );

    let hup = job(&raw, "hup");
    let when = hup.when.as_ref().expect("hup.when");
    assert_eq!(
        (when.source.as_deref(), when.each.as_deref()),
        (Some("SIGHUP"), Some("SIGHUP"))
    );

    // A job without a name is named after its executable, as ContainerPilot did.
    let cleanup = job(&raw, "cleanup");
    assert_eq!(argv(&cleanup.exec), ["/usr/local/bin/cleanup", "--all"]);
    let when = cleanup.when.as_ref().expect("cleanup.when");
    assert_eq!(
        (
            when.source.as_deref(),
            when.once.as_deref(),
            when.timeout.as_deref()
        ),
        (Some("app"), Some("stopped"), Some("30s"))
    );
    assert!(has_note(
        &out,
        "jobs[2].name:",
        "\"/usr/local/bin/cleanup\""
    ));
    assert_eq!(out.notes.len(), 6, "{:#?}", out.notes);

    let config = load_str(&out.toml).unwrap_or_else(|e| panic!("validation: {e}\n{}", out.toml));
    let app = &config.jobs[0];
    // `${HOME}` and `$$` reach the shell exactly as ContainerPilot passed them.
    assert_eq!(
        app.exec.as_ref().map(|e| e.argv[2].as_str()),
        Some("exec /app/run --home ${HOME} --pid $$")
    );
    assert_eq!(app.restarts, Restarts::Count(3));
    assert_eq!(app.stop_timeout.as_secs(), 15);
    assert!(config.consul.is_some_and(|c| c.tls.verify));
}

#[test]
fn unconvertible_files_fail_with_the_line() {
    match import_containerpilot("{\n  consul: \"c:1\",\n  jobs: [ { name: \"a\" ] }\n") {
        Err(ImportError::Syntax { line, .. }) => assert_eq!(line, 3),
        other => panic!("expected a JSON5 syntax error, got {other:?}"),
    }
    let err = import_containerpilot("{\n  {{ range .X }}\n}").expect_err("unclosed range");
    let msg = err.to_string();
    assert!(
        msg.starts_with("line 2:") && msg.contains("{{ end }}"),
        "{msg}"
    );
}
