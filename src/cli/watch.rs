//! `pilotfish watch`: `consul watch` for the CLI's watch types (`key`,
//! `keyprefix`, `services`, `nodes`, `service`, `checks`, `event`), the
//! deploy-hook tool. Consul's plan loop: the first read does not block and
//! its answer always goes to the handler; later reads block on the last
//! index, and the handler runs again only when the index changed and the
//! data differs. An `event` watch hands over only the events after the one
//! whose ID gives the previous index. Errors back off 5 s × failures²
//! (at most 180 s). The handler runs through `$SHELL -c` (`/bin/sh`), or
//! directly with `--shell=false`, with the data as JSON on stdin and
//! `CONSUL_INDEX` in its environment; a failing handler ends the watch with
//! status 1. Without a handler the data is printed once, indented, and the
//! watch ends. SIGINT and SIGTERM end it with status 0. It reaches the agent
//! only through `discovery::client`, so it works against Consul too.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use crate::discovery::api::event::id_to_index;
use crate::discovery::client::{Client, Query};

/// The first retry after a failed read; the n-th waits n² times as long.
const RETRY: Duration = Duration::from_secs(5);
/// The longest wait between failed reads.
const MAX_BACKOFF: Duration = Duration::from_secs(180);

/// `watch` flags (Consul's `-type`, `-key`, `-prefix`, `-service`, `-tag`,
/// `-passingonly`, `-state`, `-name`, `-shell`, `-stale`).
#[derive(Debug, Clone, clap::Args)]
pub struct WatchArgs {
    #[command(flatten)]
    pub http: super::HttpArgs,
    /// key, keyprefix, services, nodes, service, checks or event.
    #[arg(long = "type")]
    pub watch_type: Option<String>,
    /// The key of a `key` watch.
    #[arg(long)]
    pub key: Option<String>,
    /// The prefix of a `keyprefix` watch.
    #[arg(long)]
    pub prefix: Option<String>,
    /// The service of a `service` or `checks` watch.
    #[arg(long)]
    pub service: Option<String>,
    /// A tag the instances of a `service` watch must have (repeatable).
    #[arg(long)]
    pub tag: Vec<String>,
    /// `service`: only instances whose checks pass (a Go boolean).
    #[arg(long)]
    pub passingonly: Option<String>,
    /// `checks`: the state to watch (`any`, `passing`, `warning`, `critical`).
    #[arg(long)]
    pub state: Option<String>,
    /// `event`: only events of this name.
    #[arg(long)]
    pub name: Option<String>,
    /// Read from any server, not only the leader.
    #[arg(long)]
    pub stale: bool,
    /// Run the handler through the shell (`--shell=false`: exec it directly).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub shell: bool,
    /// The handler to run on every change; without one, print the data once.
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "HANDLER"
    )]
    pub handler: Vec<String>,
}

/// What is watched.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Watch {
    Key(String),
    KeyPrefix(String),
    Services,
    Nodes,
    Service {
        name: String,
        tags: Vec<String>,
        passing: bool,
    },
    Checks {
        service: Option<String>,
        state: Option<String>,
    },
    Event(Option<String>),
}

/// Consul's `watch.Parse` for the flags given: the type's own parameters,
/// and `Invalid parameters: [...]` for any other.
fn parse(args: &WatchArgs) -> Result<Watch, String> {
    let t = args
        .watch_type
        .clone()
        .filter(|t| !t.is_empty())
        .ok_or("Watch type must be specified")?;
    let nonempty = |v: &Option<String>| v.clone().filter(|v| !v.is_empty());
    let passing = match args.passingonly.as_deref() {
        None | Some("") => None,
        Some("1" | "t" | "T" | "TRUE" | "true" | "True") => Some(true),
        Some("0" | "f" | "F" | "FALSE" | "false" | "False") => Some(false),
        Some(v) => {
            return Err(format!(
            "Failed to parse passingonly flag: strconv.ParseBool: parsing \"{v}\": invalid syntax"
        ))
        }
    };
    let given: [(&str, bool); 7] = [
        ("key", nonempty(&args.key).is_some()),
        ("name", nonempty(&args.name).is_some()),
        ("passingonly", passing.is_some()),
        ("prefix", nonempty(&args.prefix).is_some()),
        ("service", nonempty(&args.service).is_some()),
        ("stale", args.stale),
        ("state", nonempty(&args.state).is_some()),
    ];
    let mut given: Vec<(&str, bool)> = given.to_vec();
    given.push(("tag", !args.tag.is_empty()));
    let takes: &[&str] = match t.as_str() {
        "key" => &["key", "stale"],
        "keyprefix" => &["prefix", "stale"],
        "services" | "nodes" => &["stale"],
        "service" => &["service", "tag", "passingonly", "stale"],
        "checks" => &["service", "state", "stale"],
        "event" => &["name"],
        t if t.starts_with("connect_") || t.starts_with("agent_") => {
            return Err(format!("Type {t} is not supported in the CLI tool"))
        }
        t => return Err(format!("Unsupported watch type: {t}")),
    };
    let mut extra: Vec<&str> = given
        .iter()
        .filter(|(k, set)| *set && !takes.contains(k))
        .map(|(k, _)| *k)
        .collect();
    extra.sort_unstable();
    let w = match t.as_str() {
        "key" => Watch::Key(nonempty(&args.key).ok_or("Must specify a single key to watch")?),
        "keyprefix" => {
            Watch::KeyPrefix(nonempty(&args.prefix).ok_or("Must specify a single prefix to watch")?)
        }
        "services" => Watch::Services,
        "nodes" => Watch::Nodes,
        "service" => Watch::Service {
            name: nonempty(&args.service).ok_or("Must specify a single service to watch")?,
            tags: args.tag.clone(),
            passing: passing.unwrap_or(false),
        },
        "checks" => {
            let (service, state) = (nonempty(&args.service), nonempty(&args.state));
            if service.is_some() && state.is_some() {
                return Err("Cannot specify service and state".to_string());
            }
            let state = if service.is_none() && state.is_none() {
                Some("any".to_string())
            } else {
                state
            };
            Watch::Checks { service, state }
        }
        _ => Watch::Event(nonempty(&args.name)),
    };
    if !extra.is_empty() {
        return Err(format!("Invalid parameters: [{}]", extra.join(" ")));
    }
    Ok(w)
}

