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
        has_note(
            &out,
            "template:",
            "read CONSUL_DEV; every branch was converted"
        ),
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
        has_note(
            &out,
            "consul:",
            "rendered it differently with CONSUL_AGENT set"
        ),
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
    assert!(matches!(sensor.when.trigger, Trigger::Interval { every, .. } if every.as_secs() == 5));
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
    assert_eq!(out.notes.len(), 5, "{:#?}", out.notes);

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

/// Validate converted TOML under exactly these variables.
fn check_with(toml: &str, vars: &[(&str, &str)]) -> Result<pilotfish::config::Config, Vec<String>> {
    let env = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    pilotfish::config::validate::parse_and_validate(toml, &env).map_err(|e| e.messages())
}

fn job_names(cfg: &pilotfish::config::Config) -> Vec<&str> {
    cfg.jobs.iter().map(|j| j.name.as_str()).collect()
}

#[test]
fn v3_names_ports_and_levels_follow_the_environment_and_ifs_become_enabled_jobs() {
    let (out, raw) = import("v3-switches.json5");
    assert_eq!(out.version, pilotfish::config::import::Version::V3);
    assert!(out
        .toml
        .starts_with("# Converted from a ContainerPilot 3.x configuration"));

    // Item 2, 3, 4: names, ports and levels stay references with their case.
    let mysql = &raw.jobs[2];
    assert_eq!(mysql.name, "${SERVICE_NAME:-mysql}");
    assert_eq!(mysql.port, Some(RawInt::Text("${PORT}".into())));
    let logging = raw.logging.as_ref().expect("logging");
    assert_eq!(logging.level.as_deref(), Some("${LOG_LEVEL:-INFO}"));
    // Item 5: ContainerPilot's "default" format, and a ttl equal to its interval.
    assert_eq!(logging.format.as_deref(), Some("text"));
    assert_eq!(
        mysql.health.as_ref().and_then(|h| h.ttl.as_deref()),
        Some("6s")
    );
    assert!(has_note(&out, "jobs[1].health.ttl:", "raised to \"6s\""));
    // Item 8: ContainerPilot's stdout, kept explicitly.
    assert_eq!(logging.output.as_deref(), Some("stdout"));
    assert!(out
        .toml
        .contains("# What ContainerPilot did without being told"));

    // Item 6: both branches of {{ if .CONSUL_AGENT }}, each with its condition.
    let pre: Vec<&RawJob> = raw.jobs.iter().filter(|j| j.name == "preStart").collect();
    assert_eq!(pre.len(), 2);
    assert_eq!(
        pre[0].enabled,
        Some(RawEnabled::One("${CONSUL_AGENT:-} == ''".into()))
    );
    assert!(pre[0].when.is_none());
    assert_eq!(
        pre[1].when.as_ref().and_then(|w| w.source.as_deref()),
        Some("consul-agent")
    );
    assert_eq!(
        job(&raw, "consul-agent").enabled,
        Some(RawEnabled::One("${CONSUL_AGENT:-} != ''".into()))
    );
    assert!(has_note(&out, "consul:", "CONSUL_AGENT set"));

    // config check without the variable the file has no default for: one
    // error naming it, and nothing else.
    let errs = check_with(&out.toml, &[]).expect_err("PORT is unset");
    assert_eq!(
        errs,
        ["jobs[2].port: environment variable PORT is not set (set it, or write ${PORT:-default})"]
    );

    // With it: the defaults, no agent job, preStart starting at once.
    let cfg = check_with(&out.toml, &[("PORT", "3306")]).expect("valid");
    assert_eq!(job_names(&cfg), ["preStart", "mysql", "onchange"]);
    assert_eq!(cfg.jobs[1].service.as_ref().map(|s| s.port), Some(3306));
    assert_eq!(cfg.logging.level, "info");
    assert_eq!(cfg.watches[0].name, "mysql-primary");

    // The image's documented switches: another name, a level in capitals,
    // and the Consul agent with preStart waiting for it.
    let cfg = check_with(
        &out.toml,
        &[
            ("PORT", "3307"),
            ("SERVICE_NAME", "db"),
            ("LOG_LEVEL", "DEBUG"),
            ("CONSUL_AGENT", "1"),
        ],
    )
    .expect("valid");
    assert_eq!(
        job_names(&cfg),
        ["preStart", "db", "onchange", "consul-agent"]
    );
    assert_eq!(cfg.logging.level, "debug");
    assert_eq!(cfg.watches[0].name, "db-primary");
    match &cfg.jobs[0].when.trigger {
        Trigger::All(c) => assert_eq!(c[0].source, Source::Job("consul-agent".into())),
        other => panic!("preStart should wait for consul-agent: {other:?}"),
    }
    match &cfg.jobs[2].when.trigger {
        Trigger::All(c) => assert_eq!(c[0].source, Source::Watch("db-primary".into())),
        other => panic!("onchange trigger {other:?}"),
    }

    // Values that expand to nonsense are reported, every one of them.
    let errs = check_with(
        &out.toml,
        &[
            ("PORT", "x"),
            ("SERVICE_NAME", "bad name"),
            ("LOG_LEVEL", "loud"),
        ],
    )
    .expect_err("invalid");
    assert!(
        errs.iter()
            .any(|e| e == "jobs[2].port: \"x\" (from \"${PORT}\") is not a whole number"),
        "{errs:#?}"
    );
    assert!(
        errs.iter()
            .any(|e| e.starts_with("jobs[2].name: \"bad name\"")),
        "{errs:#?}"
    );
    assert!(
        errs.iter().any(|e| e.starts_with("logging.level: 'loud'")),
        "{errs:#?}"
    );
}

