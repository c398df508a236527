//! The registrator's I/O shell: flags, the connection to Docker (subscribe
//! to events first, then list and inspect), the event loop, periodic
//! resyncs, retries while Consul is unreachable, and signals.
//!
//! The loop, in order:
//!
//! 1. Ping the agent (`GET /v1/status/leader`) until it answers
//!    (`--retry-attempts`, `--retry-interval`; -1 = forever, the default).
//! 2. Negotiate the Engine API version and subscribe to container events,
//!    from `since=<the last event's time>` after a reconnect.
//! 3. Reconcile fully: the running containers' services are registered
//!    (all of them on the first pass, only what differs later), and ours
//!    that no running container explains are deregistered (`--cleanup`
//!    widens "ours" to every Registrator-shaped ID of this host).
//! 4. Handle events (`start`, `die`, `destroy`, `health_status`) until the
//!    stream breaks, then back off and go to 2. A failed Consul call
//!    schedules a reconcile with backoff; the outage is logged once.
//!
//! SIGTERM/SIGINT stop it without deregistering anything (as Registrator):
//! a restarted registrator finds the same services and changes nothing,
//! and `DeregisterCriticalServiceAfter` removes those whose containers
//! die while no registrator runs.

use std::collections::BTreeMap;
use std::net::{IpAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::docker::{self, Docker, DockerError, Event};
use super::registry::{Action, DeregisterPolicy, Registry};
use super::rules::{self, Rules};
use crate::config::LoggingConfig;
use crate::discovery::api::gofmt::parse_duration;
use crate::discovery::client::retry::{Backoff, Outage};
use crate::discovery::client::{self, Client};
use crate::logging::LogFormatArg;

/// `pilotfish registrator` flags (Registrator's, double-dash spelling).
#[derive(Debug, Clone, clap::Args)]
pub struct RegistratorArgs {
    /// The agent: consul://HOST:PORT, or consul-tls://HOST:PORT (with
    /// $CONSUL_CACERT, $CONSUL_CLIENT_CERT, $CONSUL_CLIENT_KEY). The ACL
    /// token comes from $CONSUL_HTTP_TOKEN.
    #[arg(value_name = "REGISTRY_URI")]
    pub uri: String,
    /// The Docker daemon's socket (default: $DOCKER_HOST if unix://, else
    /// /var/run/docker.sock).
    #[arg(long, value_name = "PATH")]
    pub docker_socket: Option<PathBuf>,
    /// One address for every service (recommended: the address others
    /// reach this host at).
    #[arg(long, value_name = "ADDR")]
    pub ip: Option<IpAddr>,
    /// Register the container's own address and exposed port, not the
    /// host's and the published port.
    #[arg(long)]
    pub internal: bool,
    /// Only containers with SERVICE_NAME (or SERVICE_<port>_NAME).
    #[arg(long)]
    pub explicit: bool,
    /// Tags added to every service (comma list).
    #[arg(long, value_name = "TAGS", value_delimiter = ',')]
    pub tags: Vec<String>,
    /// Take each container's address from this label (a CIDR suffix is dropped).
    #[arg(long, value_name = "LABEL")]
    pub use_ip_from_label: Option<String>,
    /// The host name in service IDs (default: this host's name).
    #[arg(long, value_name = "NAME")]
    pub hostname: Option<String>,
    /// Reconcile with Docker and the agent every SECONDS (0 = only after a
    /// reconnect). Only what differs is registered again.
    #[arg(long, value_name = "SECONDS", default_value_t = 0)]
    pub resync: u64,
    /// Also deregister services of this host's Registrator-shaped IDs
    /// (`HOST:NAME:PORT[:udp]`) that no running container explains.
    #[arg(long)]
    pub cleanup: bool,
    /// When a container's exit deregisters its services.
    #[arg(long, value_enum, value_name = "WHEN", default_value_t = DeregisterPolicy::Always)]
    pub deregister: DeregisterPolicy,
    /// Agent pings at start before giving up (-1 = forever).
    #[arg(long, value_name = "N", default_value_t = -1, allow_negative_numbers = true)]
    pub retry_attempts: i64,
    /// Milliseconds between those pings.
    #[arg(long, value_name = "MS", default_value_t = 2000)]
    pub retry_interval: u64,
    /// Allow SERVICE_CHECK_SCRIPT (the script runs in the Consul agent).
    #[arg(long)]
    pub enable_script_checks: bool,
    /// DeregisterCriticalServiceAfter for checks that set none ("0" = none):
    /// a crashed container's service leaves even when no registrator runs.
    #[arg(long, value_name = "DURATION", default_value = "1m")]
    pub deregister_critical_after: String,
    #[arg(long, value_name = "LEVEL", default_value = "info")]
    pub log_level: String,
    #[arg(long, value_name = "FORMAT", value_enum, default_value_t = LogFormatArg::Text)]
    pub log_format: LogFormatArg,
}

/// Back-off between reconnects to Docker and retries of a failed Consul call.
const BACKOFF_INITIAL: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// Everything checked before anything starts.
struct Setup {
    consul: client::Options,
    socket: PathBuf,
    rules: Rules,
    policy: DeregisterPolicy,
    cleanup: bool,
    resync: Option<Duration>,
    retry_attempts: i64,
    retry_interval: Duration,
}

fn setup(args: &RegistratorArgs) -> Result<Setup, Vec<String>> {
    let mut errors = Vec::new();
    let env = |k: &str| std::env::var(k).ok();
    let consul = super::consul_options(&args.uri, env)
        .map_err(|e| errors.push(e))
        .ok();
    let socket = match (
        &args.docker_socket,
        env("DOCKER_HOST").filter(|v| !v.is_empty()),
    ) {
        (Some(path), _) => Some(path.clone()),
        (None, Some(host)) => docker::socket_from_docker_host(&host)
            .map_err(|e| errors.push(e))
            .ok(),
        (None, None) => Some(PathBuf::from(docker::DEFAULT_SOCKET)),
    };
    let deregister_after = match args.deregister_critical_after.trim() {
        "" | "0" => None,
        d => match parse_duration(d) {
            Ok(_) => Some(d.to_owned()),
            Err(e) => {
                errors.push(format!(
                    "--deregister-critical-after {d:?}: {e}; write a Go duration such as 1m, or 0 for none"
                ));
                None
            }
        },
    };
    if args.retry_attempts < -1 {
        errors.push(format!(
            "--retry-attempts {}: must be -1 (forever) or more",
            args.retry_attempts
        ));
    }
    let hostname = args.hostname.clone().unwrap_or_else(system_hostname);
    if hostname.is_empty() || hostname.contains('/') {
        errors.push(format!(
            "--hostname {hostname:?}: must be a host name (it starts every service ID)"
        ));
    }
    match (consul, socket) {
        (Some(consul), Some(socket)) if errors.is_empty() => Ok(Setup {
            consul,
            socket,
            rules: Rules {
                hostname,
                host_ip: None,
                ip: args.ip,
                internal: args.internal,
                explicit: args.explicit,
                tags: args
                    .tags
                    .iter()
                    .map(|t| t.trim().to_owned())
                    .filter(|t| !t.is_empty())
                    .collect(),
                ip_label: args.use_ip_from_label.clone().filter(|l| !l.is_empty()),
                script_checks: args.enable_script_checks,
                deregister_critical_after: deregister_after,
            },
            policy: args.deregister,
            cleanup: args.cleanup,
            resync: (args.resync > 0).then(|| Duration::from_secs(args.resync)),
            retry_attempts: args.retry_attempts,
            retry_interval: Duration::from_millis(args.retry_interval),
        }),
        _ => Err(errors),
    }
}

fn system_hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "localhost".to_owned())
}

