//! One service's registration with the discovery agent, as its own task: the
//! runtime tells it what happened (the process started or exited, a health
//! check passed or failed, maintenance, shutdown) and it keeps the agent in
//! step through `discovery::client`, never blocking the supervisor.
//!
//! What it fixes in ContainerPilot (its §4.2 and #455, #577):
//! - a failing check marks the TTL check critical at once, with the check's
//!   output, instead of waiting for the TTL to run out;
//! - a heartbeat the agent refuses (it restarted, or someone deregistered the
//!   service) leads to a new registration at once, with the address
//!   re-evaluated from `interfaces`; maintenance is applied again after it;
//! - maintenance uses the agent's service maintenance API, so the service
//!   stays registered but leaves `?passing` and DNS;
//! - an unreachable agent is logged once per outage and retried with backoff.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::config::duration::format_duration;
use crate::config::{CheckStatus, ServiceConfig};
use crate::control::ServiceStatus;
use crate::discovery::api::agent::{CheckDefinition, ServiceDefinition};
use crate::discovery::api::gofmt;
use crate::discovery::client::retry::{Backoff, Outage};
use crate::discovery::client::{Client, Error};
use crate::interfaces::InterfaceSpec;

/// What the runtime reports to a registration.
#[derive(Debug)]
pub enum RegInput {
    /// The job's process started.
    Started,
    /// A health check ended (or a heartbeat is due, for a job without one).
    Health {
        ok: bool,
        output: String,
    },
    /// The job's process ended.
    Exited {
        output: String,
    },
    Maintenance(bool),
    /// Leave the catalog; answered once the agent confirmed (or gave up on).
    Deregister(oneshot::Sender<()>),
}

/// The runtime's handle on one registration task.
pub struct Registration {
    tx: mpsc::UnboundedSender<RegInput>,
    status: Arc<Mutex<ServiceStatus>>,
    id: String,
}

impl Registration {
    /// Start the task for service `name`, whose TTL check expires after `ttl`
    /// without a heartbeat. `checked`: a health check decides when the
    /// service is passing; without one it passes as soon as it starts.
    pub fn spawn(
        name: &str,
        svc: &ServiceConfig,
        ttl: Duration,
        checked: bool,
        client: Client,
    ) -> Registration {
        let id = service_id(name, svc);
        let status = Arc::new(Mutex::new(ServiceStatus {
            name: name.to_string(),
            id: id.clone(),
            state: "unregistered".into(),
            ..ServiceStatus::default()
        }));
        let (tx, rx) = mpsc::unbounded_channel();
        let task = Task {
            spec: Spec::new(name, svc, ttl, id.clone()),
            checked,
            client,
            status: Arc::clone(&status),
            registered: false,
            ever_registered: false,
            maintenance: false,
            desired: None,
            outage: Outage::default(),
            backoff: Backoff::new(Duration::from_millis(500), Duration::from_secs(15)),
            retry_at: None,
            last_error: None,
        };
        tokio::spawn(task.run(rx));
        Registration { tx, status, id }
    }

    /// The service ID.
    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn send(&self, input: RegInput) {
        let _ = self.tx.send(input);
    }

