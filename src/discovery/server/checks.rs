//! The agent's check runner: executes this node's checks registered through
//! `/v1/agent/*` (TTL, HTTP(S), TCP, script) and writes their results as
//! [`Command::UpdateCheck`], and deregisters services whose check stayed
//! critical longer than `DeregisterCriticalServiceAfter`.
//!
//! What to run comes from the catalog itself: each check's `Type` and its
//! stored `Definition` (see `api::health::HealthCheckDefinition`). The runner
//! blocks on the catalog index and reconciles one task per check, restarting a
//! task when its definition changes. Only status changes are written (output
//! alone at most every 5 minutes, Consul's `check_update_interval`), so a
//! steady check never moves an index.
//!
//! TTL heartbeats that repeat the same status and output change nothing in the
//! state, so the TTL timers cannot be driven from the catalog: the HTTP
//! handlers record heartbeats in [`AgentLocal`], the small agent-local table
//! this runner shares with them.
//!
//! HTTPS checks verify the server's certificate against the system's roots
//! (rustls-platform-verifier, reqwest's default) unless the definition says
//! `TLSSkipVerify`, which uses a second client that accepts any certificate,
//! as Consul's `InsecureSkipVerify`. A refused certificate turns the check
//! critical with Go's x509 text and what to do about it.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::state::catalog::{Deregistration, Registration};
use super::state::checks::{CheckStatus, HealthCheck};
use super::state::Command;
use super::{Server, Topic};
use crate::discovery::api::gofmt::{format_duration, parse_duration};
use crate::discovery::api::health::HealthCheckDefinition;

pub use super::state::checks::OUTPUT_MAX_SIZE;
/// Consul's `MinInterval`: shorter intervals are raised to this.
const MIN_INTERVAL: Duration = Duration::from_secs(1);
const DEFAULT_HTTP_TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_SCRIPT_TIMEOUT: Duration = Duration::from_secs(30);
/// Consul's `check_deregister_interval_min`.
const MIN_DEREGISTER_AFTER: Duration = Duration::from_secs(60);
/// Consul's `check_update_interval`: output-only changes are written this rarely.
const OUTPUT_UPDATE_INTERVAL: Duration = Duration::from_secs(300);

/// Agent-local check state the catalog does not hold: when each TTL check
/// last heard from its owner.
pub struct AgentLocal {
    ttl_touched: Mutex<HashMap<String, Instant>>,
    /// Bumped on every heartbeat so TTL tasks re-arm their timers.
    touches: tokio::sync::watch::Sender<u64>,
    /// Serialises "TTL expired" writes with heartbeat writes, so an expiry
    /// decided just before a heartbeat cannot land after it.
    ttl_writes: tokio::sync::Mutex<()>,
    /// What this agent registered (`service:<id>`, `check:<id>`), so that
    /// anti-entropy can put back what the servers lost.
    registrations: Mutex<BTreeMap<String, Registration>>,
}

impl Default for AgentLocal {
    /// An empty table, made once per server (`Server::open_with`).
    fn default() -> AgentLocal {
        let (touches, _) = tokio::sync::watch::channel(0);
        AgentLocal {
            ttl_touched: Mutex::new(HashMap::new()),
            touches,
            ttl_writes: tokio::sync::Mutex::new(()),
            registrations: Mutex::new(BTreeMap::new()),
        }
    }
}

impl AgentLocal {
    /// The agent-local table of `server` (owned by the server, gone with it).
    pub fn of(server: &Server) -> Arc<AgentLocal> {
        server.agent_local().clone()
    }

    /// Remember a registration this agent made (`key`: `service:<id>` or
    /// `check:<id>`).
    pub fn remember(&self, key: String, reg: Registration) {
        self.registrations
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, reg);
    }

    /// Forget a registration the agent removed.
    pub fn forget_registration(&self, key: &str) {
        self.registrations
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
    }

    fn registrations(&self) -> Vec<(String, Registration)> {
        self.registrations
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(k, r)| (k.clone(), r.clone()))
            .collect()
    }

    fn table(&self) -> std::sync::MutexGuard<'_, HashMap<String, Instant>> {
        self.ttl_touched.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A TTL check was registered or heard from: restart its timer.
    pub fn touch_ttl(&self, check_id: &str) {
        self.table().insert(check_id.to_string(), Instant::now());
        self.touches.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// The check is gone.
    pub fn forget(&self, check_id: &str) {
        self.table().remove(check_id);
    }

    /// When the check was last heard from (now, if never).
    fn touched(&self, check_id: &str) -> Instant {
        *self
            .table()
            .entry(check_id.to_string())
            .or_insert_with(Instant::now)
    }

    /// Hold while deciding and writing a TTL check's status.
    pub async fn ttl_write_lock(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.ttl_writes.lock().await
    }
}