/// Run until SIGTERM/SIGINT; the exit status (2: bad flags).
pub async fn run(args: RegistratorArgs) -> i32 {
    let setup = match setup(&args) {
        Ok(s) => s,
        Err(errors) => {
            eprintln!("pilotfish registrator: {}", errors.join("; "));
            return 2;
        }
    };
    let (_level, _flush) = crate::logging::init(&LoggingConfig {
        level: args.log_level.clone(),
        format: args.log_format.into(),
        ..LoggingConfig::default()
    });
    let shutdown = CancellationToken::new();
    match signals(shutdown.clone()) {
        Ok(()) => {}
        Err(e) => {
            eprintln!("pilotfish registrator: {e:#}");
            return 1;
        }
    }
    match serve(setup, shutdown).await {
        Ok(()) => 0,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("pilotfish registrator: {e:#}");
            1
        }
    }
}

/// Cancel `shutdown` at the first SIGTERM or SIGINT.
fn signals(shutdown: CancellationToken) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    tokio::spawn(async move {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        tracing::info!("{name}: stopping; registrations stay in the agent");
        shutdown.cancel();
    });
    Ok(())
}

/// The address for ports bound to every interface. Registrator resolves the
/// host name, which often gives 127.0.x.x (its FAQ, #272) that no other
/// host can use; so a loopback answer is passed over for the first IPv4 of
/// an interface that is neither loopback nor a Docker bridge.
fn host_address(hostname: &str) -> Option<(IpAddr, String)> {
    let resolved = (hostname, 0u16)
        .to_socket_addrs()
        .ok()
        .into_iter()
        .flatten()
        .map(|a| a.ip())
        .filter(|ip| !ip.is_loopback() && !ip.is_unspecified())
        .min_by_key(|ip| ip.is_ipv6());
    if let Some(ip) = resolved {
        return Some((ip, format!("the host name {hostname} resolves to it")));
    }
    let bridge = |name: &str| {
        name == "docker0"
            || name == "docker_gwbridge"
            || name.starts_with("br-")
            || name.starts_with("veth")
    };
    crate::interfaces::local_addresses()
        .into_iter()
        .find(|(name, ip)| match ip {
            IpAddr::V4(v4) => !v4.is_loopback() && !v4.is_link_local() && !bridge(name),
            IpAddr::V6(_) => false,
        })
        .map(|(name, ip)| (ip, format!("the first address of interface {name}")))
}

