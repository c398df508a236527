//! The HAProxy half of the reload-free mode: deciding whether going from the
//! installed HAProxy config to a newly rendered one can be done through HAProxy's
//! Runtime API instead of a reload, and doing it. [`plan`] (pure) compares the two
//! texts: when only `server` lines inside `backend`/`listen` sections differ, it
//! returns the Runtime API commands that turn the running HAProxy into what the new
//! file describes; anything else is a [`Change::Reload`]. [`apply`] (the I/O shell)
//! sends those commands over the admin stats socket and checks every answer. This
//! module does not write the file, render templates or reload HAProxy: the caller
//! installs the rendered file either way (so the next real reload reads the same
//! servers) and reloads when told to. Written against HAProxy 2.6's Runtime API;
//! every answer it expects was observed on 2.6.12.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

/// What must happen to go from the installed config to the rendered one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Nothing differs.
    None,
    /// Only servers differ: these Runtime API commands, in order, apply it.
    Runtime(Vec<String>),
    /// Something other than servers differs: render + reload.
    Reload,
}

/// Why a change needs a reload; for the caller's log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReloadReason(String);

impl fmt::Display for ReloadReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Pure: compares two HAProxy config texts.
pub fn plan(installed: &str, rendered: &str) -> Change {
    match diff(installed, rendered) {
        Ok(commands) if commands.is_empty() => Change::None,
        Ok(commands) => Change::Runtime(commands),
        Err(_) => Change::Reload,
    }
}

/// [`plan`] with the reason when a reload is needed: `Ok` holds the Runtime API
/// commands (empty when nothing differs).
pub fn diff(installed: &str, rendered: &str) -> Result<Vec<String>, ReloadReason> {
    let old = Config::parse(installed);
    let new = Config::parse(rendered);
    if old.sections.len() != new.sections.len() {
        return Err(reason(format!(
            "the installed config has {} sections and the rendered one {}",
            old.sections.len(),
            new.sections.len()
        )));
    }
    for (o, n) in old.sections.iter().zip(&new.sections) {
        if o.header != n.header {
            return Err(reason(format!(
                "section `{}` became `{}`",
                o.header.join(" "),
                n.header.join(" ")
            )));
        }
        if o.lines != n.lines {
            return Err(reason(format!(
                "section `{}` differs in more than its server lines",
                o.header.join(" ")
            )));
        }
    }

    // Additions first, removals last, so a backend whose servers are all being
    // replaced always has one to send requests to.
    let mut adds = Vec::new();
    let mut changes = Vec::new();
    let mut removals = Vec::new();
    for (index, (o, n)) in old.sections.iter().zip(&new.sections).enumerate() {
        let Some(backend) = n.proxy_name() else {
            continue;
        };
        let old_servers = servers_by_name(o)?;
        let new_servers = servers_by_name(n)?;
        if old_servers == new_servers {
            continue;
        }
        let settings = new.settings(index);
        for server in n.servers.iter() {
            let id = format!("{backend}/{}", server.name);
            match old_servers.get(server.name.as_str()) {
                None => {
                    settings.allows_runtime_servers(backend)?;
                    if settings.default_server {
                        return Err(reason(format!(
                            "server {id} is new and backend `{backend}` uses `default-server`, \
                             which dynamic servers do not inherit"
                        )));
                    }
                    adds.extend(add_commands(&id, server)?);
                }
                Some(before) => {
                    changes.extend(change_commands(&id, before, server, &settings, backend)?)
                }
            }
        }
        for server in o.servers.iter() {
            if !new_servers.contains_key(server.name.as_str()) {
                settings.allows_runtime_servers(backend)?;
                let id = format!("{backend}/{}", server.name);
                removals.push(format!("set server {id} state maint"));
                removals.push(format!("del server {id}"));
            }
        }
    }
    adds.extend(changes);
    adds.extend(removals);
    Ok(adds)
}

fn reason(text: String) -> ReloadReason {
    ReloadReason(text)
}

fn servers_by_name(section: &Section) -> Result<BTreeMap<&str, &Server>, ReloadReason> {
    let mut by_name = BTreeMap::new();
    for server in &section.servers {
        if by_name.insert(server.name.as_str(), server).is_some() {
            return Err(reason(format!(
                "section `{}` has two servers named `{}`",
                section.header.join(" "),
                server.name
            )));
        }
    }
    Ok(by_name)
}

