//! Consul-style CLI commands over the HTTP API: `info`, `members`, `join`,
//! `leave`, `force-leave`, `kv get|put|delete`, `catalog services`,
//! `snapshot save|restore`, `event`, `watch`. Like the `consul` CLI they
//! are plain HTTP clients of `--http-addr` / `$CONSUL_HTTP_ADDR` (host:port or
//! a URL; default 127.0.0.1:8500) with the token from `$CONSUL_HTTP_TOKEN`,
//! through `discovery::client` and its typed answers, and they print exactly
//! what `consul` prints, because scripts parse it (the autopilot Consul image
//! reads `\tnum_peers = N` from `consul info`). `failure` words the client's
//! errors as users read them.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::discovery::api::agent::Member;
use crate::discovery::api::kv::{base64_decode, base64_encode, KvPair};
use crate::discovery::client::{self, Client, Query};
// The snapshot file format, to verify a file before it is sent and after it
// is written; the server is reached only over HTTP.
use crate::discovery::snapshot;

pub mod backup;
pub mod check;
pub mod event;
pub mod go_flags;
pub mod inspect;
pub mod rejoin;
pub mod watch;

/// Where the agent is.
#[derive(Debug, Clone, clap::Args)]
pub struct HttpArgs {
    /// The agent's HTTP address: host:port or a URL.
    #[arg(
        long = "http-addr",
        env = "CONSUL_HTTP_ADDR",
        default_value = "127.0.0.1:8500",
        global = true
    )]
    pub http_addr: String,
    /// ACL token.
    #[arg(long, env = "CONSUL_HTTP_TOKEN", global = true, hide_env_values = true)]
    pub token: Option<String>,
}

/// The Consul-style commands, flattened into `pilotfish`'s command list.
#[derive(Debug, clap::Subcommand)]
pub enum ConsulCommand {
    /// Print the agent's debug information, as `consul info`.
    Info {
        #[command(flatten)]
        http: HttpArgs,
    },
    /// List the cluster's members, as `consul members`.
    Members {
        #[command(flatten)]
        http: HttpArgs,
        /// Show tags instead of build/protocol columns.
        #[arg(long)]
        detailed: bool,
        /// Only members with one of these statuses (`alive`, `leaving`, `left`,
        /// `failed`; `|` separates alternatives, e.g. `alive|failed`).
        #[arg(long)]
        status: Option<String>,
    },
    /// Join the agent to other agents; a name is resolved to all its addresses.
    Join {
        #[command(flatten)]
        http: HttpArgs,
        /// DNS server used to resolve names (default: the system's).
        #[arg(long)]
        resolver: Option<SocketAddr>,
        #[arg(long)]
        wan: bool,
        #[arg(required = true)]
        addresses: Vec<String>,
    },
    /// Make the agent leave the cluster gracefully.
    Leave {
        #[command(flatten)]
        http: HttpArgs,
    },
    /// Read and write the key/value store.
    Kv {
        #[command(subcommand)]
        command: KvCommand,
    },
    /// Query the catalog.
    Catalog {
        #[command(subcommand)]
        command: CatalogCommand,
    },
    /// Force a failed member into the left state, as `consul force-leave`.
    ForceLeave {
        #[command(flatten)]
        http: HttpArgs,
        /// Also remove the node from the member list at once.
        #[arg(long)]
        prune: bool,
        node: String,
    },
    /// Save or restore the cluster's state (KV, sessions, catalog).
    Snapshot {
        #[command(subcommand)]
        command: SnapshotCommand,
    },
    /// Print a new random cluster key for `agent --encrypt`, as `consul keygen`.
    Keygen,
    /// Health checks for discovery servers and agents (exit 0 pass, 1 fail).
    Check {
        #[command(subcommand)]
        command: check::CheckCommand,
    },
    /// Join NAME again while the agent knows no other alive server.
    Rejoin(rejoin::RejoinArgs),
    /// Fire a user event to the cluster's agents, as `consul event`.
    // Boxed: their flags would make every command as large.
    Event(Box<event::EventArgs>),
    /// Run a handler on every change of a key, prefix, service, ... or event,
    /// as `consul watch`.
    Watch(Box<watch::WatchArgs>),
}

