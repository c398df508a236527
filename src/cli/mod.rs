//! Consul-style CLI commands over the HTTP API: `info`, `members`, `join`,
//! `leave`, `force-leave`, `kv get|put|delete`, `catalog services`,
//! `snapshot save|restore`. Like the `consul` CLI they
//! are plain HTTP clients of `--http-addr` / `$CONSUL_HTTP_ADDR` (host:port or
//! a URL; default 127.0.0.1:8500) with the token from `$CONSUL_HTTP_TOKEN`, and
//! they print exactly what `consul` prints, because scripts parse it (the
//! autopilot Consul image reads `\tnum_peers = N` from `consul info`).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use serde_json::Value;

pub mod check;

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
    Ok(Out::ok(crate::discovery::api::kv::base64_encode(&key)))
}

/// Run one command; returns the exit status.
pub async fn run(cmd: ConsulCommand) -> i32 {
    let result = match cmd {
        ConsulCommand::Info { http } => info(&Api::new(&http)).await,
        ConsulCommand::Members {
            http,
            detailed,
            status,
        } => members(&Api::new(&http), detailed, status.as_deref()).await,
        ConsulCommand::Join {
            http,
            resolver,
            wan,
            addresses,
        } => join(&Api::new(&http), resolver, wan, &addresses).await,
        ConsulCommand::Leave { http } => Api::new(&http)
            .send(reqwest::Method::PUT, "/v1/agent/leave", None)
            .await
            .map(|_| Out::ok("Graceful leave complete")),
        ConsulCommand::Kv { command } => kv(command).await,
        ConsulCommand::Catalog {
            command: CatalogCommand::Services { http, tags },
        } => catalog_services(&Api::new(&http), tags).await,
        ConsulCommand::ForceLeave { http, prune, node } => {
            let path = format!(
                "/v1/agent/force-leave/{}{}",
                encode_path(&node),
                if prune { "?prune=1" } else { "" }
            );
            Api::new(&http)
                .send(reqwest::Method::PUT, &path, None)
                .await
                .map(|_| Out::ok(""))
                .map_err(|e| format!("Error force leaving: {e}"))
        }
        ConsulCommand::Snapshot {
            command: SnapshotCommand::Save { http, stale, file },
        } => snapshot_save(&Api::new(&http), stale, &file).await,
        ConsulCommand::Snapshot {
            command: SnapshotCommand::Restore { http, file },
        } => snapshot_restore(&Api::new(&http), &file).await,
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
fn client(http: &HttpArgs) -> Result<crate::discovery::client::Client, String> {
    crate::discovery::client::Client::new(&crate::discovery::client::Options {
        address: http.http_addr.clone(),
        token: http.token.clone(),
        tls: Default::default(),
    })
    .map_err(|e| e.to_string())
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

/// A minimal HTTP client of the agent.
struct Api {
    base: String,
    token: Option<String>,
    client: reqwest::Client,
}

impl Api {
    fn new(args: &HttpArgs) -> Api {
        let addr = args.http_addr.trim_end_matches('/');
        let base = if addr.starts_with("http://") || addr.starts_with("https://") {
            addr.to_string()
        } else {
            format!("http://{addr}")
        };
        Api {
            base,
            token: args.token.clone().filter(|t| !t.is_empty()),
            client: {
                crate::discovery::server::tls::install_default_provider();
                reqwest::Client::new()
            },
        }
    }

    /// Send a request; a non-2xx answer becomes an error carrying Consul's body.
    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<reqwest::Response, String> {
        let mut req = self.client.request(method, format!("{}{path}", self.base));
        if let Some(t) = &self.token {
            req = req.header("X-Consul-Token", t);
        }
        if let Some(b) = body {
            req = req.body(b);
        }
        let resp = req.send().await.map_err(|e| {
            format!(
                "Error connecting to the agent at {}: {e} (is `pilotfish agent` running? set --http-addr or CONSUL_HTTP_ADDR)",
                self.base
            )
        })?;
        if resp.status().is_success() {
            Ok(resp)
        } else {
            let status = resp.status();
            let text = resp.text().await.unwrap_or_default();
            Err(unexpected(status, &text, self.token.is_some()))
        }
    }

    async fn get_json(&self, path: &str) -> Result<Value, String> {
        let resp = self.send(reqwest::Method::GET, path, None).await?;
        resp.json()
            .await
            .map_err(|e| format!("Error decoding the agent's answer to {path}: {e}"))
    }
}

/// Consul's `Unexpected response code: N (body)`, plus what to do about a
/// 403: the agent wants a token (`--acl-token`) this command did not send,
/// or sent a wrong one.
fn unexpected(status: reqwest::StatusCode, body: &str, had_token: bool) -> String {
    let mut text = format!(
        "Unexpected response code: {} ({})",
        status.as_u16(),
        body.trim()
    );
    if status == reqwest::StatusCode::FORBIDDEN {
        text.push_str(if had_token {
            "; the token in CONSUL_HTTP_TOKEN/--token was refused: use the agent's --acl-token"
        } else {
            "; the agent requires an ACL token: set CONSUL_HTTP_TOKEN or --token to its --acl-token"
        });
    }
    text
}

/// Percent-encode a path segment (keys and IDs may hold any character).
fn encode_path(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A JSON value printed the way Go's `%s` prints the strings of `consul info`.
fn go_string(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

async fn info(api: &Api) -> Result<Out, String> {
    let me = api.get_json("/v1/agent/self").await?;
    let Some(stats) = me.get("Stats").and_then(Value::as_object) else {
        return Err(format!("Agent response did not contain 'Stats' key: {me}"));
    };
    Ok(Out::ok(format_info(stats)))
}

/// `consul info`'s layout: sorted sections, sorted `\tkey = value` lines.
fn format_info(stats: &serde_json::Map<String, Value>) -> String {
    let sections: BTreeMap<&String, &Value> = stats.iter().collect();
    let mut out = String::new();
    for (name, values) in sections {
        out.push_str(&format!("{name}:\n"));
        if let Some(obj) = values.as_object() {
            let keys: BTreeMap<&String, &Value> = obj.iter().collect();
            for (k, v) in keys {
                out.push_str(&format!("\t{k} = {}\n", go_string(v)));
            }
        }
    }
    out.trim_end().to_string()
}

async fn members(api: &Api, detailed: bool, status: Option<&str>) -> Result<Out, String> {
    let members = api.get_json("/v1/agent/members?segment=_all").await?;
    let rows = members.as_array().cloned().unwrap_or_default();
    Ok(format_members(&rows, detailed, status))
}

fn member_status(code: i64) -> &'static str {
    match code {
        1 => "alive",
        2 => "leaving",
        3 => "left",
        4 => "failed",
        _ => "none",
    }
}

fn format_members(rows: &[Value], detailed: bool, status: Option<&str>) -> Out {
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
    let mut sorted: Vec<&Value> = rows.iter().collect();
    sorted.sort_by_key(|m| m["Name"].as_str().unwrap_or_default().to_string());
    for m in sorted {
        let st = member_status(m["Status"].as_i64().unwrap_or(0));
        if wanted.as_ref().is_some_and(|w| !w.contains(&st)) {
            continue;
        }
        matched += 1;
        let addr = m["Addr"].as_str().unwrap_or_default();
        let port = m["Port"].as_u64().unwrap_or(0);
        let address = match addr.parse::<IpAddr>() {
            Ok(IpAddr::V6(v6)) => format!("[{v6}]:{port}"),
            _ => format!("{addr}:{port}"),
        };
        let tags = m["Tags"].as_object().cloned().unwrap_or_default();
        let tag = |k: &str| {
            tags.get(k)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        if detailed {
            let kv: BTreeMap<&String, String> =
                tags.iter().map(|(k, v)| (k, go_string(v))).collect();
            let joined: Vec<String> = kv.iter().map(|(k, v)| format!("{k}={v}")).collect();
            table.push(vec![
                m["Name"].as_str().unwrap_or_default().into(),
                address,
                st.into(),
                joined.join(","),
            ]);
        } else {
            let role = tag("role");
            let kind = match role.as_str() {
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
                m["Name"].as_str().unwrap_or_default().into(),
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
    api: &Api,
    resolver: Option<SocketAddr>,
    wan: bool,
    args: &[String],
) -> Result<Out, String> {
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
            let path = format!(
                "/v1/agent/join/{}{}",
                encode_path(t),
                if wan { "?wan=1" } else { "" }
            );
            match api.send(reqwest::Method::PUT, &path, None).await {
                Ok(_) => any = true,
                Err(e) => errors.push(format!("Error joining address '{t}': {e}")),
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

async fn kv(cmd: KvCommand) -> Result<Out, String> {
    match cmd {
        KvCommand::Get { http, recurse, key } => {
            let api = Api::new(&http);
            if recurse {
                let path = format!("/v1/kv/{}?recurse", encode_path(&key));
                let resp = api.client.get(format!("{}{path}", api.base));
                let resp = match &api.token {
                    Some(t) => resp.header("X-Consul-Token", t),
                    None => resp,
                };
                let resp = resp
                    .send()
                    .await
                    .map_err(|e| format!("Error querying Consul agent: {e}"))?;
                if resp.status() == reqwest::StatusCode::NOT_FOUND {
                    return Ok(Out::ok(""));
                }
                if !resp.status().is_success() {
                    let status = resp.status();
                    let body = resp.text().await.unwrap_or_default();
                    return Err(format!(
                        "Error querying Consul agent: {}",
                        unexpected(status, &body, api.token.is_some())
                    ));
                }
                let entries: Value = resp.json().await.map_err(|e| e.to_string())?;
                let lines: Vec<String> = entries
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|e| {
                        format!(
                            "{}:{}",
                            e["Key"].as_str().unwrap_or_default(),
                            decode_value(&e["Value"])
                        )
                    })
                    .collect();
                Ok(Out::ok(lines.join("\n")))
            } else {
                let path = format!("/v1/kv/{}?raw", encode_path(&key));
                let mut req = api.client.get(format!("{}{path}", api.base));
                if let Some(t) = &api.token {
                    req = req.header("X-Consul-Token", t);
                }
                let resp = req
                    .send()
                    .await
                    .map_err(|e| format!("Error querying Consul agent: {e}"))?;
                if resp.status() == reqwest::StatusCode::NOT_FOUND {
                    return Err(format!("Error! No key exists at: {key}"));
                }
                if !resp.status().is_success() {
                    let status = resp.status();
                    let body = resp.text().await.unwrap_or_default();
                    return Err(format!(
                        "Error querying Consul agent: {}",
                        unexpected(status, &body, api.token.is_some())
                    ));
                }
                let bytes = resp.bytes().await.map_err(|e| e.to_string())?;
                Ok(Out::ok(String::from_utf8_lossy(&bytes).into_owned()))
            }
        }
        KvCommand::Put { http, key, value } => {
            let api = Api::new(&http);
            let resp = api
                .send(
                    reqwest::Method::PUT,
                    &format!("/v1/kv/{}", encode_path(&key)),
                    Some(value.into_bytes()),
                )
                .await
                .map_err(|e| format!("Error! Failed writing data: {e}"))?;
            let ok = resp.text().await.unwrap_or_default();
            if ok.trim() != "true" {
                return Err(format!("Error! Failed writing data: {}", ok.trim()));
            }
            Ok(Out::ok(format!("Success! Data written to: {key}")))
        }
        KvCommand::Delete { http, recurse, key } => {
            let api = Api::new(&http);
            let path = format!(
                "/v1/kv/{}{}",
                encode_path(&key),
                if recurse { "?recurse" } else { "" }
            );
            api.send(reqwest::Method::DELETE, &path, None)
                .await
                .map_err(|e| format!("Error! Did not delete key {key}: {e}"))?;
            Ok(Out::ok(if recurse {
                format!("Success! Deleted keys with prefix: {key}")
            } else {
                format!("Success! Deleted key: {key}")
            }))
        }
    }
}

/// A KV entry's base64 `Value` as text.
fn decode_value(v: &Value) -> String {
    let Some(s) = v.as_str() else {
        return String::new();
    };
    let bytes = crate::discovery::api::kv::base64_decode(s).unwrap_or_default();
    String::from_utf8_lossy(&bytes).into_owned()
}

async fn catalog_services(api: &Api, tags: bool) -> Result<Out, String> {
    let services = api.get_json("/v1/catalog/services").await?;
    let map = services.as_object().cloned().unwrap_or_default();
    let sorted: BTreeMap<String, Value> = map.into_iter().collect();
    if !tags {
        return Ok(Out::ok(
            sorted.keys().cloned().collect::<Vec<_>>().join("\n"),
        ));
    }
    let rows: Vec<Vec<String>> = sorted
        .iter()
        .map(|(name, t)| {
            let mut list: Vec<String> = t.as_array().into_iter().flatten().map(go_string).collect();
            list.sort();
            vec![name.clone(), list.join(",")]
        })
        .collect();
    Ok(Out::ok(columns(&rows)))
}

/// `snapshot save FILE`: fetch, verify, then write atomically (FILE.tmp,
/// fsync, rename, fsync the directory), so FILE is the old file or the
/// complete new one. Mode 0600: the file holds every KV value.
async fn snapshot_save(api: &Api, stale: bool, file: &Path) -> Result<Out, String> {
    use crate::discovery::server::http::snapshot;

    let path = if stale {
        "/v1/snapshot?stale"
    } else {
        "/v1/snapshot"
    };
    let resp = api
        .send(reqwest::Method::GET, path, None)
        .await
        .map_err(|e| format!("Error saving snapshot: {e}"))?;
    let bytes = resp
        .bytes()
        .await
        .map_err(|e| format!("Error saving snapshot: reading the agent's answer: {e}"))?;
    let verified = snapshot::decode(&bytes)
        .map_err(|e| format!("Error verifying snapshot file: the agent sent a file that {e}"))?;
    write_atomically(file, &bytes)
        .map_err(|e| format!("Error writing snapshot file {}: {e}", file.display()))?;
    // Read back what is on disk: "verified" means the file, not the download.
    let on_disk = std::fs::read(file)
        .map_err(|e| format!("Error verifying snapshot file {}: {e}", file.display()))?;
    snapshot::decode(&on_disk)
        .map_err(|e| format!("Error verifying snapshot file {}: {e}", file.display()))?;
    Ok(Out::ok(format!(
        "Saved and verified snapshot to index {}",
        verified.index
    )))
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
async fn snapshot_restore(api: &Api, file: &Path) -> Result<Out, String> {
    use crate::discovery::server::http::snapshot;

    let bytes = std::fs::read(file)
        .map_err(|e| format!("Error opening snapshot file {}: {e}", file.display()))?;
    snapshot::decode(&bytes).map_err(|e| {
        format!(
            "Error verifying snapshot file {}: {e}. Nothing was restored.",
            file.display()
        )
    })?;
    api.send(reqwest::Method::PUT, "/v1/snapshot", Some(bytes))
        .await
        .map_err(|e| format!("Error restoring snapshot: {e}"))?;
    Ok(Out::ok("Restored snapshot"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_is_sorted_go_strings() {
        let stats: serde_json::Map<String, Value> = serde_json::from_str(
            r#"{"raft":{"state":"Leader","num_peers":"2","applied_index":"14"},"consul":{"server":"true","leader":"true"}}"#,
        )
        .unwrap();
        assert_eq!(
            format_info(&stats),
            "consul:\n\tleader = true\n\tserver = true\nraft:\n\tapplied_index = 14\n\tnum_peers = 2\n\tstate = Leader"
        );
    }

    #[test]
    fn members_table_like_consul() {
        let rows: Vec<Value> = serde_json::from_str(
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
    fn values_and_paths() {
        assert_eq!(decode_value(&Value::String("aGVsbG8=".into())), "hello");
        assert_eq!(decode_value(&Value::Null), "");
        assert_eq!(encode_path("a b/c:d"), "a%20b/c%3Ad");
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