/// Why the inner loop ended.
enum Fault {
    Docker(DockerError),
    Stopped,
}

impl From<DockerError> for Fault {
    fn from(e: DockerError) -> Fault {
        Fault::Docker(e)
    }
}

/// The registrator's running state.
struct Shell {
    consul: Client,
    rules: Rules,
    policy: DeregisterPolicy,
    registry: Registry,
    /// A Consul call failed: reconcile at this time.
    retry_at: Option<Instant>,
    consul_backoff: Backoff,
    consul_outage: Outage,
    /// Every service was registered once (the first reconcile forces them).
    synced: bool,
}

async fn serve(mut setup: Setup, shutdown: CancellationToken) -> anyhow::Result<()> {
    let consul = Client::new(&setup.consul).map_err(|e| anyhow::anyhow!("{e}"))?;
    if setup.rules.ip.is_none() {
        // This machine's own name, not a --hostname made up for the IDs.
        let hostname = system_hostname();
        let found = tokio::task::spawn_blocking(move || host_address(&hostname))
            .await
            .ok()
            .flatten();
        match found {
            Some((ip, why)) => {
                tracing::info!(
                    "ports bound to all interfaces register as {ip} ({why}); set --ip to choose"
                );
                setup.rules.host_ip = Some(ip);
            }
            None => tracing::warn!(
                "no address found for ports bound to all interfaces; they register without one \
                 (the agent's node address); set --ip"
            ),
        }
    }
    if !ping(&consul, &setup, &shutdown).await? {
        return Ok(());
    }
    tracing::info!(
        "registering containers of {} with the Consul agent at {} as host {}",
        setup.socket.display(),
        consul.address(),
        setup.rules.hostname
    );
    let mut shell = Shell {
        consul,
        registry: Registry::new(&setup.rules.hostname, setup.cleanup),
        rules: setup.rules.clone(),
        policy: setup.policy,
        retry_at: None,
        consul_backoff: Backoff::new(BACKOFF_INITIAL, BACKOFF_MAX),
        consul_outage: Outage::default(),
        synced: false,
    };
    let mut since: Option<String> = None;
    let mut backoff = Backoff::new(BACKOFF_INITIAL, BACKOFF_MAX);
    let mut outage = Outage::default();
    loop {
        let subscribed = unix_now();
        match shell
            .session(&setup, &mut since, &shutdown, &mut outage, &mut backoff)
            .await
        {
            Fault::Stopped => return Ok(()),
            Fault::Docker(e) => {
                if outage.fail(Instant::now()) {
                    tracing::warn!("{e}; reconnecting with backoff");
                } else {
                    tracing::debug!("{e}");
                }
            }
        }
        // Nothing seen yet: resume from the time of the subscription.
        since.get_or_insert(subscribed);
        let delay = backoff.next_delay();
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            () = tokio::time::sleep(delay) => {}
        }
    }
}