#[test]
fn v2_services_backends_hooks_coprocesses_tasks_and_sensors() {
    let text = fixture("v2-app.json");
    let app = ["/usr/local/bin/app".to_string(), "--serve".to_string()];
    let out = pilotfish::config::import::import_containerpilot_with(&text, &app).expect("import");
    assert_eq!(out.version, pilotfish::config::import::Version::V2);
    assert!(out
        .toml
        .starts_with("# Converted from a ContainerPilot 2.x configuration"));
    assert!(!out.toml.contains("3.x"), "{}", out.toml);
    // No note calls a 2.x key unknown.
    assert!(
        !out.notes.iter().any(|n| n.contains("unknown key")),
        "{:#?}",
        out.notes
    );
    let raw: RawConfig = toml::from_str(&out.toml).expect("RawConfig");
    let names: Vec<&str> = raw.jobs.iter().map(|j| j.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "preStart",
            "${SERVICE_NAME:-app}",
            "preStop",
            "postStop",
            "onchange-db",
            "log-shipper",
            "task-0",
            "sensor-app-queue-depth"
        ]
    );
    // The application from the command line is the primary job and registers
    // the first service, checked by its health command every poll.
    let main = &raw.jobs[1];
    assert_eq!(argv(&main.exec), ["/usr/local/bin/app", "--serve"]);
    assert_eq!(main.primary, Some(true));
    assert_eq!(main.port, Some(RawInt::Text("${PORT:-8080}".into())));
    assert_eq!(main.tags, ["web", "v2"]);
    assert_eq!(main.stop_timeout.as_deref(), Some("7s"));
    assert_eq!(
        main.when
            .as_ref()
            .map(|w| (w.source.as_deref(), w.once.as_deref())),
        Some((Some("preStart"), Some("exitSuccess")))
    );
    let h = main.health.as_ref().expect("health");
    assert_eq!(
        argv(&h.exec),
        ["${MANAGE:-/usr/local/bin/manage.sh}", "health"]
    );
    assert_eq!(
        (h.interval.as_deref(), h.ttl.as_deref()),
        (Some("1s"), Some("2s"))
    );
    // Hooks around it.
    let stop = job(&raw, "preStop");
    assert_eq!(
        stop.when
            .as_ref()
            .map(|w| (w.source.as_deref(), w.once.as_deref())),
        Some((Some("${SERVICE_NAME:-app}"), Some("stopping")))
    );
    assert_eq!(
        job(&raw, "postStop")
            .when
            .as_ref()
            .and_then(|w| w.once.as_deref()),
        Some("stopped")
    );
    // The backend: a watch and a job on its changes.
    assert_eq!(raw.watches[0].name, "db");
    assert_eq!(raw.watches[0].interval.as_deref(), Some("3s"));
    assert_eq!(
        job(&raw, "onchange-db")
            .when
            .as_ref()
            .map(|w| (w.source.as_deref(), w.each.as_deref())),
        Some((Some("watch.db"), Some("changed")))
    );
    // The coprocess restarts; the task runs every second, bounded.
    let cop = job(&raw, "log-shipper");
    assert_eq!(cop.restarts, Some(RawRestarts::Word("unlimited".into())));
    let task = job(&raw, "task-0");
    assert_eq!(
        task.when.as_ref().and_then(|w| w.interval.as_deref()),
        Some("1s")
    );
    assert_eq!(task.timeout.as_deref(), Some("500ms"));
    // Like every poller, tasks and sensors start after preStart's success.
    let after = |j: &RawJob| j.when.as_ref().map(|w| (w.source.clone(), w.once.clone()));
    let pre_start = Some((Some("preStart".into()), Some("exitSuccess".into())));
    assert_eq!(after(task), pre_start);
    assert_eq!(after(job(&raw, "sensor-app-queue-depth")), pre_start);
    // The sensor: a metric and the job that feeds it.
    let t = raw.telemetry.as_ref().expect("telemetry");
    assert_eq!(t.service.as_deref(), Some("containerpilot"));
    assert_eq!(t.metrics[0].name, "app_queue_depth");
    let sensor = job(&raw, "sensor-app-queue-depth");
    assert_eq!(sensor.shell, Some(true));
    assert!(
        matches!(&sensor.exec, Some(StringOrList::One(s)) if s.contains("\"$PILOTFISH_BIN\" putmetric app_queue_depth="))
    );

    let cfg = check_with(&out.toml, &[]).expect("valid with every default");
    assert_eq!(cfg.jobs[1].name, "app");
    assert_eq!(cfg.jobs[1].service.as_ref().map(|s| s.port), Some(8080));
    assert!(cfg.jobs[1].primary);
    assert_eq!(
        cfg.telemetry.as_ref().map(|t| t.service.as_str()),
        Some("containerpilot")
    );
}