/// Cut a TTL update's output like Consul's `CheckTTL.SetStatus`.
pub fn truncate_ttl_output(output: String) -> String {
    super::state::checks::truncate_output(output)
}

/// Keep the last bytes of a script's output like Consul's circular buffer.
fn truncate_script_output(out: Vec<u8>) -> String {
    if out.len() <= OUTPUT_MAX_SIZE {
        return String::from_utf8_lossy(&out).into_owned();
    }
    let tail = &out[out.len() - OUTPUT_MAX_SIZE..];
    format!(
        "Captured {} of {} bytes\n...\n{}",
        OUTPUT_MAX_SIZE,
        out.len(),
        String::from_utf8_lossy(tail)
    )
}

/// Check types the runner executes (others are catalog-only checks).
fn is_agent_check(check_type: &str) -> bool {
    matches!(
        check_type,
        "ttl" | "http" | "tcp" | "script" | "docker" | "grpc"
    )
}

fn duration(s: &str) -> Option<Duration> {
    if s.is_empty() {
        return None;
    }
    parse_duration(s).ok().filter(|d| !d.is_zero())
}

/// The HTTP clients of HTTP(S) checks: one verifying certificates, one for
/// `TLSSkipVerify`.
struct Clients {
    verify: reqwest::Client,
    skip_verify: reqwest::Client,
}

impl Clients {
    fn new() -> reqwest::Result<Clients> {
        crate::discovery::server::tls::install_default_provider();
        let builder = || {
            reqwest::Client::builder()
                .no_proxy()
                .user_agent("Consul Health Check")
        };
        // Without system trust roots (a FROM scratch image) HTTP checks and
        // TLSSkipVerify ones still run; verifying HTTPS checks fail, saying why.
        let verify = match builder().build() {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(
                    "check runner: {e}; HTTPS checks that verify certificates will fail (install CA certificates, or set TLSSkipVerify)"
                );
                builder()
                    .tls_certs_only(Vec::<reqwest::Certificate>::new())
                    .build()?
            }
        };
        Ok(Clients {
            verify,
            skip_verify: builder().tls_danger_accept_invalid_certs(true).build()?,
        })
    }

    fn for_check(&self, def: &HealthCheckDefinition) -> reqwest::Client {
        if def.tls_skip_verify {
            self.skip_verify.clone()
        } else {
            self.verify.clone()
        }
    }
}

struct Running {
    check_type: String,
    definition: String,
    task: JoinHandle<()>,
}

/// How often anti-entropy compares the agent's registrations with the
/// catalog (Consul syncs about once a minute on small clusters; a lost
/// registration is cheap to notice here, one read per registration).
pub const ANTI_ENTROPY_EVERY: Duration = Duration::from_secs(5);

/// Anti-entropy (Consul's agent sync): every [`ANTI_ENTROPY_EVERY`], put
/// back any service or check this agent registered that the catalog lost
/// (a servers' snapshot restore, an operator's `catalog/deregister`, a
/// client whose node was reaped while it was unreachable).
pub async fn anti_entropy(server: Server, shutdown: CancellationToken) {
    let local = AgentLocal::of(&server);
    let node = server.config().node.clone();
    let mut tick = tokio::time::interval(ANTI_ENTROPY_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        for (key, reg) in local.registrations() {
            let present = server.read(|s| match key.split_once(':') {
                Some(("service", id)) => s
                    .catalog_node(&node)
                    .0
                    .is_some_and(|ns| ns.services.iter().any(|svc| svc.id == id)),
                Some(("check", id)) => s.check(&node, id).is_some(),
                _ => true,
            });
            if present {
                continue;
            }
            tracing::info!("anti-entropy: {key} is missing from the catalog; registering it again");
            if let Err(e) = server.write(Command::Register(reg)).await {
                tracing::warn!("anti-entropy: registering {key}: {e}");
            }
        }
    }
}