/// One read's answer: its index and the data as JSON, compact (the
/// handler's stdin, and what changes are judged by) and indented.
struct Answer {
    index: u64,
    compact: String,
    pretty: String,
}

/// JSON as Go's `encoding/json` writes it: `<`, `>`, `&`, U+2028 and
/// U+2029 escaped (outside strings none of them can appear).
fn go_json<T: Serialize>(value: &T, indent: bool) -> Result<String, String> {
    let text = if indent {
        let mut out = Vec::new();
        let fmt = serde_json::ser::PrettyFormatter::with_indent(b"    ");
        let mut ser = serde_json::Serializer::with_formatter(&mut out, fmt);
        value
            .serialize(&mut ser)
            .map_err(|e| format!("Error encoding output: {e}"))?;
        String::from_utf8_lossy(&out).into_owned()
    } else {
        serde_json::to_string(value).map_err(|e| format!("Error encoding output: {e}"))?
    };
    Ok(text
        .replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
        .replace('\u{2028}', "\\u2028")
        .replace('\u{2029}', "\\u2029"))
}

fn answer<T: Serialize>(index: u64, value: &T) -> Result<Answer, String> {
    Ok(Answer {
        index,
        compact: go_json(value, false)?,
        pretty: go_json(value, true)?,
    })
}

/// One read of the watched data, blocking on `last` when there is one.
async fn fetch(
    client: &Client,
    w: &Watch,
    last: Option<u64>,
    stale: bool,
) -> Result<Answer, String> {
    let q = Query {
        index: last.unwrap_or(0),
        stale,
        ..Query::default()
    };
    let failed = |e| super::failure(client, e);
    match w {
        Watch::Key(key) => {
            let (pair, meta) = client.kv_get(key, &q).await.map_err(failed)?;
            answer(meta.index, &pair)
        }
        Watch::KeyPrefix(prefix) => {
            let (pairs, meta) = client.kv_list(prefix, &q).await.map_err(failed)?;
            answer(meta.index, &pairs)
        }
        Watch::Services => {
            let (map, meta): (BTreeMap<String, Vec<String>>, _) =
                client.catalog_services(&q).await.map_err(failed)?;
            answer(meta.index, &map)
        }
        Watch::Nodes => {
            let (nodes, meta) = client.catalog_nodes(&q).await.map_err(failed)?;
            answer(meta.index, &nodes)
        }
        Watch::Service {
            name,
            tags,
            passing,
        } => {
            let (entries, meta) = client
                .health_service_tags(name, tags, *passing, &q)
                .await
                .map_err(failed)?;
            answer(meta.index, &entries)
        }
        Watch::Checks { service, state } => {
            let (checks, meta) = match (service, state) {
                (Some(s), _) => client.health_checks(s, &q).await,
                (None, state) => {
                    client
                        .health_state(state.as_deref().unwrap_or("any"), &q)
                        .await
                }
            }
            .map_err(failed)?;
            answer(meta.index, &checks)
        }
        Watch::Event(name) => {
            let q = Query { stale: false, ..q };
            let (mut events, meta) = client
                .event_list(name.as_deref(), &q)
                .await
                .map_err(failed)?;
            // Only the events after the one the previous index names.
            if let Some(at) = events
                .iter()
                .position(|e| last.is_some_and(|l| id_to_index(&e.id) == l))
            {
                events.drain(..=at);
            }
            answer(meta.index, &events)
        }
    }
}

/// SIGINT or SIGTERM.
async fn stop_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
}