    /// Ask for deregistration; the receiver completes once the agent
    /// answered (or the task gave up).
    pub fn deregister(&self) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        self.send(RegInput::Deregister(tx));
        rx
    }

    pub fn status(&self) -> ServiceStatus {
        self.status.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

/// `<name>-<hostname>` unless the job sets `id` (ContainerPilot's identity).
pub fn service_id(name: &str, svc: &ServiceConfig) -> String {
    svc.id.clone().unwrap_or_else(|| {
        let host = nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_else(|| "localhost".into());
        format!("{name}-{host}")
    })
}

/// Everything needed to (re-)register, fixed for the job's config.
#[derive(Debug, Clone)]
struct Spec {
    name: String,
    id: String,
    port: u16,
    tags: Vec<String>,
    meta: std::collections::BTreeMap<String, String>,
    interfaces: Vec<InterfaceSpec>,
    enable_tag_override: bool,
    ttl: Duration,
    deregister_after: Option<Duration>,
    initial_status: Option<CheckStatus>,
}

impl Spec {
    fn new(name: &str, svc: &ServiceConfig, ttl: Duration, id: String) -> Spec {
        Spec {
            name: name.to_string(),
            id,
            port: svc.port,
            tags: svc.tags.clone(),
            meta: svc.meta.clone(),
            interfaces: svc.interfaces.clone(),
            enable_tag_override: svc.enable_tag_override,
            ttl,
            deregister_after: svc.deregister_critical_service_after,
            initial_status: svc.initial_status,
        }
    }

    fn check_id(&self) -> String {
        format!("service:{}", self.id)
    }

    /// The body of `PUT /v1/agent/service/register`, shaped like
    /// ContainerPilot's (and the Go client's) with the check ID explicit.
    fn definition(&self, address: &str, status: CheckStatus) -> ServiceDefinition {
        ServiceDefinition {
            id: Some(self.id.clone()),
            name: Some(self.name.clone()),
            tags: Some(self.tags.clone()),
            address: Some(address.to_string()),
            port: Some(self.port),
            meta: (!self.meta.is_empty()).then(|| self.meta.clone()),
            enable_tag_override: Some(self.enable_tag_override),
            check: Some(CheckDefinition {
                check_id: Some(self.check_id()),
                name: Some(format!("Service '{}' check", self.name)),
                notes: Some(format!("TTL for {} set by pilotfish", self.name)),
                status: Some(status_text(status).to_string()),
                ttl: Some(gofmt::format_duration(self.ttl).into()),
                deregister_critical_service_after: self
                    .deregister_after
                    .map(|d| gofmt::format_duration(d).into()),
                ..CheckDefinition::default()
            }),
            ..ServiceDefinition::default()
        }
    }
}

fn status_text(s: CheckStatus) -> &'static str {
    match s {
        CheckStatus::Passing => "passing",
        CheckStatus::Warning => "warning",
        CheckStatus::Critical => "critical",
    }
}

struct Task {
    spec: Spec,
    /// A health check feeds the TTL; otherwise running is passing.
    checked: bool,
    client: Client,
    status: Arc<Mutex<ServiceStatus>>,
    /// The agent has the service, as far as we know.
    registered: bool,
    ever_registered: bool,
    maintenance: bool,
    /// The check status and output the agent should show.
    desired: Option<(CheckStatus, String)>,
    outage: Outage,
    backoff: Backoff,
    /// When to try again after a failed call.
    retry_at: Option<Instant>,
    /// The last error logged, so a repeated one is not logged again.
    last_error: Option<String>,
}