/// Run this node's checks until `shutdown`, writing status changes.
pub async fn run(server: Server, shutdown: CancellationToken) {
    let local = AgentLocal::of(&server);
    let client = match Clients::new() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("check runner: building the HTTP client failed: {e}");
            shutdown.cancelled().await;
            return;
        }
    };
    let node = server.config().node.clone();
    let mut tasks: HashMap<String, Running> = HashMap::new();
    let mut critical_since: HashMap<String, Instant> = HashMap::new();
    let mut index = 0;
    let mut reap_at: Option<Instant> = None;
    // The runner's own query of this node's checks (shared with nobody).
    let watch: Arc<str> = format!("check runner\n{node}").into();
    loop {
        let me = node.clone();
        let far = Instant::now() + Duration::from_secs(3600);
        let checks = tokio::select! {
            _ = shutdown.cancelled() => break,
            (checks, idx) = server.block_on(watch.clone(), Topic::Other, index, Duration::from_secs(300), |s| s.catalog_index(), move |s| s.health_node(&me).0) => {
                index = idx;
                checks
            }
            _ = tokio::time::sleep_until(reap_at.unwrap_or(far)) => {
                Arc::new(server.read(|s| s.health_node(&node).0))
            }
        };
        reconcile(&server, &local, &client, &mut tasks, &checks);
        reap_at = reap(&server, &node, &checks, &mut critical_since).await;
    }
    for (_, r) in tasks.drain() {
        r.task.abort();
    }
}

/// Start, restart and stop per-check tasks to match the catalog.
fn reconcile(
    server: &Server,
    local: &Arc<AgentLocal>,
    clients: &Clients,
    tasks: &mut HashMap<String, Running>,
    checks: &[HealthCheck],
) {
    let wanted: HashMap<&str, &HealthCheck> = checks
        .iter()
        .filter(|c| is_agent_check(&c.check_type))
        .map(|c| (c.check_id.as_str(), c))
        .collect();
    tasks.retain(|id, r| {
        let keep = wanted
            .get(id.as_str())
            .is_some_and(|c| c.check_type == r.check_type && c.definition == r.definition);
        if !keep {
            r.task.abort();
            if !wanted.contains_key(id.as_str()) {
                local.forget(id);
            }
        }
        keep
    });
    for (id, c) in wanted {
        if tasks.contains_key(id) {
            continue;
        }
        let def = HealthCheckDefinition::from_stored(&c.definition).unwrap_or_default();
        let probe = Probe {
            server: server.clone(),
            local: local.clone(),
            client: clients.for_check(&def),
            check_id: id.to_string(),
            def,
        };
        let task = tokio::spawn(probe.run(c.check_type.clone()));
        tasks.insert(
            id.to_string(),
            Running {
                check_type: c.check_type.clone(),
                definition: c.definition.clone(),
                task,
            },
        );
    }
}

/// Deregister services whose check has been critical longer than its
/// `DeregisterCriticalServiceAfter`; returns when to look again.
async fn reap(
    server: &Server,
    node: &str,
    checks: &[HealthCheck],
    critical_since: &mut HashMap<String, Instant>,
) -> Option<Instant> {
    let now = Instant::now();
    let mut next: Option<Instant> = None;
    let mut seen = Vec::new();
    for c in checks {
        let Some(after) = HealthCheckDefinition::from_stored(&c.definition)
            .and_then(|d| duration(&d.deregister_critical_service_after))
        else {
            continue;
        };
        if c.service_id.is_empty() || c.status != CheckStatus::Critical {
            continue;
        }
        seen.push(c.check_id.clone());
        let since = *critical_since.entry(c.check_id.clone()).or_insert(now);
        let due = since + after.max(MIN_DEREGISTER_AFTER);
        if now >= due {
            tracing::info!(
                "check {:?} has been critical for {:?}: deregistering service {:?}",
                c.check_id,
                now - since,
                c.service_id
            );
            let cmd = Command::Deregister(Deregistration {
                node: node.to_string(),
                service_id: Some(c.service_id.clone()),
                check_id: None,
            });
            if let Err(e) = server.write(cmd).await {
                tracing::warn!("deregistering service {:?}: {e}", c.service_id);
            }
            critical_since.remove(&c.check_id);
            seen.pop();
        } else {
            next = Some(next.map_or(due, |n| n.min(due)));
        }
    }
    critical_since.retain(|id, _| seen.contains(id));
    next
}

/// One check's task.
struct Probe {
    server: Server,
    local: Arc<AgentLocal>,
    client: reqwest::Client,
    check_id: String,
    def: HealthCheckDefinition,
}

impl Probe {
    async fn run(self, check_type: String) {
        match check_type.as_str() {
            "ttl" => self.run_ttl().await,
            "http" | "tcp" => self.run_interval(&check_type).await,
            "script" if self.server.config().enable_script_checks => {
                self.run_interval(&check_type).await
            }
            "script" => {
                let why = "Scripts are disabled on this agent; to enable, configure 'enable_script_checks' to true";
                self.report(CheckStatus::Critical, why.to_string(), &mut None)
                    .await;
            }
            other => {
                let why = format!("pilotfish does not run {other} checks");
                self.report(CheckStatus::Critical, why, &mut None).await;
            }
        }
    }