/// The commands creating `server` at runtime, or why it cannot be.
fn add_commands(id: &str, server: &Server) -> Result<Vec<String>, ReloadReason> {
    if parse_addr(&server.addr).is_none() {
        return Err(reason(format!(
            "new server {id} has address `{}`, not an IP address with a port; \
             dynamic servers do not resolve names",
            server.addr
        )));
    }
    let mut check = false;
    let mut disabled = false;
    let mut rest = server.options.iter();
    while let Some(keyword) = rest.next() {
        if keyword.contains(['"', '\'', '\\', '$']) {
            return Err(reason(format!(
                "new server {id} has option `{keyword}`, which the Runtime API would not \
                 unquote or expand like the config parser does"
            )));
        }
        let Some(arity) = dynamic_keyword_arity(keyword) else {
            return Err(reason(format!(
                "new server {id} uses `{keyword}`, which `add server` does not accept in \
                 HAProxy 2.6 (or pilotfish does not pass on)"
            )));
        };
        for _ in 0..arity {
            match rest.next() {
                Some(value) if !value.contains(['"', '\'', '\\', '$']) => {}
                Some(value) => {
                    return Err(reason(format!(
                        "new server {id} has `{keyword} {value}`, which the Runtime API \
                         would not unquote or expand like the config parser does"
                    )))
                }
                None => {
                    return Err(reason(format!(
                        "new server {id}: `{keyword}` lacks its value"
                    )))
                }
            }
        }
        match keyword.as_str() {
            "check" => check = true,
            "disabled" => disabled = true,
            "enabled" => disabled = false,
            _ => {}
        }
    }
    let mut line = format!("add server {id} {}", server.addr);
    for option in &server.options {
        line.push(' ');
        line.push_str(option);
    }
    let mut commands = vec![line];
    // Dynamic servers start with health checks off and in maintenance; a server
    // line without `disabled` means "in service" after a reload, so the same here.
    if check {
        commands.push(format!("enable health {id}"));
    }
    if !disabled {
        commands.push(format!("enable server {id}"));
    }
    Ok(commands)
}

/// How many values follow a `server` keyword that HAProxy 2.6's `add server`
/// accepts; `None` for every other keyword. Left out on purpose although 2.6
/// accepts them: `track` (cannot track another dynamic server, and a tracked
/// server cannot be deleted), the agent keywords (an agent can bring a server out
/// of the maintenance `del server` needs), and `source`/`usesrc` (variable
/// syntax). A line using them is applied by a reload.
fn dynamic_keyword_arity(keyword: &str) -> Option<usize> {
    const FLAGS: &[&str] = &[
        "allow-0rtt",
        "backup",
        "check",
        "check-send-proxy",
        "check-ssl",
        "check-via-socks4",
        "disabled",
        "enabled",
        "force-sslv3",
        "force-tlsv10",
        "force-tlsv11",
        "force-tlsv12",
        "force-tlsv13",
        "no-ssl-reuse",
        "no-sslv3",
        "no-tlsv10",
        "no-tlsv11",
        "no-tlsv12",
        "no-tlsv13",
        "no-tls-tickets",
        "send-proxy",
        "send-proxy-v2",
        "send-proxy-v2-ssl",
        "send-proxy-v2-ssl-cn",
        "ssl",
        "tfo",
        "tls-tickets",
    ];
    const WITH_VALUE: &[&str] = &[
        "alpn",
        "addr",
        "ca-file",
        "check-alpn",
        "check-proto",
        "check-sni",
        "ciphers",
        "ciphersuites",
        "crl-file",
        "crt",
        "downinter",
        "error-limit",
        "fall",
        "fastinter",
        "id",
        "inter",
        "maxconn",
        "maxqueue",
        "minconn",
        "npn",
        "observe",
        "on-error",
        "on-marked-down",
        "on-marked-up",
        "pool-low-conn",
        "pool-max-conn",
        "pool-purge-delay",
        "port",
        "proto",
        "proxy-v2-options",
        "rise",
        "slowstart",
        "sni",
        "ssl-max-ver",
        "ssl-min-ver",
        "verify",
        "verifyhost",
        "weight",
        "ws",
    ];
    if FLAGS.contains(&keyword) {
        Some(0)
    } else if WITH_VALUE.contains(&keyword) {
        Some(1)
    } else {
        None
    }
}

/// The commands turning server `before` into `after` (same name), or why the
/// difference needs a reload.
fn change_commands(
    id: &str,
    before: &Server,
    after: &Server,
    settings: &Settings,
    backend: &str,
) -> Result<Vec<String>, ReloadReason> {
    let mut commands = Vec::new();
    if before.options != after.options {
        let (old_weight, old_rest) = split_weight(&before.options);
        let (new_weight, new_rest) = split_weight(&after.options);
        match (old_weight, new_weight) {
            (Some(_), Some(weight)) if old_rest == new_rest => {
                // The map-based algorithms ignore weight changes made at runtime.
                settings.allows_runtime_servers(backend)?;
                commands.push(format!("set server {id} weight {weight}"));
            }
            _ => {
                return Err(reason(format!(
                    "server {id} changed options from `{}` to `{}`",
                    before.options.join(" "),
                    after.options.join(" ")
                )))
            }
        }
    }
    if before.default_servers_before != after.default_servers_before {
        return Err(reason(format!(
            "server {id} moved across a `default-server` line, which changes its settings"
        )));
    }
    if before.addr != after.addr {
        match (parse_addr(&before.addr), parse_addr(&after.addr)) {
            (Some(old), Some(new)) if old == new => {}
            (Some(_), Some((ip, port))) => {
                commands.insert(0, format!("set server {id} addr {ip} port {port}"));
            }
            _ => {
                return Err(reason(format!(
                    "server {id} moved from `{}` to `{}`; only IP:port addresses change at runtime",
                    before.addr, after.addr
                )))
            }
        }
    }
    Ok(commands)
}