#[derive(Debug, clap::Subcommand)]
pub enum SnapshotCommand {
    /// Save the state to FILE (written to FILE.tmp, synced, then renamed).
    Save {
        #[command(flatten)]
        http: HttpArgs,
        /// Read from the agent's own replica, even without a leader.
        #[arg(long)]
        stale: bool,
        file: PathBuf,
    },
    /// Replace the cluster's state with FILE's (every server applies it).
    Restore {
        #[command(flatten)]
        http: HttpArgs,
        file: PathBuf,
    },
    /// Save a backup into DIR under a timestamped name; keep the newest N.
    Backup(backup::BackupArgs),
    /// Print a snapshot file's metadata and its records by type.
    Inspect(inspect::InspectArgs),
}

#[derive(Debug, clap::Subcommand)]
pub enum KvCommand {
    /// Print a key's value (or every `key:value` under a prefix with --recurse).
    Get {
        #[command(flatten)]
        http: HttpArgs,
        #[arg(long)]
        recurse: bool,
        #[arg(default_value = "")]
        key: String,
    },
    /// Write a value (empty when none is given).
    Put {
        #[command(flatten)]
        http: HttpArgs,
        key: String,
        #[arg(default_value = "")]
        value: String,
    },
    /// Delete a key (or everything under a prefix with --recurse).
    Delete {
        #[command(flatten)]
        http: HttpArgs,
        #[arg(long)]
        recurse: bool,
        key: String,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum CatalogCommand {
    /// List the services, one per line (with --tags, their tags too).
    Services {
        #[command(flatten)]
        http: HttpArgs,
        #[arg(long)]
        tags: bool,
    },
}

/// 32 random bytes in base64, as `consul keygen` prints a gossip key.
fn keygen() -> Result<Out, String> {
    let mut key = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut key)
        .map_err(|_| "Error generating key: the system's random source failed".to_string())?;
    Ok(Out::ok(base64_encode(&key)))
}

/// Run one command; returns the exit status.
pub async fn run(cmd: ConsulCommand) -> i32 {
    let result = match cmd {
        ConsulCommand::Info { http } => info(&http).await,
        ConsulCommand::Members {
            http,
            detailed,
            status,
        } => members(&http, detailed, status.as_deref()).await,
        ConsulCommand::Join {
            http,
            resolver,
            wan,
            addresses,
        } => join(&http, resolver, wan, &addresses).await,
        ConsulCommand::Leave { http } => leave(&http).await,
        ConsulCommand::Kv { command } => kv(command).await,
        ConsulCommand::Catalog {
            command: CatalogCommand::Services { http, tags },
        } => catalog_services(&http, tags).await,
        ConsulCommand::ForceLeave { http, prune, node } => force_leave(&http, &node, prune).await,
        ConsulCommand::Snapshot {
            command: SnapshotCommand::Save { http, stale, file },
        } => snapshot_save(&http, stale, &file).await,
        ConsulCommand::Snapshot {
            command: SnapshotCommand::Restore { http, file },
        } => snapshot_restore(&http, &file).await,
        ConsulCommand::Snapshot {
            command: SnapshotCommand::Backup(args),
        } => backup::run(args).await,
        ConsulCommand::Snapshot {
            command: SnapshotCommand::Inspect(args),
        } => inspect::run(&args).map(Out::ok),
        ConsulCommand::Rejoin(args) => rejoin::run(args).await,
        ConsulCommand::Event(args) => event::run(*args).await,
        ConsulCommand::Watch(args) => watch::run(*args).await,
        ConsulCommand::Keygen => keygen(),
        ConsulCommand::Check { command } => {
            let (ok, line) = check::run(command).await;
            Ok(Out {
                text: line,
                code: if ok { 0 } else { 1 },
            })
        }
    };
    match result {
        Ok(out) => {
            if !out.text.is_empty() {
                // `pilotfish kv get ... | head -1`: a reader that went away
                // ends the output quietly (SIGPIPE is ignored, so println!
                // would panic on EPIPE).
                use std::io::Write;
                let mut stdout = std::io::stdout().lock();
                match writeln!(stdout, "{}", out.text).and_then(|()| stdout.flush()) {
                    Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                        eprintln!("pilotfish: writing to stdout: {e}");
                        return 1;
                    }
                    _ => {}
                }
            }
            out.code
        }
        Err(e) => {
            eprintln!("{e}");
            1
        }
    }
}