impl Task {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<RegInput>) {
        loop {
            let retry_at = self.retry_at;
            let input = tokio::select! {
                i = rx.recv() => match i {
                    Some(i) => Some(i),
                    None => break,
                },
                () = async {
                    match retry_at {
                        Some(t) => tokio::time::sleep_until(t).await,
                        None => std::future::pending().await,
                    }
                } => None,
            };
            match input {
                None => {
                    self.retry_at = None;
                    self.sync().await;
                }
                Some(RegInput::Started) if !self.checked => {
                    self.desired = Some((CheckStatus::Passing, "running".into()));
                    self.sync().await;
                }
                Some(RegInput::Started) => {
                    if let Some(s) = self.spec.initial_status {
                        if self.desired.is_none() {
                            self.desired = Some((s, String::new()));
                            self.sync().await;
                        }
                    }
                }
                Some(RegInput::Health { ok, output }) => {
                    let status = if ok {
                        CheckStatus::Passing
                    } else {
                        CheckStatus::Critical
                    };
                    let output = if output.is_empty() && ok {
                        "ok".to_string()
                    } else {
                        output
                    };
                    self.desired = Some((status, output));
                    self.sync().await;
                }
                Some(RegInput::Exited { output }) => {
                    if self.desired.is_some() {
                        self.desired = Some((CheckStatus::Critical, output));
                        self.sync().await;
                    }
                }
                Some(RegInput::Maintenance(enable)) => {
                    if self.maintenance != enable {
                        self.maintenance = enable;
                        if self.registered {
                            self.apply_maintenance().await;
                        }
                        self.publish();
                    }
                }
                Some(RegInput::Deregister(reply)) => {
                    self.deregister().await;
                    let _ = reply.send(());
                    // Nothing more to do: the job is gone or pilotfish stops.
                    break;
                }
            }
        }
    }

    /// Bring the agent in line with `desired`: a heartbeat, or a
    /// (re-)registration when the agent does not have the service.
    async fn sync(&mut self) {
        let Some((status, output)) = self.desired.clone() else {
            return;
        };
        if !self.registered {
            // Absent until the first passing check, unless an initial status
            // was asked for or the agent lost a service it had.
            if status != CheckStatus::Passing
                && !self.ever_registered
                && self.spec.initial_status.is_none()
            {
                return;
            }
            if !self.register(status).await {
                return;
            }
        }
        let heartbeat = self.heartbeat(status, &output).await;
        let heartbeat = match heartbeat {
            Err(e) if !matches!(e, Error::Unreachable { .. }) => {
                // The agent answered but refused: it no longer knows the
                // check (it restarted, or the service was deregistered behind
                // our back). Consul says so with a 404 or, in older versions,
                // a 500 ("does not have associated TTL"). Register again.
                tracing::warn!(
                    "service {} ({}): the agent refused the heartbeat ({e}); registering again",
                    self.spec.name,
                    self.spec.id
                );
                self.registered = false;
                if !self.register(status).await {
                    return;
                }
                self.heartbeat(status, &output).await
            }
            other => other,
        };
        match heartbeat {
            Ok(()) => self.succeeded(status),
            Err(e) => self.failed("heartbeat", &e),
        }
    }

    /// `PUT /v1/agent/check/update/service:<id>` with this status and output.
    async fn heartbeat(&self, status: CheckStatus, output: &str) -> Result<(), Error> {
        self.client
            .update_check(&self.spec.check_id(), status_text(status), output)
            .await
    }

    /// Register with the address evaluated now; true on success.
    async fn register(&mut self, status: CheckStatus) -> bool {
        let address = match crate::interfaces::resolve(&self.spec.interfaces) {
            Ok(ip) => ip.to_string(),
            Err(e) => {
                self.failed_text(
                    "registration",
                    format!("cannot pick an address: {e}"),
                    false,
                );
                return false;
            }
        };
        let def = self.spec.definition(&address, status);
        match self.client.register_service(&def).await {
            Ok(()) => {
                tracing::info!(
                    "service {} registered as {} at {address}:{}",
                    self.spec.name,
                    self.spec.id,
                    self.spec.port
                );
                self.registered = true;
                self.ever_registered = true;
                if let Ok(mut s) = self.status.lock() {
                    s.address = Some(format!("{address}:{}", self.spec.port));
                }
                if self.maintenance {
                    self.apply_maintenance().await;
                }
                true
            }
            Err(e) => {
                self.failed("registration", &e);
                false
            }
        }
    }

    async fn apply_maintenance(&mut self) {
        let reason = "pilotfish maintenance mode";
        match self
            .client
            .service_maintenance(&self.spec.id, self.maintenance, Some(reason))
            .await
        {
            Ok(()) => tracing::info!(
                "service {}: maintenance {}",
                self.spec.id,
                if self.maintenance { "on" } else { "off" }
            ),
            Err(e) => self.failed("maintenance", &e),
        }
    }

    async fn deregister(&mut self) {
        if !self.ever_registered {
            return;
        }
        match self.client.deregister_service(&self.spec.id).await {
            Ok(()) => tracing::info!("service {} deregistered", self.spec.id),
            Err(e) => tracing::warn!(
                "service {}: deregistration failed: {e}; the agent removes it when its TTL check expires{}",
                self.spec.id,
                self.spec
                    .deregister_after
                    .map(|d| format!(
                        " and it has been critical for {}",
                        format_duration(d)
                    ))
                    .unwrap_or_default()
            ),
        }
        self.registered = false;
        if let Ok(mut s) = self.status.lock() {
            s.state = "deregistered".into();
        }
    }

    fn succeeded(&mut self, status: CheckStatus) {
        let now = Instant::now();
        if let Some((lasted, failures)) = self.outage.recover(now) {
            tracing::info!(
                "service {}: the agent at {} answers again after {} ({failures} failed attempts)",
                self.spec.id,
                self.client.address(),
                format_duration(lasted)
            );
        }
        self.backoff.reset();
        self.last_error = None;
        let was = self
            .status
            .lock()
            .map(|s| s.state.clone())
            .unwrap_or_default();
        let critical = status != CheckStatus::Passing;
        if critical && was != "critical" {
            tracing::warn!(
                "service {}: check critical: {}",
                self.spec.id,
                self.desired
                    .as_ref()
                    .map(|(_, o)| o.as_str())
                    .unwrap_or_default()
            );
        } else if !critical && was == "critical" {
            tracing::info!("service {}: check passing again", self.spec.id);
        }
        if let Ok(mut s) = self.status.lock() {
            s.state = status_text(status).into();
            if critical {
                s.critical_since
                    .get_or_insert_with(crate::control::unix_now);
            } else {
                s.critical_since = None;
            }
            s.outage_since = None;
            s.last_error = None;
        }
        self.publish();
    }

    fn failed(&mut self, what: &str, e: &Error) {
        self.failed_text(what, e.to_string(), e.is_outage());
    }

    /// Log a failure once (per outage, or per distinct error), keep it for
    /// `/v3/status`, and retry after a backoff.
    fn failed_text(&mut self, what: &str, text: String, outage: bool) {
        let now = Instant::now();
        if outage {
            if self.outage.fail(now) {
                tracing::warn!(
                    "service {}: {what} failed: {text}; retrying with backoff until the agent answers",
                    self.spec.id
                );
            }
        } else if self.last_error.as_deref() != Some(text.as_str()) {
            tracing::error!("service {}: {what} failed: {text}", self.spec.id);
            self.last_error = Some(text.clone());
        }
        if let Ok(mut s) = self.status.lock() {
            if outage {
                s.outage_since.get_or_insert_with(crate::control::unix_now);
            }
            s.last_error = Some(text);
        }
        self.retry_at = Some(now + self.backoff.next_delay());
    }

    /// Maintenance shows over the check state.
    fn publish(&self) {
        if let Ok(mut s) = self.status.lock() {
            if self.maintenance && self.registered {
                s.state = "maintenance".into();
            } else if s.state == "maintenance" {
                s.state = self
                    .desired
                    .as_ref()
                    .map(|(st, _)| status_text(*st).to_string())
                    .unwrap_or_else(|| "unregistered".into());
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn spec() -> Spec {
        Spec {
            name: "web".into(),
            id: "web-host1".into(),
            port: 8080,
            tags: vec!["rest".into()],
            meta: [("version".to_string(), "2".to_string())].into(),
            interfaces: vec![],
            enable_tag_override: false,
            ttl: Duration::from_secs(10),
            deregister_after: Some(Duration::from_secs(600)),
            initial_status: None,
        }
    }

    #[test]
    fn the_definition_is_containerpilots_with_an_explicit_check_id() {
        let def = spec().definition("10.0.0.5", CheckStatus::Passing);
        let json = serde_json::to_value(&def).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "ID": "web-host1",
                "Name": "web",
                "Tags": ["rest"],
                "Address": "10.0.0.5",
                "Port": 8080,
                "Meta": {"version": "2"},
                "EnableTagOverride": false,
                "Check": {
                    "CheckID": "service:web-host1",
                    "Name": "Service 'web' check",
                    "Notes": "TTL for web set by pilotfish",
                    "Status": "passing",
                    "TTL": "10s",
                    "DeregisterCriticalServiceAfter": "10m0s"
                }
            })
        );
    }

    #[test]
    fn ids_default_to_name_and_hostname() {
        let svc = ServiceConfig {
            port: 80,
            id: None,
            meta: Default::default(),
            tags: vec![],
            interfaces: vec![],
            initial_status: None,
            deregister_critical_service_after: None,
            enable_tag_override: false,
        };
        let host = nix::unistd::gethostname().unwrap().into_string().unwrap();
        assert_eq!(service_id("web", &svc), format!("web-{host}"));
        let svc = ServiceConfig {
            id: Some("web-1".into()),
            ..svc
        };
        assert_eq!(service_id("web", &svc), "web-1");
    }
}