/// The value of a single `weight N` option (when the line has exactly one and N is a
/// number) and the other options.
fn split_weight(options: &[String]) -> (Option<&str>, Vec<&str>) {
    let mut weight = None;
    let mut count = 0;
    let mut rest = Vec::new();
    let mut tokens = options.iter();
    while let Some(token) = tokens.next() {
        if token == "weight" {
            count += 1;
            weight = tokens.next().map(String::as_str);
        } else {
            rest.push(token.as_str());
        }
    }
    match weight {
        Some(w) if count == 1 && !w.is_empty() && w.bytes().all(|b| b.is_ascii_digit()) => {
            (Some(w), rest)
        }
        _ => (None, options.iter().map(String::as_str).collect()),
    }
}

/// `ip:port`, `[ipv6]:port` or HAProxy's own `ipv6:port` (the last colon starts the
/// port). Anything else (names, `unix@`, port ranges or offsets, no port) is `None`.
fn parse_addr(addr: &str) -> Option<(IpAddr, u16)> {
    let (host, port) = match addr.strip_prefix('[') {
        Some(rest) => {
            let (host, port) = rest.split_once("]:")?;
            (host, port)
        }
        None => addr.rsplit_once(':')?,
    };
    if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let port: u16 = port.parse().ok().filter(|p| *p != 0)?;
    Some((host.parse().ok()?, port))
}

// ------------------------------------------------------------------ parsing

/// Keywords that start a section. Everything in a section that is not a `server`
/// line of a `backend`/`listen` section is compared as normalised text.
const SECTION_KEYWORDS: &[&str] = &[
    "global",
    "defaults",
    "frontend",
    "backend",
    "listen",
    "resolvers",
    "userlist",
    "peers",
    "program",
    "mailers",
    "http-errors",
    "ring",
    "cache",
    "fcgi-app",
    "log-forward",
];

/// A config split into sections; lines before the first section form a section
/// with an empty header.
struct Config {
    sections: Vec<Section>,
}

struct Section {
    /// The header line's tokens (`backend app`).
    header: Vec<String>,
    /// Every line but the servers of a proxy section, normalised.
    lines: Vec<String>,
    /// Server lines, only in `backend` and `listen` sections.
    servers: Vec<Server>,
}

#[derive(Debug, PartialEq, Eq)]
struct Server {
    name: String,
    addr: String,
    options: Vec<String>,
    /// How many `default-server` lines precede this server in its section: the
    /// ones it inherits from.
    default_servers_before: usize,
}

/// What a backend's load balancing and defaults allow at runtime.
struct Settings {
    balance: Option<Vec<String>>,
    hash_type: Option<String>,
    default_server: bool,
}

impl Config {
    fn parse(text: &str) -> Config {
        let mut sections = vec![Section {
            header: Vec::new(),
            lines: Vec::new(),
            servers: Vec::new(),
        }];
        for raw in text.lines() {
            let tokens = tokenize(raw);
            let Some(first) = tokens.first() else {
                continue;
            };
            if SECTION_KEYWORDS.contains(&first.as_str()) {
                sections.push(Section {
                    header: tokens,
                    lines: Vec::new(),
                    servers: Vec::new(),
                });
                continue;
            }
            // Infallible: `sections` starts non-empty and only grows.
            let Some(section) = sections.last_mut() else {
                continue;
            };
            if section.proxy_name().is_some() && first == "server" && tokens.len() >= 3 {
                let default_servers_before = section
                    .lines
                    .iter()
                    .filter(|l| l.starts_with("default-server"))
                    .count();
                section.servers.push(Server {
                    name: tokens[1].clone(),
                    addr: tokens[2].clone(),
                    options: tokens[3..].to_vec(),
                    default_servers_before,
                });
            } else {
                section.lines.push(tokens.join(" "));
            }
        }
        Config { sections }
    }

    /// The effective load-balancing settings of the proxy section at `index`: its
    /// own lines, else those of the defaults section it inherits from (the one
    /// named by `from`, else the last one before it), recursively.
    fn settings(&self, index: usize) -> Settings {
        let mut settings = Settings {
            balance: None,
            hash_type: None,
            default_server: false,
        };
        let mut current = Some(index);
        // Bounded: a `from` cycle is a config error HAProxy reports; do not loop on it.
        for _ in 0..self.sections.len() {
            let Some(at) = current else { break };
            let section = &self.sections[at];
            // Backwards: within a section the last `balance` line is the one in force.
            for line in section.lines.iter().rev() {
                let tokens: Vec<&str> = line.split(' ').collect();
                match tokens[0] {
                    "balance" if settings.balance.is_none() => {
                        settings.balance =
                            Some(tokens[1..].iter().map(|t| t.to_string()).collect());
                    }
                    "hash-type" if settings.hash_type.is_none() => {
                        settings.hash_type = tokens.get(1).map(|t| t.to_string());
                    }
                    "default-server" => settings.default_server = true,
                    _ => {}
                }
            }
            current = self.parent(at);
        }
        settings
    }