/// The discovery client for `--http-addr` and the token.
fn client(http: &HttpArgs) -> Result<Client, String> {
    Client::new(&client::Options {
        address: http.http_addr.clone(),
        token: http.token.clone(),
        tls: Default::default(),
    })
    .map_err(|e| e.to_string())
}

/// A failed call as the user reads it; the one place that words a
/// `client::Error`. A status is Consul's `Unexpected response code: N
/// (body)`, plus what to do about a 403: the agent wants a token
/// (`--acl-token`) this command did not send, or sent a wrong one.
fn failure(c: &Client, e: client::Error) -> String {
    match e {
        client::Error::Unreachable { addr, detail } => format!(
            "Error connecting to the agent at {addr}: {detail} (is `pilotfish agent` running? set --http-addr or CONSUL_HTTP_ADDR)"
        ),
        client::Error::Status { code, body } => {
            let mut text = format!("Unexpected response code: {code} ({body})");
            if code == 403 {
                text.push_str(if c.token().is_some() {
                    "; the token in CONSUL_HTTP_TOKEN/--token was refused: use the agent's --acl-token"
                } else {
                    "; the agent requires an ACL token: set CONSUL_HTTP_TOKEN or --token to its --acl-token"
                });
            }
            text
        }
        client::Error::Decode { path, detail } => {
            format!("Error decoding the agent's answer to {path}: {detail}")
        }
        client::Error::Config(text) => text,
    }
}

/// What a command prints and its exit status.
struct Out {
    text: String,
    code: i32,
}

impl Out {
    fn ok(text: impl Into<String>) -> Out {
        Out {
            text: text.into(),
            code: 0,
        }
    }
}

/// What `consul info` prints of `/v1/agent/self`: its `Stats`, sections of
/// `key = value` lines.
#[derive(Debug, Deserialize)]
struct Stats(BTreeMap<String, StatSection>);

/// A section of `Stats`; Consul's are string maps, anything else prints as
/// its name alone.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum StatSection {
    Lines(BTreeMap<String, StatValue>),
    Other(serde::de::IgnoredAny),
}

/// A value as `consul info` prints it: a string as it is; `null` as
/// nothing; a number, boolean, list or object as its JSON text.
#[derive(Debug)]
struct StatValue(String);

impl<'de> Deserialize<'de> for StatValue {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // The CLI's one `serde_json::Value`, and why: Consul writes strings
        // (Go's map[string]string), but `/v1/agent/self` is free-form (it
        // differs by version and by server), so a leaf may be any JSON, and
        // `info` prints a non-string one as its JSON text, which `Value`
        // writes.
        Ok(StatValue(match serde_json::Value::deserialize(d)? {
            serde_json::Value::String(s) => s,
            serde_json::Value::Null => String::new(),
            other => other.to_string(),
        }))
    }
}

impl Stats {
    /// `Stats` from `/v1/agent/self`, or Consul's error naming the answer.
    fn of(me: &BTreeMap<String, serde_json::Value>) -> Result<Stats, String> {
        me.get("Stats")
            .and_then(|s| Stats::deserialize(s).ok())
            .ok_or_else(|| {
                format!(
                    "Agent response did not contain 'Stats' key: {}",
                    serde_json::to_string(me).unwrap_or_default()
                )
            })
    }
}

