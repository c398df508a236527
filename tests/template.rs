//! The template watcher against a real agent (`pilotfish agent --dev`):
//! inside the supervisor (jobs that wait for a render, events on every
//! install, one reload per batch, only the affected template re-rendered,
//! check output ignored) and standalone (`pilotfish template --once`,
//! `--dry`, a refused render). HAProxy end to end is tests/template_haproxy.rs.

#[allow(dead_code, unused_imports)]
mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use common::agent::{Agent, BIN};
use common::runner::{read, Pilotfish};

const LIMIT: Duration = Duration::from_secs(20);

fn put(agent: &Agent, path: &str, body: &str) {
    let (status, _, answer) = agent
        .request("PUT", path, body.as_bytes())
        .expect("agent answers");
    assert_eq!(status, 200, "{path}: {}", common::text(&answer));
}

fn register(agent: &Agent, id: &str, port: u16) {
    put(
        agent,
        "/v1/agent/service/register",
        &format!(
            r#"{{"Name":"web","ID":"{id}","Port":{port},"Address":"127.0.0.1","Tags":["rest"],
                "Check":{{"CheckID":"check-{id}","TTL":"10m","Status":"passing"}}}}"#
        ),
    );
}

fn template_status(pf: &Pilotfish, name: &str) -> Value {
    let s = pf.status_json();
    s["templates"]
        .as_array()
        .and_then(|ts| ts.iter().find(|t| t["name"] == name).cloned())
        .unwrap_or_else(|| panic!("no template {name} in {s}"))
}

fn installs(pf: &Pilotfish, name: &str) -> u64 {
    template_status(pf, name)["installs"].as_u64().unwrap_or(0)
}

fn file(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

const SERVICES: &str = r#"{{#each (services)}}{{#if (contains Tags \"rest\")}}{{Name}}:{{#each (service Name)}}{{ID}}@{{Address}}:{{Port}},{{/each}};{{/if}}{{/each}}"#;

#[test]
fn templates_render_before_their_jobs_and_reload_once_per_batch() {
    let agent = Agent::dev().start();
    register(&agent, "web-1", 8081);
    put(&agent, "/v1/kv/app/greeting", "hello");
    let config = format!(
        r#"
[consul]
address = "{addr}"

[[templates]]
name = "a"
contents = "{SERVICES}"
destination = "{{dir}}/out/a.txt"
reload = {{ exec = ["sh", "-c", "echo reload >> {{dir}}/reloads"] }}
wait = {{ min = "0s" }}

[[templates]]
name = "b"
contents = "greeting={{{{keyOrDefault \"app/greeting\" \"none\"}}}} missing={{{{keyExists \"app/missing\"}}}}"
destination = "{{dir}}/out/b.txt"
reload = {{ exec = ["sh", "-c", "echo reload >> {{dir}}/reloads"] }}
wait = {{ min = "0s" }}

[[jobs]]
name = "reader"
exec = ["sh", "-c", "cat {{dir}}/out/a.txt {{dir}}/out/b.txt > {{dir}}/seen; sleep 600"]
after_templates = true

[[jobs]]
name = "on-b"
exec = ["sh", "-c", "echo changed >> {{dir}}/b-changed"]
when = {{ source = "template.b", each = "changed" }}
"#,
        addr = agent.http
    );
    let pf = Pilotfish::start(&config);
    pf.wait_ready();
    let dir = pf.dir().to_path_buf();
    let seen = common::eventually("the reader job started", LIMIT, || {
        let s = file(&dir.join("seen"));
        if s.is_empty() {
            Err("nothing yet".into())
        } else {
            Ok(s)
        }
    });
    assert_eq!(
        seen, "web:web-1@127.0.0.1:8081,;greeting=hello missing=false",
        "the job started only after both files were rendered"
    );
    // One shared reload action, both files installed in the first batch(es).
    let first_reloads = read(&dir.join("reloads")).lines().count();
    assert!((1..=2).contains(&first_reloads), "{first_reloads} reloads");

    // A check's output changes: nothing a template sees, nothing renders.
    let a_before = installs(&pf, "a");
    put(&agent, "/v1/agent/check/pass/check-web-1?note=ping-1", "");
    put(&agent, "/v1/agent/check/pass/check-web-1?note=ping-2", "");
    // A key only template b reads changes: only b is installed again.
    put(&agent, "/v1/kv/app/greeting", "hi");
    common::eventually("b re-rendered", LIMIT, || {
        let b = file(&dir.join("out/b.txt"));
        (b == "greeting=hi missing=false").then_some(()).ok_or(b)
    });
    common::eventually("the changed event ran on-b", LIMIT, || {
        let n = read(&dir.join("b-changed")).lines().count();
        (n == 1).then_some(()).ok_or(format!("{n} runs"))
    });
    assert_eq!(installs(&pf, "a"), a_before, "a read nothing that changed");
    assert_eq!(
        read(&dir.join("reloads")).lines().count(),
        first_reloads + 1,
        "one reload for b's batch"
    );

    // A new instance goes in; a failing one leaves (healthy only by default).
    register(&agent, "web-2", 8082);
    common::eventually("web-2 rendered", LIMIT, || {
        let a = file(&dir.join("out/a.txt"));
        (a == "web:web-1@127.0.0.1:8081,web-2@127.0.0.1:8082,;")
            .then_some(())
            .ok_or(a)
    });
    put(&agent, "/v1/agent/check/fail/check-web-1", "");
    common::eventually("web-1 left", LIMIT, || {
        let a = file(&dir.join("out/a.txt"));
        (a == "web:web-2@127.0.0.1:8082,;").then_some(()).ok_or(a)
    });
    let status = template_status(&pf, "a");
    assert_eq!(status["state"], "ok", "{status}");
    assert_eq!(status["queries"], 2, "services + service web: {status}");
}

fn template_cmd(dir: &Path, agent: &Agent, body: &str, args: &[&str]) -> std::process::Output {
    let cfg = dir.join("t.toml");
    std::fs::write(
        &cfg,
        format!("[consul]\naddress = \"{}\"\n{body}", agent.http),
    )
    .expect("write config");
    Command::new(BIN)
        .arg("template")
        .arg("--config")
        .arg(&cfg)
        .args(args)
        // As in a FROM scratch image: no trust roots anywhere. Plain HTTP
        // to the agent needs none.
        .env("SSL_CERT_FILE", "/nonexistent/ca.pem")
        .env("SSL_CERT_DIR", "/nonexistent")
        .output()
        .expect("run pilotfish template")
}

#[test]
fn standalone_once_dry_and_refused_renders() {
    let agent = Agent::dev().start();
    register(&agent, "web-1", 8081);
    let dir = tempfile::tempdir().expect("tempdir");
    let dest = dir.path().join("out.txt");
    let body = format!(
        "[[templates]]\ncontents = \"{SERVICES}\"\ndestination = \"{}\"\n",
        dest.display()
    );

    // --dry prints what would be written and writes nothing.
    let out = template_cmd(dir.path(), &agent, &body, &["--once", "--dry"]);
    assert!(out.status.success(), "{}", common::text(&out.stderr));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("> {}\nweb:web-1@127.0.0.1:8081,;\n", dest.display())
    );
    assert!(!dest.exists());

    // --once writes it (the template's file gets the mode of a new file).
    let out = template_cmd(dir.path(), &agent, &body, &["--once"]);
    assert!(out.status.success(), "{}", common::text(&out.stderr));
    assert_eq!(file(&dest), "web:web-1@127.0.0.1:8081,;");

    // A render below min_instances is refused: exit 1, the file is kept.
    let guarded = format!("{body}min_instances = {{ web = 2 }}\n");
    let out = template_cmd(dir.path(), &agent, &guarded, &["--once"]);
    assert_eq!(out.status.code(), Some(1));
    let err = common::text(&out.stderr);
    assert!(
        err.contains("service web has 1 instance(s), min_instances is 2"),
        "{err}"
    );

    // A failing check keeps the last good file and says what the check said.
    register(&agent, "web-2", 8082);
    let checked = format!(
        "{body}check = [\"sh\", \"-c\", \"echo nope: $0 >&2; exit 3\", \"{{candidate}}\"]\n"
    );
    let out = template_cmd(dir.path(), &agent, &checked, &["--once"]);
    assert_eq!(out.status.code(), Some(1));
    let err = common::text(&out.stderr);
    assert!(err.contains("exit status 3: nope:"), "{err}");
    assert_eq!(
        file(&dest),
        "web:web-1@127.0.0.1:8081,;",
        "last good file kept"
    );
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .expect("dir")
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("pilotfish-"))
        .collect();
    assert!(leftovers.is_empty(), "candidates left: {leftovers:?}");
}