/// Run the handler with the data on stdin; an error is Consul's text.
async fn run_handler(args: &WatchArgs, a: &Answer) -> Result<(), String> {
    use tokio::io::AsyncWriteExt;
    let mut cmd = if args.shell {
        let shell = std::env::var("SHELL")
            .ok()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "/bin/sh".to_string());
        let mut c = tokio::process::Command::new(shell);
        c.arg("-c").arg(args.handler.join(" "));
        c
    } else {
        let mut c = tokio::process::Command::new(&args.handler[0]);
        c.args(&args.handler[1..]);
        c
    };
    cmd.env("CONSUL_INDEX", a.index.to_string())
        .stdin(std::process::Stdio::piped());
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("Error starting handler: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        let data = format!("{}\n", a.compact);
        // A handler that does not read its input is not an error.
        let _ = stdin.write_all(data.as_bytes()).await;
    }
    let status = child
        .wait()
        .await
        .map_err(|e| format!("Error executing handler: {e}"))?;
    if status.success() {
        return Ok(());
    }
    Err(match status.code() {
        Some(code) => format!("Error executing handler: exit status {code}"),
        None => format!("Error executing handler: {status}"),
    })
}

/// Run the watch until a signal, a failed handler, or (without a handler)
/// the first answer.
pub(super) async fn run(args: WatchArgs) -> Result<super::Out, String> {
    let w = parse(&args)?;
    let client = super::client(&args.http)?;
    client.agent_self().await.map_err(|e| {
        format!(
            "Error querying Consul agent: {}",
            super::failure(&client, e)
        )
    })?;
    let watching = async {
        let mut last: Option<u64> = None;
        let mut last_data: Option<String> = None;
        let mut failures: u32 = 0;
        loop {
            let a = match fetch(&client, &w, last, args.stale).await {
                Ok(a) => a,
                Err(e) => {
                    failures += 1;
                    last = None;
                    let retry = (RETRY * failures.saturating_mul(failures)).min(MAX_BACKOFF);
                    eprintln!(
                        "[ERROR] watch: Watch errored: type={} error=\"{e}\" retry={}",
                        args.watch_type.as_deref().unwrap_or(""),
                        crate::discovery::api::gofmt::format_duration(retry)
                    );
                    tokio::time::sleep(retry).await;
                    continue;
                }
            };
            failures = 0;
            if last == Some(a.index) {
                continue;
            }
            let first = last.is_none();
            last = Some(a.index);
            if !first && last_data.as_deref() == Some(a.compact.as_str()) {
                continue;
            }
            if args.handler.is_empty() {
                return Ok(super::Out::ok(a.pretty));
            }
            run_handler(&args, &a).await?;
            last_data = Some(a.compact);
        }
    };
    tokio::select! {
        r = watching => r,
        () = stop_signal() => Ok(super::Out::ok("")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cmd {
        #[command(flatten)]
        args: WatchArgs,
    }

    fn parsed(argv: &[&str]) -> Result<Watch, String> {
        let cmd = Cmd::try_parse_from(std::iter::once("watch").chain(argv.iter().copied()))
            .map_err(|e| e.to_string())?;
        parse(&cmd.args)
    }

    #[test]
    fn watch_parameters_are_checked_as_consul_checks_them() {
        assert_eq!(
            parsed(&["--type", "key", "--key", "a/b", "cat"]),
            Ok(Watch::Key("a/b".into()))
        );
        assert_eq!(
            parsed(&["--type", "checks"]),
            Ok(Watch::Checks {
                service: None,
                state: Some("any".into())
            })
        );
        assert_eq!(
            parsed(&[
                "--type",
                "service",
                "--service",
                "web",
                "--tag",
                "a",
                "--tag",
                "b",
                "--passingonly",
                "true"
            ]),
            Ok(Watch::Service {
                name: "web".into(),
                tags: vec!["a".into(), "b".into()],
                passing: true
            })
        );
        assert_eq!(parsed(&[]).unwrap_err(), "Watch type must be specified");
        assert_eq!(
            parsed(&["--type", "bogus"]).unwrap_err(),
            "Unsupported watch type: bogus"
        );
        assert_eq!(
            parsed(&["--type", "key"]).unwrap_err(),
            "Must specify a single key to watch"
        );
        assert_eq!(
            parsed(&["--type", "services", "--key", "x", "--name", "y"]).unwrap_err(),
            "Invalid parameters: [key name]"
        );
        assert_eq!(
            parsed(&["--type", "event", "--stale"]).unwrap_err(),
            "Invalid parameters: [stale]"
        );
        assert_eq!(
            parsed(&["--type", "checks", "--service", "a", "--state", "passing"]).unwrap_err(),
            "Cannot specify service and state"
        );
        assert_eq!(
            parsed(&[
                "--type",
                "service",
                "--service",
                "a",
                "--passingonly",
                "yes"
            ])
            .unwrap_err(),
            "Failed to parse passingonly flag: strconv.ParseBool: parsing \"yes\": invalid syntax"
        );
    }

    #[test]
    fn json_is_escaped_as_go_escapes_it() {
        assert_eq!(
            go_json(&"<a&b>", false).unwrap(),
            r#""\u003ca\u0026b\u003e""#
        );
        assert_eq!(go_json(&vec![1], true).unwrap(), "[\n    1\n]");
    }
}