    /// The defaults section the section at `index` inherits from.
    fn parent(&self, index: usize) -> Option<usize> {
        let header = &self.sections[index].header;
        let from = header
            .iter()
            .position(|t| t == "from")
            .and_then(|at| header.get(at + 1));
        // A defaults section inherits only through an explicit `from`; a proxy
        // without one inherits from the last defaults section before it.
        if from.is_none() && header.first().map(String::as_str) == Some("defaults") {
            return None;
        }
        self.sections[..index].iter().rposition(|s| {
            s.header.first().map(String::as_str) == Some("defaults")
                && match from {
                    Some(name) => s.header.get(1) == Some(name),
                    None => true,
                }
        })
    }
}

impl Section {
    /// The proxy name of a `backend` or `listen` section.
    fn proxy_name(&self) -> Option<&str> {
        match self.header.first().map(String::as_str) {
            Some("backend" | "listen") => self.header.get(1).map(String::as_str),
            _ => None,
        }
    }
}

impl Settings {
    /// Whether servers may be added to or deleted from `backend`, or change
    /// weight, at runtime: HAProxy 2.6 refuses the first two ("Backend must use a dynamic load balancing to
    /// support dynamic servers.") for the map-based algorithms: `static-rr` and
    /// hashing without `hash-type consistent`, and ignores the third there.
    fn allows_runtime_servers(&self, backend: &str) -> Result<(), ReloadReason> {
        let algorithm = self
            .balance
            .as_ref()
            .and_then(|b| b.first())
            .map(String::as_str)
            .unwrap_or("roundrobin");
        let name = algorithm.split('(').next().unwrap_or(algorithm);
        let dynamic = match name {
            "roundrobin" | "leastconn" | "first" | "random" => true,
            "source" | "uri" | "url_param" | "hdr" | "rdp-cookie" | "hash" => {
                self.hash_type.as_deref() == Some("consistent")
            }
            _ => false,
        };
        if dynamic {
            Ok(())
        } else {
            Err(reason(format!(
                "backend `{backend}` balances with `{}` (hash-type {}), which cannot add, \
                 delete or reweigh servers at runtime",
                self.balance
                    .as_ref()
                    .map(|b| b.join(" "))
                    .unwrap_or_default(),
                self.hash_type.as_deref().unwrap_or("map-based")
            )))
        }
    }
}

/// A line's words without its comment: `#` starts a comment unless quoted or
/// escaped. Quotes and escapes stay in the words, which are only compared.
fn tokenize(line: &str) -> Vec<String> {
    let mut tokens = Vec::new();
    let mut token = String::new();
    let mut quote = None;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (_, '\\') => {
                token.push(c);
                if let Some(next) = chars.next() {
                    token.push(next);
                }
            }
            (None, '#') => break,
            (None, '"' | '\'') => {
                quote = Some(c);
                token.push(c);
            }
            (Some(q), _) if c == q => {
                quote = None;
                token.push(c);
            }
            (None, c) if c.is_whitespace() => {
                if !token.is_empty() {
                    tokens.push(std::mem::take(&mut token));
                }
            }
            _ => token.push(c),
        }
    }
    if !token.is_empty() {
        tokens.push(token);
    }
    tokens
}

// ------------------------------------------------------------------ applying

/// Why [`apply`] stopped. Every variant names the command; commands before it
/// took effect, the ones after it were not sent. The caller's way out is a reload
/// with the new file, which puts HAProxy into the state the file describes.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "haproxy admin socket {}: `{command}`: {source}; check that HAProxy runs with \
         `stats socket {} level admin`",
        socket.display(),
        socket.display()
    )]
    Io {
        socket: PathBuf,
        command: String,
        source: std::io::Error,
    },
    #[error(
        "haproxy admin socket {}: no answer to `{command}` within {timeout:?}; is HAProxy stuck?",
        socket.display()
    )]
    Timeout {
        socket: PathBuf,
        command: String,
        timeout: Duration,
    },
    #[error("haproxy refused `{command}`: {answer:?}")]
    Refused { command: String, answer: String },
}

/// Limits of [`apply_with`].
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// How long one command may take, connecting included.
    pub command_timeout: Duration,
    /// How long to keep retrying a `del server` refused because the server
    /// still has connections.
    pub drain: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            command_timeout: Duration::from_secs(5),
            drain: Duration::from_secs(2),
        }
    }
}

/// Sends the commands over the admin socket (one connection per command), checks
/// each answer, returns an error naming the failing command and HAProxy's answer.
pub async fn apply(socket: &Path, commands: &[String]) -> Result<(), Error> {
    apply_with(socket, commands, Limits::default()).await
}

/// [`apply`] with explicit limits.
pub async fn apply_with(socket: &Path, commands: &[String], limits: Limits) -> Result<(), Error> {
    for command in commands {
        if command.starts_with("del server ") {
            delete_server(socket, command, limits).await?;
        } else {
            let answer = send(socket, command, limits.command_timeout).await?;
            if !accepted(command, &answer) {
                return Err(Error::Refused {
                    command: command.clone(),
                    answer: answer.trim().to_string(),
                });
            }
        }
    }
    Ok(())
}