#[test]
fn v1_on_start_and_a_2x_file_without_its_command_line() {
    let out = import("v1-onstart.json").0;
    assert_eq!(out.version, pilotfish::config::import::Version::V1);
    assert!(
        has_note(&out, "command line:", "pass it after `--`"),
        "{:#?}",
        out.notes
    );
    let raw: RawConfig = toml::from_str(&out.toml).expect("RawConfig");
    // Without the application the service is registered by a job without exec.
    let nginx = job(&raw, "nginx");
    assert!(nginx.exec.is_none());
    assert_eq!(nginx.port, Some(RawInt::Int(80)));
    assert_eq!(
        argv(&job(&raw, "preStart").exec),
        ["/opt/containerbuddy/reload.sh"]
    );
    check_with(&out.toml, &[]).expect("valid");
}

#[test]
fn every_unset_variable_of_an_exec_array_is_reported() {
    let errs = check_with(
        "[[jobs]]\nname = \"a\"\nexec = [\"${A}\", \"--x\", \"${B}\", \"${C:-c}\", \"${D}\"]\n",
        &[],
    )
    .expect_err("unset");
    assert_eq!(
        errs,
        [
            "jobs[0].exec[0]: environment variable A is not set (set it, or write ${A:-default})",
            "jobs[0].exec[2]: environment variable B is not set (set it, or write ${B:-default})",
            "jobs[0].exec[4]: environment variable D is not set (set it, or write ${D:-default})",
        ]
    );
}

#[test]
fn enabled_reads_booleans_and_comparisons_and_disabled_jobs_are_absent() {
    let toml = r#"
[[jobs]]
name = "agent"
enabled = "${AGENT:-false}"
exec = "agent"
[[jobs]]
name = "web"
enabled = ["!${MAINTENANCE:-no}", "${MODE:-} != 'off'"]
exec = "web"
[[jobs]]
name = "after-agent"
exec = "x"
when = { source = "agent", once = "exitSuccess" }
"#;
    let cfg = check_with(toml, &[("AGENT", "yes")]).expect("valid");
    assert_eq!(job_names(&cfg), ["agent", "web", "after-agent"]);
    let cfg = check_with(toml, &[("AGENT", "on"), ("MODE", "off")]).expect("valid");
    assert_eq!(job_names(&cfg), ["agent", "after-agent"]);
    // A job waiting for a disabled one would never start: said plainly.
    let errs = check_with(toml, &[]).expect_err("agent disabled");
    assert_eq!(errs.len(), 1, "{errs:#?}");
    assert!(
        errs[0].starts_with("jobs[2].when.source: \"agent\" is disabled for this run"),
        "{errs:#?}"
    );
    let errs = check_with(toml, &[("AGENT", "maybe")]).expect_err("not a boolean");
    assert!(
        errs[0].starts_with(
            "jobs[0].enabled: \"maybe\" (from \"${AGENT:-false}\") is not true or false"
        ),
        "{errs:#?}"
    );

    // A branch that is off is not run, so its unset variables are not
    // errors, in its name as elsewhere; switched on, they are.
    let acme = r#"
[[jobs]]
name = "acme-${ACME_DOMAIN}"
enabled = "${ACME_DOMAIN:-} != ''"
exec = ["certbot", "-d", "${ACME_DOMAIN}"]
[[watches]]
name = "acme-${ACME_DOMAIN}"
enabled = "${ACME_DOMAIN:-} != ''"
interval = "5s"
"#;
    let cfg = check_with(acme, &[]).expect("the ACME branch is off");
    assert!(cfg.jobs.is_empty() && cfg.watches.is_empty());
    let cfg = check_with(acme, &[("ACME_DOMAIN", "example.org")]).expect("on");
    assert_eq!(job_names(&cfg), ["acme-example.org"]);
    assert_eq!(cfg.watches[0].name, "acme-example.org");
}