async fn info(http: &HttpArgs) -> Result<Out, String> {
    let c = client(http)?;
    let me = c.agent_self().await.map_err(|e| failure(&c, e))?;
    Ok(Out::ok(format_info(&Stats::of(&me)?)))
}

/// `consul info`'s layout: sorted sections, sorted `\tkey = value` lines.
fn format_info(stats: &Stats) -> String {
    let mut out = String::new();
    for (name, section) in &stats.0 {
        out.push_str(&format!("{name}:\n"));
        if let StatSection::Lines(lines) = section {
            for (k, v) in lines {
                out.push_str(&format!("\t{k} = {}\n", v.0));
            }
        }
    }
    out.trim_end().to_string()
}

async fn members(http: &HttpArgs, detailed: bool, status: Option<&str>) -> Result<Out, String> {
    let c = client(http)?;
    let members = c.members_all_segments().await.map_err(|e| failure(&c, e))?;
    Ok(format_members(&members, detailed, status))
}

fn member_status(code: u8) -> &'static str {
    match code {
        1 => "alive",
        2 => "leaving",
        3 => "left",
        4 => "failed",
        _ => "none",
    }
}

fn format_members(rows: &[Member], detailed: bool, status: Option<&str>) -> Out {
    let wanted: Option<Vec<&str>> = status.map(|s| s.split('|').map(str::trim).collect());
    let mut table: Vec<Vec<String>> = vec![if detailed {
        ["Node", "Address", "Status", "Tags"]
            .map(String::from)
            .to_vec()
    } else {
        [
            "Node", "Address", "Status", "Type", "Build", "Protocol", "DC", "Segment",
        ]
        .map(String::from)
        .to_vec()
    }];
    let mut matched = 0;
    let mut sorted: Vec<&Member> = rows.iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    for m in sorted {
        let st = member_status(m.status);
        if wanted.as_ref().is_some_and(|w| !w.contains(&st)) {
            continue;
        }
        matched += 1;
        let address = match m.addr.parse::<IpAddr>() {
            Ok(IpAddr::V6(v6)) => format!("[{v6}]:{}", m.port),
            _ => format!("{}:{}", m.addr, m.port),
        };
        let tag = |k: &str| m.tags.get(k).cloned().unwrap_or_default();
        if detailed {
            let joined: Vec<String> = m.tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
            table.push(vec![m.name.clone(), address, st.into(), joined.join(",")]);
        } else {
            let kind = match tag("role").as_str() {
                "consul" => "server",
                "node" => "client",
                _ => "unknown",
            };
            let build = tag("build");
            let build = match build.split(':').next() {
                Some(b) if !b.is_empty() => b.to_string(),
                _ => "< 0.3".to_string(),
            };
            let segment = if kind == "server" {
                "<all>"
            } else {
                "<default>"
            };
            table.push(vec![
                m.name.clone(),
                address,
                st.into(),
                kind.into(),
                build,
                tag("vsn"),
                tag("dc"),
                segment.into(),
            ]);
        }
    }
    if matched == 0 && status.is_some() {
        return Out {
            text: String::new(),
            code: 2,
        };
    }
    Out::ok(columns(&table))
}
/// Columns padded to their widest cell, joined by two spaces (Go's columnize).
fn columns(rows: &[Vec<String>]) -> String {
    let n = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..n)
        .map(|i| {
            rows.iter()
                .map(|r| r.get(i).map_or(0, |c| c.chars().count()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    rows.iter()
        .map(|r| {
            let cells: Vec<String> = r
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    if i + 1 == r.len() {
                        c.clone()
                    } else {
                        format!("{c:<w$}", w = widths[i])
                    }
                })
                .collect();
            cells.join("  ").trim_end().to_string()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every address a join argument stands for: an IP (with optional port) as
/// is, a name resolved to all its A/AAAA records (Triton CNS and Docker's DNS
/// answer a service name with every instance).
async fn join_targets(arg: &str, resolver: Option<SocketAddr>) -> Result<Vec<String>, String> {
    if arg.parse::<IpAddr>().is_ok() || arg.parse::<SocketAddr>().is_ok() {
        return Ok(vec![arg.to_string()]);
    }
    let (host, port) = match arg.rsplit_once(':') {
        Some((h, p)) if p.parse::<u16>().is_ok() => (h, Some(p)),
        _ => (arg, None),
    };
    let ips = crate::discovery::resolve::resolve_all(host, resolver).await?;
    Ok(ips
        .into_iter()
        .map(|ip| match (ip, port) {
            (IpAddr::V6(v6), Some(p)) => format!("[{v6}]:{p}"),
            (ip, Some(p)) => format!("{ip}:{p}"),
            (ip, None) => ip.to_string(),
        })
        .collect())
}

async fn join(
    http: &HttpArgs,
    resolver: Option<SocketAddr>,
    wan: bool,
    args: &[String],
) -> Result<Out, String> {
    let c = client(http)?;
    let mut joined = 0;
    let mut errors = Vec::new();
    for arg in args {
        let targets = match join_targets(arg, resolver).await {
            Ok(t) => t,
            Err(e) => {
                errors.push(format!("Error joining address '{arg}': {e}"));
                continue;
            }
        };
        let mut any = false;
        for t in &targets {
            match c.join(t, wan).await {
                Ok(()) => any = true,
                Err(e) => errors.push(format!("Error joining address '{t}': {}", failure(&c, e))),
            }
        }
        if any {
            joined += 1;
        }
    }
    for e in &errors {
        eprintln!("{e}");
    }
    if joined == 0 {
        return Err("Failed to join any nodes.".into());
    }
    Ok(Out::ok(format!(
        "Successfully joined cluster by contacting {joined} nodes."
    )))
}

async fn leave(http: &HttpArgs) -> Result<Out, String> {
    let c = client(http)?;
    c.leave().await.map_err(|e| failure(&c, e))?;
    Ok(Out::ok("Graceful leave complete"))
}

async fn force_leave(http: &HttpArgs, node: &str, prune: bool) -> Result<Out, String> {
    let c = client(http)?;
    c.force_leave(node, prune)
        .await
        .map_err(|e| format!("Error force leaving: {}", failure(&c, e)))?;
    Ok(Out::ok(""))
}

async fn kv(cmd: KvCommand) -> Result<Out, String> {
    match cmd {
        KvCommand::Get { http, recurse, key } => {
            let c = client(&http)?;
            let querying = |e| format!("Error querying Consul agent: {}", failure(&c, e));
            if recurse {
                let (entries, _) = c.kv_list(&key, &Query::default()).await.map_err(querying)?;
                let lines: Vec<String> = entries
                    .iter()
                    .map(|e| format!("{}:{}", e.key, value_text(e)))
                    .collect();
                Ok(Out::ok(lines.join("\n")))
            } else {
                match c.kv_get(&key, &Query::default()).await.map_err(querying)? {
                    (Some(entry), _) => Ok(Out::ok(value_text(&entry))),
                    (None, _) => Err(format!("Error! No key exists at: {key}")),
                }
            }
        }
        KvCommand::Put { http, key, value } => {
            let c = client(&http)?;
            let written = c
                .kv_put(&key, value.into_bytes(), None, None)
                .await
                .map_err(|e| format!("Error! Failed writing data: {}", failure(&c, e)))?;
            if !written {
                return Err("Error! Failed writing data: false".into());
            }
            Ok(Out::ok(format!("Success! Data written to: {key}")))
        }
        KvCommand::Delete { http, recurse, key } => {
            let c = client(&http)?;
            c.kv_delete(&key, recurse)
                .await
                .map_err(|e| format!("Error! Did not delete key {key}: {}", failure(&c, e)))?;
            Ok(Out::ok(if recurse {
                format!("Success! Deleted keys with prefix: {key}")
            } else {
                format!("Success! Deleted key: {key}")
            }))
        }
    }
}

/// A KV entry's value as text (Consul's nil value is empty).
fn value_text(entry: &KvPair) -> String {
    let bytes = entry
        .value
        .as_deref()
        .and_then(|v| base64_decode(v).ok())
        .unwrap_or_default();
    String::from_utf8_lossy(&bytes).into_owned()
}

async fn catalog_services(http: &HttpArgs, tags: bool) -> Result<Out, String> {
    let c = client(http)?;
    let (services, _) = c
        .catalog_services(&Query::default())
        .await
        .map_err(|e| failure(&c, e))?;
    if !tags {
        return Ok(Out::ok(
            services.keys().cloned().collect::<Vec<_>>().join("\n"),
        ));
    }
    let rows: Vec<Vec<String>> = services
        .into_iter()
        .map(|(name, mut list)| {
            list.sort();
            vec![name, list.join(",")]
        })
        .collect();
    Ok(Out::ok(columns(&rows)))
}

/// `snapshot save FILE`: fetch, verify, then write atomically (FILE.tmp,
/// fsync, rename, fsync the directory), so FILE is the old file or the
/// complete new one. Mode 0600: the file holds every KV value.
async fn snapshot_save(http: &HttpArgs, stale: bool, file: &Path) -> Result<Out, String> {
    let c = client(http)?;
    let bytes = c
        .snapshot_save(stale)
        .await
        .map_err(|e| format!("Error saving snapshot: {}", failure(&c, e)))?;
    let verified = snapshot::decode(&bytes)
        .map_err(|e| format!("Error verifying snapshot file: the agent sent a file that {e}"))?;
    write_verified(file, &bytes)?;
    Ok(Out::ok(format!(
        "Saved and verified snapshot to index {}",
        verified.index
    )))
}

/// Write a snapshot file atomically, then read back what is on disk and
/// check it: "verified" means the file, not the download.
fn write_verified(file: &Path, bytes: &[u8]) -> Result<(), String> {
    write_atomically(file, bytes)
        .map_err(|e| format!("Error writing snapshot file {}: {e}", file.display()))?;
    let on_disk = std::fs::read(file)
        .map_err(|e| format!("Error verifying snapshot file {}: {e}", file.display()))?;
    snapshot::decode(&on_disk)
        .map(|_| ())
        .map_err(|e| format!("Error verifying snapshot file {}: {e}", file.display()))
}

fn write_atomically(file: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;

    let mut tmp_name = file.as_os_str().to_owned();
    tmp_name.push(".tmp");
    let tmp = PathBuf::from(tmp_name);
    let written = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, file)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
        return written;
    }
    let dir = match file.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::File::open(dir)?.sync_all()
}

/// `snapshot restore FILE`: verify locally (a damaged file names itself
/// before anything is sent), then `PUT /v1/snapshot`.
async fn snapshot_restore(http: &HttpArgs, file: &Path) -> Result<Out, String> {
    let c = client(http)?;
    let bytes = std::fs::read(file)
        .map_err(|e| format!("Error opening snapshot file {}: {e}", file.display()))?;
    snapshot::decode(&bytes).map_err(|e| {
        format!(
            "Error verifying snapshot file {}: {e}. Nothing was restored.",
            file.display()
        )
    })?;
    c.snapshot_restore(bytes)
        .await
        .map_err(|e| format!("Error restoring snapshot: {}", failure(&c, e)))?;
    Ok(Out::ok("Restored snapshot"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_is_sorted_go_strings() {
        let me: BTreeMap<String, serde_json::Value> = serde_json::from_str(
            r#"{"Stats":{"raft":{"state":"Leader","num_peers":"2","applied_index":"14"},"consul":{"server":"true","leader":"true"}}}"#,
        )
        .unwrap();
        assert_eq!(
            format_info(&Stats::of(&me).unwrap()),
            "consul:\n\tleader = true\n\tserver = true\nraft:\n\tapplied_index = 14\n\tnum_peers = 2\n\tstate = Leader"
        );
    }

    #[test]
    fn info_prints_other_values_as_json_and_needs_stats() {
        let me: BTreeMap<String, serde_json::Value> = serde_json::from_str(
            r#"{"Stats":{"b":{"n":2,"f":2.5,"t":true,"z":null,"l":[1,"x"],"o":{"k":"v"}},"a":"flat"}}"#,
        )
        .unwrap();
        assert_eq!(
            format_info(&Stats::of(&me).unwrap()),
            "a:\nb:\n\tf = 2.5\n\tl = [1,\"x\"]\n\tn = 2\n\to = {\"k\":\"v\"}\n\tt = true\n\tz ="
        );
        let me: BTreeMap<String, serde_json::Value> =
            serde_json::from_str(r#"{"Config":{"NodeName":"n1"},"Stats":"none"}"#).unwrap();
        assert_eq!(
            Stats::of(&me).unwrap_err(),
            r#"Agent response did not contain 'Stats' key: {"Config":{"NodeName":"n1"},"Stats":"none"}"#
        );
    }

    #[test]
    fn members_table_like_consul() {
        let rows: Vec<Member> = serde_json::from_str(
            r#"[{"Name":"consul-1","Addr":"10.0.0.1","Port":8301,"Status":1,"Tags":{"role":"consul","build":"1.0.0:abc","vsn":"2","dc":"dc1"}}]"#,
        )
        .unwrap();
        let out = format_members(&rows, false, None);
        assert_eq!(
            out.text,
            "Node      Address        Status  Type    Build  Protocol  DC   Segment\nconsul-1  10.0.0.1:8301  alive   server  1.0.0  2         dc1  <all>"
        );
        assert_eq!(format_members(&rows, false, Some("failed")).code, 2);
    }

    #[test]
    fn failures_read_like_consul_with_what_to_do() {
        let anonymous = client(&HttpArgs {
            http_addr: "127.0.0.1:8500".into(),
            token: None,
        })
        .unwrap();
        let forbidden = || client::Error::Status {
            code: 403,
            body: "Permission denied".into(),
        };
        assert_eq!(
            failure(&anonymous, forbidden()),
            "Unexpected response code: 403 (Permission denied); the agent requires an ACL token: set CONSUL_HTTP_TOKEN or --token to its --acl-token"
        );
        let with_token = client(&HttpArgs {
            http_addr: "127.0.0.1:8500".into(),
            token: Some("secret".into()),
        })
        .unwrap();
        assert!(failure(&with_token, forbidden()).ends_with(
            "; the token in CONSUL_HTTP_TOKEN/--token was refused: use the agent's --acl-token"
        ));
        assert_eq!(
            failure(
                &anonymous,
                client::Error::Status {
                    code: 500,
                    body: "No cluster leader".into()
                }
            ),
            "Unexpected response code: 500 (No cluster leader)"
        );
        assert_eq!(
            failure(
                &anonymous,
                client::Error::Unreachable {
                    addr: "http://127.0.0.1:8500".into(),
                    detail: "connection refused".into()
                }
            ),
            "Error connecting to the agent at http://127.0.0.1:8500: connection refused (is `pilotfish agent` running? set --http-addr or CONSUL_HTTP_ADDR)"
        );
    }

    #[test]
    fn values_are_text() {
        let entry = |value: Option<&str>| KvPair {
            lock_index: 0,
            key: "k".into(),
            flags: 0,
            value: value.map(String::from),
            session: None,
            create_index: 1,
            modify_index: 1,
        };
        assert_eq!(value_text(&entry(Some("aGVsbG8="))), "hello");
        assert_eq!(value_text(&entry(None)), "");
    }

    #[tokio::test]
    async fn ip_join_targets_pass_through() {
        assert_eq!(join_targets("10.0.0.1", None).await.unwrap(), ["10.0.0.1"]);
        assert_eq!(
            join_targets("127.0.0.2:8301", None).await.unwrap(),
            ["127.0.0.2:8301"]
        );
    }
}