/// `del server` refuses ("Server still has connections attached to it, cannot
/// remove it.") while any connection to the server exists, in use or idle.
/// Measured on 2.6.12:
/// - entering maintenance closes the server's idle connections at once and sends
///   it no new requests; requests in flight go on and finish on their own;
/// - but a keep-alive client's connection that was serving a request then goes
///   back to the idle pool afterwards, and nothing closes it for good (the purge
///   task closes half the idle connections every `pool-purge-delay`, never the
///   last one), so `del server` would be refused for ever;
/// - leaving maintenance for `drain` and entering it again closes them (nothing
///   else tried did: `health down`, `weight 0`, `disable server`, same `addr`).
///
/// So: retry, and before each retry go through `drain` back to `maint`. A drained
/// server takes no load-balanced requests, only persistent ones (cookie, stick
/// table), and only for the moment between the two commands.
/// `shutdown sessions server` would free the server sooner by cutting the
/// requests in flight, which is what the reload-free mode exists to avoid. Past
/// `limits.drain`, leave the server in maintenance: it takes no traffic, and the
/// next reload drops it because the new file lacks it.
async fn delete_server(socket: &Path, command: &str, limits: Limits) -> Result<(), Error> {
    let id = command.trim_start_matches("del server ").trim();
    let deadline = tokio::time::Instant::now() + limits.drain;
    let mut pause = Duration::from_millis(10);
    loop {
        let answer = send(socket, command, limits.command_timeout).await?;
        let answer = answer.trim();
        if answer == "Server deleted." {
            return Ok(());
        }
        if !answer.starts_with("Server still has connections") {
            return Err(Error::Refused {
                command: command.to_string(),
                answer: answer.to_string(),
            });
        }
        if tokio::time::Instant::now() + pause > deadline {
            tracing::warn!(
                command,
                answer,
                drain = ?limits.drain,
                "haproxy server still busy; left in maintenance until the next reload removes it"
            );
            return Ok(());
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(200));
        for state in ["drain", "maint"] {
            let purge = format!("set server {id} state {state}");
            let answer = send(socket, &purge, limits.command_timeout).await?;
            if !accepted(&purge, &answer) {
                return Err(Error::Refused {
                    command: purge,
                    answer: answer.trim().to_string(),
                });
            }
        }
    }
}

/// Whether `answer` is HAProxy 2.6's answer to `command` succeeding. The Runtime
/// API has no status code: a command that worked answers nothing or a fixed
/// sentence, an error answers a sentence saying what is wrong.
fn accepted(command: &str, answer: &str) -> bool {
    let answer = answer.trim();
    if command.starts_with("add server ") {
        answer == "New server registered."
    } else if command.starts_with("del server ") {
        answer == "Server deleted."
    } else if command.starts_with("set server ") && command.contains(" addr ") {
        // "IP changed from 'a' to 'b', port changed from '1' to '2' by 'stats socket
        // command'", either half possibly "no need to change the addr/port"; an
        // error replaces one half (e.g. "problem converting port").
        let Some((ip, rest)) = answer.split_once(", ") else {
            return false;
        };
        (ip.starts_with("IP changed from ") || ip == "no need to change the addr")
            && (rest.starts_with("port changed from ")
                || rest.starts_with("no need to change the port"))
    } else {
        answer.is_empty()
    }
}