/// Ping the agent until it answers, as `--retry-attempts` allows. Ok(false)
/// when stopped meanwhile.
async fn ping(
    consul: &Client,
    setup: &Setup,
    shutdown: &CancellationToken,
) -> anyhow::Result<bool> {
    let mut attempt: i64 = 0;
    loop {
        match consul.status_leader().await {
            Ok(_) => return Ok(true),
            Err(e) if setup.retry_attempts >= 0 && attempt >= setup.retry_attempts => {
                anyhow::bail!(
                    "the Consul agent at {} does not answer after {} attempt(s): {e}; \
                     start it, or use --retry-attempts -1 to wait for it",
                    consul.address(),
                    attempt + 1
                );
            }
            Err(e) => {
                if attempt == 0 {
                    tracing::warn!("{e}; waiting for the agent");
                }
                attempt += 1;
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => return Ok(false),
            () = tokio::time::sleep(setup.retry_interval) => {}
        }
    }
}

fn unix_now() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    format!("{}.{:09}", now.as_secs(), now.subsec_nanos())
}

impl Shell {
    /// One connection to Docker: subscribe, reconcile, follow events until
    /// the stream breaks (the fault) or a stop.
    async fn session(
        &mut self,
        setup: &Setup,
        since: &mut Option<String>,
        shutdown: &CancellationToken,
        outage: &mut Outage,
        backoff: &mut Backoff,
    ) -> Fault {
        let (docker, version, api) = match Docker::connect(&setup.socket).await {
            Ok(c) => c,
            Err(e) => return Fault::Docker(e),
        };
        let mut events = match docker.events(since.as_deref()).await {
            Ok(s) => s,
            Err(e) => return Fault::Docker(e),
        };
        if let Some((down, attempts)) = outage.recover(Instant::now()) {
            tracing::info!(
                "Docker is back after {down:?} ({attempts} failed attempts); resuming events since {}",
                since.as_deref().unwrap_or("now")
            );
        }
        backoff.reset();
        tracing::info!(
            "following Docker {} events (API {api}, engine {})",
            setup.socket.display(),
            version.version
        );
        if let Err(e) = self.reconcile(&docker).await {
            return e;
        }
        let mut resync = setup.resync.map(|every| {
            let mut t = tokio::time::interval_at(Instant::now() + every, every);
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            t
        });
        loop {
            let retry_at = self.retry_at;
            let outcome = tokio::select! {
                () = shutdown.cancelled() => return Fault::Stopped,
                next = events.next() => self.on_stream(&docker, next, since).await,
                _ = async { resync.as_mut()?.tick().await; Some(()) }, if resync.is_some() => {
                    tracing::debug!("periodic resync");
                    self.reconcile(&docker).await
                }
                () = tokio::time::sleep_until(retry_at.unwrap_or_else(Instant::now)), if retry_at.is_some() => {
                    self.retry_at = None;
                    self.reconcile(&docker).await
                }
            };
            if let Err(fault) = outcome {
                return fault;
            }
        }
    }

    async fn on_stream(
        &mut self,
        docker: &Docker,
        next: Result<Option<Event>, DockerError>,
        since: &mut Option<String>,
    ) -> Result<(), Fault> {
        match next {
            Ok(Some(event)) => {
                if event.time_nano > 0 || event.time > 0 {
                    *since = Some(event.since());
                }
                self.on_event(docker, &event).await
            }
            Ok(None) => Err(Fault::Docker(DockerError::Decode {
                path: "/events".into(),
                detail: "the daemon ended the event stream".into(),
            })),
            Err(e) => Err(Fault::Docker(e)),
        }
    }

    async fn on_event(&mut self, docker: &Docker, event: &Event) -> Result<(), Fault> {
        if event.kind != "container" || event.actor.id.is_empty() {
            return Ok(());
        }
        let id = event.actor.id.as_str();
        tracing::debug!("event {} {}", event.action, short(id));
        let actions = match event.verb() {
            "start" | "health_status" => match docker.inspect(id).await {
                Ok(c) => {
                    let derived = rules::derive(&c, &self.rules);
                    if event.verb() == "health_status"
                        && derived.services == self.registry.services(id)
                    {
                        return Ok(());
                    }
                    report(&derived, false);
                    self.registry.started(id, derived.services)
                }
                Err(e) if e.is_not_found() => self.registry.destroyed(id),
                Err(e) => return Err(e.into()),
            },
            "die" => {
                let code = match event.exit_code() {
                    Some(code) => Some(code),
                    None => match docker.inspect(id).await {
                        Ok(c) => Some(c.state.exit_code),
                        Err(e) if e.is_not_found() => None,
                        Err(e) => return Err(e.into()),
                    },
                };
                let deregister = self.policy.deregisters(code);
                if !deregister && self.registry.is_running(id) {
                    tracing::info!(
                        "container {} exited with {}: its services stay (--deregister on-success)",
                        short(id),
                        code.unwrap_or_default()
                    );
                }
                self.registry.exited(id, deregister)
            }
            "destroy" => self.registry.destroyed(id),
            _ => Vec::new(),
        };
        self.apply(actions).await;
        Ok(())
    }