/// A single file bind-mounted into a container cannot be replaced by
/// rename (EBUSY): it is rewritten in place, so the mount sees the change.
/// Runs in a private mount namespace (`unshare --mount`, needs root).
#[test]
fn a_bind_mounted_destination_is_rewritten_in_place() {
    let probe = Command::new("unshare").args(["--mount", "true"]).status();
    if !probe.is_ok_and(|s| s.success()) {
        eprintln!("skipped: unshare --mount is not allowed here (needs root)");
        return;
    }
    let agent = Agent::dev().start();
    register(&agent, "web-1", 8081);
    let dir = tempfile::tempdir().expect("tempdir");
    let host = dir.path().join("host.txt");
    let dest = dir.path().join("mounted.txt");
    std::fs::write(&host, "old").expect("write");
    std::fs::write(&dest, "").expect("write");
    let cfg = dir.path().join("t.toml");
    std::fs::write(
        &cfg,
        format!(
            "[consul]\naddress = \"{}\"\n[[templates]]\ncontents = \"{SERVICES}\"\ndestination = \"{}\"\n",
            agent.http,
            dest.display()
        ),
    )
    .expect("config");
    let script = format!(
        "mount --bind {host} {dest} && {BIN} template --once --config {cfg} && cat {dest}",
        host = host.display(),
        dest = dest.display(),
        cfg = cfg.display()
    );
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .output()
        .expect("unshare");
    assert!(out.status.success(), "{}", common::text(&out.stderr));
    assert_eq!(common::text(&out.stdout), "web:web-1@127.0.0.1:8081,;");
    assert!(
        common::text(&out.stderr).contains("rewrote it in place"),
        "{}",
        common::text(&out.stderr)
    );
    assert_eq!(
        file(&host),
        "web:web-1@127.0.0.1:8081,;",
        "the mounted file changed"
    );
}