    fn current(&self) -> Option<HealthCheck> {
        let node = &self.server.config().node;
        self.server.read(|s| s.check(node, &self.check_id))
    }

    /// Write a result if the status changed (or the output, at most every
    /// [`OUTPUT_UPDATE_INTERVAL`]).
    async fn report(&self, status: CheckStatus, output: String, last: &mut Option<Instant>) {
        let Some(cur) = self.current() else { return };
        let output_due = last.is_none_or(|t| t.elapsed() >= OUTPUT_UPDATE_INTERVAL);
        if cur.status == status && (cur.output == output || !output_due) {
            return;
        }
        let cmd = Command::UpdateCheck {
            node: self.server.config().node.clone(),
            check_id: self.check_id.clone(),
            status,
            output,
        };
        match self.server.write(cmd).await {
            Ok(_) => *last = Some(Instant::now()),
            Err(e) => tracing::warn!("check {:?}: writing its status: {e}", self.check_id),
        }
    }

    async fn run_ttl(self) {
        let Some(ttl) = duration(&self.def.ttl) else {
            return;
        };
        let mut changes = self.local.touches.subscribe();
        loop {
            changes.borrow_and_update();
            let deadline = self.local.touched(&self.check_id) + ttl;
            if Instant::now() < deadline {
                tokio::select! {
                    _ = tokio::time::sleep_until(deadline) => {}
                    r = changes.changed() => if r.is_err() { return },
                }
                continue;
            }
            {
                let _guard = self.local.ttl_write_lock().await;
                let expired = self.local.touched(&self.check_id) + ttl <= Instant::now();
                let already = self
                    .current()
                    .is_none_or(|c| c.status == CheckStatus::Critical && c.output == "TTL expired");
                if expired && !already {
                    self.report(CheckStatus::Critical, "TTL expired".to_string(), &mut None)
                        .await;
                }
            }
            if changes.changed().await.is_err() {
                return;
            }
        }
    }

    async fn run_interval(self, check_type: &str) {
        let interval = duration(&self.def.interval)
            .unwrap_or(MIN_INTERVAL)
            .max(MIN_INTERVAL);
        // Consul staggers the first run randomly within the interval.
        tokio::time::sleep(interval.mul_f64(rand::random::<f64>())).await;
        let mut last = None;
        loop {
            let (status, output) = match check_type {
                "http" => self.http().await,
                "tcp" => self.tcp().await,
                _ => self.script().await,
            };
            self.report(status, output, &mut last).await;
            tokio::time::sleep(interval).await;
        }
    }

    fn timeout(&self, default: Duration) -> Duration {
        duration(&self.def.timeout).unwrap_or(default)
    }

    async fn http(&self) -> (CheckStatus, String) {
        let url = &self.def.http;
        let method = if self.def.method.is_empty() {
            "GET".to_string()
        } else {
            self.def.method.to_uppercase()
        };
        let m = match reqwest::Method::from_bytes(method.as_bytes()) {
            Ok(m) => m,
            Err(_) => {
                return (
                    CheckStatus::Critical,
                    format!("invalid HTTP method {method:?}"),
                )
            }
        };
        let mut req = self
            .client
            .request(m, url)
            .timeout(self.timeout(DEFAULT_HTTP_TIMEOUT))
            .header("Accept", "text/plain, text/*, */*");
        for (k, values) in &self.def.header {
            for v in values {
                req = req.header(k, v);
            }
        }
        if !self.def.body.is_empty() {
            req = req.body(self.def.body.clone());
        }
        let mut resp = match req.send().await {
            Ok(r) => r,
            Err(e) => {
                let text = match certificate_error(&e) {
                    Some(why) => why,
                    None => {
                        let mut text = e.to_string();
                        let mut src = std::error::Error::source(&e);
                        while let Some(s) = src {
                            text.push_str(&format!(": {s}"));
                            src = s.source();
                        }
                        text
                    }
                };
                return (CheckStatus::Critical, format!("{method} {url}: {text}"));
            }
        };
        let code = resp.status();
        let mut body = Vec::new();
        while body.len() < OUTPUT_MAX_SIZE {
            match resp.chunk().await {
                Ok(Some(chunk)) => body.extend_from_slice(&chunk),
                _ => break,
            }
        }
        body.truncate(OUTPUT_MAX_SIZE);
        let output = format!(
            "HTTP {method} {url}: {} {} Output: {}",
            code.as_u16(),
            code.canonical_reason().unwrap_or(""),
            String::from_utf8_lossy(&body)
        );
        let status = if code.is_success() {
            CheckStatus::Passing
        } else if code.as_u16() == 429 {
            CheckStatus::Warning
        } else {
            CheckStatus::Critical
        };
        (status, output)
    }