/// One command on its own connection: HAProxy answers and closes it.
async fn send(socket: &Path, command: &str, timeout: Duration) -> Result<String, Error> {
    let io_error = |source| Error::Io {
        socket: socket.to_path_buf(),
        command: command.to_string(),
        source,
    };
    let exchange = async {
        let mut stream = UnixStream::connect(socket).await?;
        stream.write_all(format!("{command}\n").as_bytes()).await?;
        // Nothing more to say; a CLI that would wait for more (as the master CLI
        // does) sees the end and answers.
        stream.shutdown().await?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await?;
        Ok::<_, std::io::Error>(String::from_utf8_lossy(&answer).into_owned())
    };
    match tokio::time::timeout(timeout, exchange).await {
        Ok(result) => result.map_err(io_error),
        Err(_) => Err(Error::Timeout {
            socket: socket.to_path_buf(),
            command: command.to_string(),
            timeout,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "\
global
    stats socket /run/haproxy/admin.sock mode 600 level admin
defaults
    mode http
    timeout connect 5s
frontend www
    bind :80
    acl api path_beg /api
    use_backend api if api
    default_backend web
backend web
    balance roundrobin
    server web1 10.0.0.1:8080 check
    server web2 10.0.0.2:8080 check
backend api
    server api1 10.0.1.1:9000
";

    fn runtime(commands: &[&str]) -> Change {
        Change::Runtime(commands.iter().map(|c| c.to_string()).collect())
    }

    fn reload_reason(installed: &str, rendered: &str) -> String {
        match diff(installed, rendered) {
            Err(reason) => reason.to_string(),
            Ok(commands) => panic!("expected a reload, got {commands:?}"),
        }
    }

    #[test]
    fn identical_configs_need_nothing() {
        assert_eq!(plan(BASE, BASE), Change::None);
    }

    #[test]
    fn comments_blank_lines_and_spacing_need_nothing() {
        let rendered = BASE
            .replace(
                "    mode http\n",
                "    # rendered by pilotfish\n\n\tmode   http  # always\n",
            )
            .replace("backend api\n", "backend api   # the API\n\n");
        assert_eq!(plan(BASE, &rendered), Change::None);
    }

    #[test]
    fn a_hash_inside_quotes_is_not_a_comment() {
        let installed = BASE.replace(
            "bind :80",
            "http-response set-header X-Tag \"a#b\"\n    bind :80",
        );
        let rendered = installed.replace("a#b", "a#c");
        assert_eq!(plan(&installed, &rendered), Change::Reload);
    }

    #[test]
    fn server_order_is_irrelevant() {
        let rendered = BASE.replace(
            "    server web1 10.0.0.1:8080 check\n    server web2 10.0.0.2:8080 check\n",
            "    server web2 10.0.0.2:8080 check\n    server web1 10.0.0.1:8080 check\n",
        );
        assert_eq!(plan(BASE, &rendered), Change::None);
    }

    #[test]
    fn an_added_server_is_added_checked_and_enabled() {
        let rendered = BASE.replace(
            "    server web2 10.0.0.2:8080 check\n",
            "    server web2 10.0.0.2:8080 check\n    server web3 10.0.0.3:8080 check inter 2s weight 20\n",
        );
        assert_eq!(
            plan(BASE, &rendered),
            runtime(&[
                "add server web/web3 10.0.0.3:8080 check inter 2s weight 20",
                "enable health web/web3",
                "enable server web/web3",
            ])
        );
    }

    #[test]
    fn an_added_server_without_check_is_only_enabled_and_a_disabled_one_neither() {
        let rendered = BASE.replace(
            "    server api1 10.0.1.1:9000\n",
            "    server api1 10.0.1.1:9000\n    server api2 10.0.1.2:9000\n    server api3 10.0.1.3:9000 disabled\n",
        );
        assert_eq!(
            plan(BASE, &rendered),
            runtime(&[
                "add server api/api2 10.0.1.2:9000",
                "enable server api/api2",
                "add server api/api3 10.0.1.3:9000 disabled",
            ])
        );
    }

    #[test]
    fn a_removed_server_goes_to_maintenance_then_is_deleted() {
        let rendered = BASE.replace("    server web1 10.0.0.1:8080 check\n", "");
        assert_eq!(
            plan(BASE, &rendered),
            runtime(&["set server web/web1 state maint", "del server web/web1"])
        );
    }

    #[test]
    fn replacing_every_server_adds_before_it_removes() {
        let rendered = BASE.replace("server api1 10.0.1.1:9000", "server api9 10.0.1.9:9000");
        assert_eq!(
            plan(BASE, &rendered),
            runtime(&[
                "add server api/api9 10.0.1.9:9000",
                "enable server api/api9",
                "set server api/api1 state maint",
                "del server api/api1",
            ])
        );
    }

    #[test]
    fn a_moved_server_changes_address_and_port() {
        let rendered = BASE.replace("web2 10.0.0.2:8080", "web2 10.0.0.12:8081");
        assert_eq!(
            plan(BASE, &rendered),
            runtime(&["set server web/web2 addr 10.0.0.12 port 8081"])
        );
    }

    #[test]
    fn ipv6_addresses_in_either_spelling() {
        let installed = BASE.replace("web2 10.0.0.2:8080", "web2 [fd00::2]:8080");
        // The same address in HAProxy's bracket-less spelling is no change.
        let same = BASE.replace("web2 10.0.0.2:8080", "web2 fd00::2:8080");
        assert_eq!(plan(&installed, &same), Change::None);
        let moved = BASE.replace("web2 10.0.0.2:8080", "web2 fd00::3:8080");
        assert_eq!(
            plan(&installed, &moved),
            runtime(&["set server web/web2 addr fd00::3 port 8080"])
        );
        let added = BASE.replace(
            "api1 10.0.1.1:9000",
            "api1 10.0.1.1:9000\n    server api2 ::1:9000",
        );
        assert_eq!(
            plan(BASE, &added),
            runtime(&["add server api/api2 ::1:9000", "enable server api/api2"])
        );
    }

    #[test]
    fn hostnames_and_odd_addresses_reload() {
        for addr in [
            "app.internal:8080",
            "10.0.0.9",
            "10.0.0.9:+1",
            "unix@/run/app.sock",
            "10.0.0.9:0",
        ] {
            let rendered = BASE.replace("web2 10.0.0.2:8080", &format!("web2 {addr}"));
            assert_eq!(plan(BASE, &rendered), Change::Reload, "{addr}");
            let added = BASE.replace(
                "api1 10.0.1.1:9000",
                &format!("api1 10.0.1.1:9000\n    server api2 {addr}"),
            );
            assert_eq!(plan(BASE, &added), Change::Reload, "{addr}");
        }
    }

    #[test]
    fn a_weight_change_is_set_and_other_option_changes_reload() {
        let installed = BASE.replace(
            "web2 10.0.0.2:8080 check",
            "web2 10.0.0.2:8080 check weight 10",
        );
        let reweighed = installed.replace("weight 10", "weight 30");
        assert_eq!(
            plan(&installed, &reweighed),
            runtime(&["set server web/web2 weight 30"])
        );
        let moved_and_reweighed = reweighed.replace("10.0.0.2:8080", "10.0.0.22:8080");
        assert_eq!(
            plan(&installed, &moved_and_reweighed),
            runtime(&[
                "set server web/web2 addr 10.0.0.22 port 8080",
                "set server web/web2 weight 30",
            ])
        );
        // From the implicit weight: what it was depends on default-server lines.
        let first_weight = BASE.replace(
            "web2 10.0.0.2:8080 check",
            "web2 10.0.0.2:8080 check weight 10",
        );
        assert_eq!(plan(BASE, &first_weight), Change::Reload);
        let unchecked = BASE.replace("web2 10.0.0.2:8080 check", "web2 10.0.0.2:8080");
        assert!(reload_reason(BASE, &unchecked).contains("server web/web2 changed options"));
    }

    #[test]
    fn a_new_backend_reloads() {
        let rendered = format!("{BASE}backend admin\n    server a1 10.0.2.1:80\n");
        assert!(reload_reason(BASE, &rendered).contains("sections"));
    }

    #[test]
    fn a_renamed_backend_reloads() {
        let rendered = BASE.replace("\nbackend api\n", "\nbackend apiv2\n");
        assert!(reload_reason(BASE, &rendered).contains("`backend api` became `backend apiv2`"));
    }

    #[test]
    fn an_acl_change_reloads() {
        let rendered = BASE.replace("path_beg /api", "path_beg /api/v2");
        assert!(reload_reason(BASE, &rendered).contains("`frontend www` differs"));
    }

    #[test]
    fn a_non_server_line_in_a_backend_reloads() {
        let rendered = BASE.replace(
            "    balance roundrobin\n",
            "    balance roundrobin\n    option httpchk\n",
        );
        assert_eq!(plan(BASE, &rendered), Change::Reload);
    }

    #[test]
    fn server_lines_outside_backends_are_plain_text() {
        let installed = format!("{BASE}ring logs\n    server log1 10.0.3.1:514\n");
        let rendered = installed.replace("10.0.3.1", "10.0.3.2");
        assert_eq!(plan(&installed, &rendered), Change::Reload);
    }

    #[test]
    fn listen_sections_count_as_backends() {
        let installed = format!(
            "{BASE}listen db\n    bind :5432\n    mode tcp\n    server db1 10.0.4.1:5432\n"
        );
        let rendered = installed.replace("db1 10.0.4.1", "db1 10.0.4.2");
        assert_eq!(
            plan(&installed, &rendered),
            runtime(&["set server db/db1 addr 10.0.4.2 port 5432"])
        );
    }

    #[test]
    fn default_server_allows_removal_and_moves_but_not_additions() {
        let installed = BASE.replace(
            "    balance roundrobin\n",
            "    balance roundrobin\n    default-server inter 2s fall 2\n",
        );
        let removed = installed.replace("    server web1 10.0.0.1:8080 check\n", "");
        assert_eq!(
            plan(&installed, &removed),
            runtime(&["set server web/web1 state maint", "del server web/web1"])
        );
        let moved = installed.replace("web1 10.0.0.1", "web1 10.0.0.11");
        assert_eq!(
            plan(&installed, &moved),
            runtime(&["set server web/web1 addr 10.0.0.11 port 8080"])
        );
        let added = installed.replace(
            "web2 10.0.0.2:8080 check\n",
            "web2 10.0.0.2:8080 check\n    server web3 10.0.0.3:8080 check\n",
        );
        assert!(reload_reason(&installed, &added).contains("default-server"));

        // Inherited from defaults counts too.
        let from_defaults = BASE.replace(
            "    timeout connect 5s\n",
            "    timeout connect 5s\n    default-server check\n",
        );
        let added = from_defaults.replace(
            "api1 10.0.1.1:9000",
            "api1 10.0.1.1:9000\n    server api2 10.0.1.2:9000",
        );
        assert_eq!(plan(&from_defaults, &added), Change::Reload);
    }

    #[test]
    fn a_server_moved_across_default_server_reloads() {
        let installed = BASE.replace(
            "    server web2 10.0.0.2:8080 check\n",
            "    default-server weight 50\n    server web2 10.0.0.2:8080 check\n",
        );
        let rendered = BASE.replace(
            "    server web1 10.0.0.1:8080 check\n    server web2 10.0.0.2:8080 check\n",
            "    server web2 10.0.0.2:8080 check\n    default-server weight 50\n    server web1 10.0.0.1:8080 check\n",
        );
        assert_eq!(plan(&installed, &rendered), Change::Reload);
    }

    #[test]
    fn static_balancing_cannot_change_membership() {
        for (balance, runtime_ok) in [
            ("balance static-rr", false),
            ("balance source", false),
            ("balance uri\n    hash-type map-based", false),
            ("balance source\n    hash-type consistent", true),
            ("balance hdr(host)\n    hash-type consistent sdbm", true),
            ("balance leastconn", true),
            ("balance first", true),
            ("balance random(2)", true),
        ] {
            let installed = BASE.replace("balance roundrobin", balance);
            let rendered = installed.replace("    server web1 10.0.0.1:8080 check\n", "");
            assert_eq!(
                matches!(plan(&installed, &rendered), Change::Runtime(_)),
                runtime_ok,
                "{balance}"
            );
            let reweighed = installed.replace(
                "web2 10.0.0.2:8080 check",
                "web2 10.0.0.2:8080 check weight 2",
            );
            let reweighed2 = reweighed.replace("weight 2", "weight 3");
            assert_eq!(
                matches!(plan(&reweighed, &reweighed2), Change::Runtime(_)),
                runtime_ok,
                "{balance}"
            );
            // An address change works whatever the algorithm.
            let moved = installed.replace("web1 10.0.0.1", "web1 10.0.0.11");
            assert!(
                matches!(plan(&installed, &moved), Change::Runtime(_)),
                "{balance}"
            );
        }
        // The last balance line of a section wins.
        let twice = BASE.replace(
            "balance roundrobin",
            "balance static-rr\n    balance roundrobin",
        );
        let removed = twice.replace("    server web1 10.0.0.1:8080 check\n", "");
        assert!(matches!(plan(&twice, &removed), Change::Runtime(_)));
        // The algorithm can come from the defaults section the backend inherits.
        let installed = BASE.replace("    mode http\n", "    mode http\n    balance static-rr\n");
        let rendered = installed.replace(
            "api1 10.0.1.1:9000",
            "api1 10.0.1.1:9000\n    server api2 10.0.1.2:9000",
        );
        assert!(reload_reason(&installed, &rendered).contains("static-rr"));
        // ...but not from one it does not inherit.
        let named = BASE
            .replace("defaults\n", "defaults plain\n")
            .replace(
                "frontend www",
                "defaults hashed\n    balance source\nfrontend www",
            )
            .replace("backend api", "backend api from plain");
        let rendered = named.replace(
            "api1 10.0.1.1:9000",
            "api1 10.0.1.1:9000\n    server api2 10.0.1.2:9000",
        );
        assert!(matches!(plan(&named, &rendered), Change::Runtime(_)));
        let unnamed_after = named.replace("backend api from plain", "backend api");
        let rendered = unnamed_after.replace(
            "api1 10.0.1.1:9000",
            "api1 10.0.1.1:9000\n    server api2 10.0.1.2:9000",
        );
        assert_eq!(plan(&unnamed_after, &rendered), Change::Reload);
    }

    #[test]
    fn keywords_add_server_does_not_take_reload() {
        for options in [
            "cookie s2",
            "track web/web1",
            "agent-check agent-port 9999",
            "resolvers dns",
            "check inter \"2s\"",
            "weight ${W}",
            "maxconn",
        ] {
            let rendered = BASE.replace(
                "api1 10.0.1.1:9000",
                &format!("api1 10.0.1.1:9000\n    server api2 10.0.1.2:9000 {options}"),
            );
            assert_eq!(plan(BASE, &rendered), Change::Reload, "{options}");
        }
    }

    #[test]
    fn duplicate_server_names_reload() {
        let rendered = BASE.replace("server web2 10.0.0.2", "server web1 10.0.0.2");
        assert_eq!(plan(BASE, &rendered), Change::Reload);
    }

    #[test]
    fn opaque_sections_compare_as_text() {
        let installed = format!("{BASE}resolvers dns\n    nameserver ns1 10.0.0.53:53\n");
        assert_eq!(
            plan(&installed, &installed.replace("  nameserver", "nameserver")),
            Change::None
        );
        assert_eq!(
            plan(&installed, &installed.replace(".53:53", ".54:53")),
            Change::Reload
        );
    }

    #[test]
    fn answers_seen_from_haproxy_2_6() {
        assert!(accepted("enable server web/web1", "\n"));
        assert!(!accepted("enable server web/web1", "No such server.\n\n"));
        assert!(accepted(
            "add server web/web3 10.0.0.3:80",
            "New server registered.\n\n"
        ));
        assert!(!accepted(
            "add server web/web3 10.0.0.3:80 cookie x",
            "'cookie' option is not accepted for dynamic server\n"
        ));
        assert!(accepted(
            "set server web/s2 addr 1.2.3.5 port 81",
            "IP changed from '1.2.3.4' to '1.2.3.5', port changed from '80' to '81' by 'stats socket command'\n\n"
        ));
        assert!(accepted(
            "set server web/s2 addr 1.2.3.5 port 81",
            "no need to change the addr, no need to change the port by 'stats socket command'\n"
        ));
        assert!(!accepted(
            "set server web/s2 addr 1.2.3.4 port abc",
            "IP changed from '1.2.3.5' to '1.2.3.4', problem converting port 'abc' to an int by 'stats socket command'\n"
        ));
        assert!(!accepted(
            "set server web/s2 addr nope port 80",
            "Invalid addr 'nope' by 'stats socket command'\n"
        ));
        assert!(!accepted(
            "set server web/s2 weight 500",
            "Absolute weight can only be between 0 and 256 inclusive.\n"
        ));
    }
}