    /// Running containers against the agent's services.
    async fn reconcile(&mut self, docker: &Docker) -> Result<(), Fault> {
        let quiet = self.synced;
        let ids = docker.running_containers().await?;
        let mut running = BTreeMap::new();
        for id in &ids {
            match docker.inspect(id).await {
                Ok(c) => {
                    let derived = rules::derive(&c, &self.rules);
                    report(&derived, quiet);
                    running.insert(id.clone(), derived.services);
                }
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e.into()),
            }
        }
        // Containers known from before that are no longer listed: they
        // died or went while the stream was down.
        let mut actions = Vec::new();
        for id in self.registry.containers() {
            if running.contains_key(&id) {
                continue;
            }
            match docker.inspect(&id).await {
                Err(e) if e.is_not_found() => actions.extend(self.registry.destroyed(&id)),
                Err(e) => return Err(e.into()),
                Ok(c) if c.state.running => {
                    // Started after the list: keep what it has.
                    running.insert(id.clone(), rules::derive(&c, &self.rules).services);
                }
                Ok(c) if self.registry.is_running(&id) => {
                    let deregister = self.policy.deregisters(Some(c.state.exit_code));
                    actions.extend(self.registry.exited(&id, deregister));
                }
                Ok(_) => {}
            }
        }
        self.apply(actions).await;
        let actual = match self.consul.agent_services().await {
            Ok(a) => a,
            Err(e) => {
                self.consul_failed(&e);
                return Ok(());
            }
        };
        let actions = self.registry.reconcile(running, &actual, !self.synced);
        if !actions.is_empty() {
            tracing::info!("reconcile: {} changes", actions.len());
        }
        if self.apply(actions).await {
            self.synced = true;
            self.consul_backoff.reset();
            if let Some((down, failures)) = self.consul_outage.recover(Instant::now()) {
                tracing::info!(
                    "the Consul agent answers again after {down:?} ({failures} failed calls); reconciled"
                );
            }
        }
        Ok(())
    }

    /// Carry out the actions; false when the agent was unreachable for any
    /// (a reconcile is then scheduled).
    async fn apply(&mut self, actions: Vec<Action>) -> bool {
        let mut ok = true;
        for action in actions {
            let result = match &action {
                Action::Register(def) => self.consul.register_service(def).await,
                Action::Deregister(id) => self.consul.deregister_service(id).await,
            };
            match (result, &action) {
                (Ok(()), Action::Register(def)) => tracing::info!(
                    "registered {} as {} at {}:{}",
                    def.id.as_deref().unwrap_or(""),
                    def.name.as_deref().unwrap_or(""),
                    def.address.as_deref().unwrap_or("(node address)"),
                    def.port.unwrap_or(0)
                ),
                (Ok(()), Action::Deregister(id)) => tracing::info!("deregistered {id}"),
                // Already gone from the agent.
                (Err(e), Action::Deregister(_)) if e.status() == Some(404) => {}
                (Err(e), _) if e.is_outage() => {
                    self.consul_failed(&e);
                    ok = false;
                }
                (Err(e), Action::Register(def)) => tracing::warn!(
                    "the agent refused service {}: {e}; fix the container's SERVICE_* settings",
                    def.id.as_deref().unwrap_or("")
                ),
                (Err(e), Action::Deregister(id)) => {
                    tracing::warn!("the agent refused to deregister {id}: {e}")
                }
            }
        }
        ok
    }

    fn consul_failed(&mut self, e: &client::Error) {
        if self.consul_outage.fail(Instant::now()) {
            tracing::warn!("{e}; retrying, registrations will be reconciled when it answers");
        }
        if self.retry_at.is_none() {
            self.retry_at = Some(Instant::now() + self.consul_backoff.next_delay());
        }
    }
}

fn report(derived: &rules::Derived, quiet: bool) {
    for note in &derived.notes {
        if quiet {
            tracing::debug!("{note}");
        } else {
            tracing::info!("{note}");
        }
    }
    for warning in &derived.warnings {
        if quiet {
            tracing::debug!("{warning}");
        } else {
            tracing::warn!("{warning}");
        }
    }
}

fn short(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}