    async fn tcp(&self) -> (CheckStatus, String) {
        let addr = &self.def.tcp;
        let connect = tokio::net::TcpStream::connect(addr.as_str());
        match tokio::time::timeout(self.timeout(DEFAULT_HTTP_TIMEOUT), connect).await {
            Ok(Ok(_)) => (CheckStatus::Passing, format!("TCP connect {addr}: Success")),
            Ok(Err(e)) => (
                CheckStatus::Critical,
                format!("dial tcp {addr}: connect: {e}"),
            ),
            Err(_) => (
                CheckStatus::Critical,
                format!("dial tcp {addr}: i/o timeout"),
            ),
        }
    }

    async fn script(&self) -> (CheckStatus, String) {
        let Some((prog, args)) = self.def.script_args.split_first() else {
            return (CheckStatus::Critical, "no script to run".to_string());
        };
        let mut cmd = tokio::process::Command::new(prog);
        cmd.args(args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        let timeout = self.timeout(DEFAULT_SCRIPT_TIMEOUT);
        let out = match tokio::time::timeout(timeout, cmd.output()).await {
            Ok(Ok(out)) => out,
            Ok(Err(e)) => return (CheckStatus::Critical, format!("Failed to exec: {e}")),
            Err(_) => {
                return (
                    CheckStatus::Critical,
                    format!("Timed out ({}) running check", format_duration(timeout)),
                )
            }
        };
        let mut text = out.stdout;
        text.extend_from_slice(&out.stderr);
        let status = match out.status.code() {
            Some(0) => CheckStatus::Passing,
            Some(1) => CheckStatus::Warning,
            _ => CheckStatus::Critical,
        };
        (status, truncate_script_output(text))
    }
}

/// The rustls error under a failed request, if any. hyper and tokio-rustls
/// nest it in `io::Error`s, whose `source()` skips the wrapped error, so
/// those are opened with `get_ref()`.
fn rustls_error(e: &reqwest::Error) -> Option<&rustls::Error> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(r) = err.downcast_ref::<rustls::Error>() {
            return Some(r);
        }
        cur = match err.downcast_ref::<std::io::Error>() {
            Some(io) => io
                .get_ref()
                .map(|inner| inner as &(dyn std::error::Error + 'static)),
            None => err.source(),
        };
    }
    None
}

/// A refused server certificate in Go's words (what Consul's output says),
/// followed by what to do.
fn certificate_error(e: &reqwest::Error) -> Option<String> {
    use rustls::CertificateError as C;

    let rustls::Error::InvalidCertificate(cert) = rustls_error(e)? else {
        return None;
    };
    let go = match cert {
        C::UnknownIssuer => "x509: certificate signed by unknown authority",
        C::Expired | C::ExpiredContext { .. } => "x509: certificate has expired",
        C::NotValidYet | C::NotValidYetContext { .. } => "x509: certificate is not yet valid",
        C::NotValidForName | C::NotValidForNameContext { .. } => {
            "x509: certificate is not valid for this host name"
        }
        C::Revoked => "x509: certificate has been revoked",
        _ => "x509: certificate is invalid",
    };
    Some(format!(
        "{go} (the certificate is not trusted: {cert:?}; give the server a certificate \
         the system trusts, or set TLSSkipVerify in the check to skip verification)"
    ))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn ttl_output_is_cut_like_consul() {
        assert_eq!(truncate_ttl_output("ok".into()), "ok");
        let long = "x".repeat(5000);
        let cut = truncate_ttl_output(long);
        assert!(cut.starts_with(&"x".repeat(4096)));
        assert!(cut.ends_with(" ... (captured 4096 of 5000 bytes)"));
    }

    #[test]
    fn script_output_keeps_the_tail() {
        let mut out = vec![b'a'; 100];
        out.extend(vec![b'z'; 4096]);
        let text = truncate_script_output(out);
        assert!(text.starts_with("Captured 4096 of 4196 bytes\n...\n"));
        let tail = text.split_once("...\n").unwrap().1;
        assert_eq!(tail, "z".repeat(4096), "the oldest bytes are dropped");
    }
}
