//! One task per distinct dependency: a loop of blocking queries through
//! `discovery::client` (Consul's index rules from `client::retry`), each
//! answer normalised to what a template can see and sent on only when that
//! differs from the last one. An unreachable agent is retried with backoff
//! forever and sends nothing, so no template ever renders from empty data
//! because discovery was down; the outage's start is kept for `/v3/status`.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use serde_json::Value;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::deps::{self, Dep};
use crate::discovery::client::retry::{next_index, Backoff, Outage, RateLimit};
use crate::discovery::client::{Client, Error, Meta, Query};

/// How long one blocking query waits at most.
const WAIT: Duration = Duration::from_secs(300);

/// At most this many blocking queries are open at once. An agent limits
/// the connections one address may hold (Consul's
/// `http_max_conns_per_client`, 200 by default, and pilotfish's agent the
/// same), and the supervisor's registrations and watches need some too.
pub const MAX_LONG_POLLS: usize = 128;

/// A query's wait when more queries are watched than may be open at once:
/// short, so the open slots rotate and every query is asked again within
/// a few seconds (a change seen in that time rather than at once).
const CROWDED_WAIT: Duration = Duration::from_secs(2);

/// What every watch of one template set shares: the open-query slots, and
/// whether there are more watches than slots.
#[derive(Debug, Clone)]
pub struct Slots {
    permits: Arc<tokio::sync::Semaphore>,
    crowded: Arc<std::sync::atomic::AtomicBool>,
}

impl Default for Slots {
    fn default() -> Self {
        Slots {
            permits: Arc::new(tokio::sync::Semaphore::new(MAX_LONG_POLLS)),
            crowded: Arc::default(),
        }
    }
}

impl Slots {
    /// How many queries are watched now.
    pub fn set_watched(&self, n: usize) {
        self.crowded
            .store(n > MAX_LONG_POLLS, std::sync::atomic::Ordering::Relaxed);
    }

    fn wait(&self) -> Duration {
        if self.crowded.load(std::sync::atomic::Ordering::Relaxed) {
            CROWDED_WAIT
        } else {
            WAIT
        }
    }
}

/// A dependency's new data.
pub type Update = (Dep, Arc<Value>);

/// What `/v3/status` shows of one watch.
#[derive(Debug, Clone, Default)]
pub struct WatchState {
    pub index: u64,
    /// Since when the agent has not answered, if it does not.
    pub stale_since: Option<SystemTime>,
    pub last_error: Option<String>,
}

/// The handle on one dependency's task; dropping it stops the task.
pub struct DepWatch {
    pub state: Arc<Mutex<WatchState>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for DepWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl DepWatch {
    pub fn spawn(
        dep: Dep,
        client: Client,
        slots: Slots,
        out: mpsc::UnboundedSender<Update>,
    ) -> DepWatch {
        let state = Arc::new(Mutex::new(WatchState::default()));
        let task = tokio::spawn(run(dep, client, slots, out, Arc::clone(&state)));
        DepWatch { state, task }
    }

    pub fn state(&self) -> WatchState {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

async fn fetch(
    client: &Client,
    dep: &Dep,
    index: u64,
    wait: Duration,
) -> Result<(Value, Meta), Error> {
    let mut q = Query::blocking(index, wait);
    Ok(match dep {
        Dep::Service {
            name,
            tag,
            dc,
            passing,
        } => {
            q.dc = dc.clone();
            let (rows, meta) = client
                .health_service(name, tag.as_deref(), *passing, &q)
                .await?;
            (deps::service_instances(&rows), meta)
        }
        Dep::Services { dc } => {
            q.dc = dc.clone();
            let (map, meta) = client.catalog_services(&q).await?;
            (deps::services(&map), meta)
        }
        Dep::Key(k) => {
            let (pair, meta) = client.kv_get(k, &q).await?;
            (deps::key(pair.as_ref()), meta)
        }
        Dep::Tree(p) => {
            let (pairs, meta) = client.kv_list(p, &q).await?;
            (deps::tree(&pairs), meta)
        }
        Dep::Node(n) => {
            let (node, meta) = client.catalog_node(n, &q).await?;
            (deps::node_services(node.as_ref()), meta)
        }
        Dep::Nodes { dc } => {
            q.dc = dc.clone();
            let (list, meta) = client.catalog_nodes(&q).await?;
            (deps::nodes(&list), meta)
        }
        Dep::AgentNode => {
            let me = client.agent_self().await?;
            let name = me
                .get("Config")
                .and_then(|c| c.get("NodeName"))
                .and_then(Value::as_str)
                .map_or(Value::Null, |n| Value::String(n.to_string()));
            (name, Meta::default())
        }
    })
}

async fn run(
    dep: Dep,
    client: Client,
    slots: Slots,
    out: mpsc::UnboundedSender<Update>,
    state: Arc<Mutex<WatchState>>,
) {
    let mut index = 0;
    let mut last: Option<Value> = None;
    let mut backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(60));
    // A burst of changes is answered at once; a key that changes without
    // pause is not re-read more than 20 times a second.
    let mut rate = RateLimit::new(20.0, 10.0);
    let mut outage = Outage::default();
    loop {
        let pause = rate.take(Instant::now());
        if !pause.is_zero() {
            tokio::time::sleep(pause).await;
        }
        let answer = {
            // Closed only if the set is dropped, and then this task is aborted.
            let Ok(_slot) = slots.permits.acquire().await else {
                return;
            };
            fetch(&client, &dep, index, slots.wait()).await
        };
        match answer {
            Ok((value, meta)) => {
                backoff.reset();
                if let Some((lasted, _)) = outage.recover(Instant::now()) {
                    tracing::info!(
                        "template query {dep}: the agent answers again after {}",
                        crate::config::duration::format_duration(lasted)
                    );
                }
                index = next_index(index, meta.index);
                {
                    let mut s = state.lock().unwrap_or_else(PoisonError::into_inner);
                    s.index = index;
                    s.stale_since = None;
                    s.last_error = None;
                }
                if last.as_ref() != Some(&value) {
                    last = Some(value.clone());
                    if out.send((dep.clone(), Arc::new(value))).is_err() {
                        return;
                    }
                }
                if dep == Dep::AgentNode {
                    // Not a blocking endpoint, and a node keeps its name.
                    return;
                }
            }
            Err(e) => {
                if outage.fail(Instant::now()) {
                    let hint = if e.status() == Some(429) {
                        " (the agent refuses this address more connections: raise its http_max_conns_per_client, or stop other clients here)"
                    } else {
                        ""
                    };
                    tracing::warn!(
                        "template query {dep}: {e}{hint}; keeping the last rendered files and retrying"
                    );
                }
                {
                    let mut s = state.lock().unwrap_or_else(PoisonError::into_inner);
                    s.stale_since.get_or_insert_with(SystemTime::now);
                    s.last_error = Some(e.to_string());
                }
                // Consul's rule: after an error, start over from index 0.
                index = 0;
                tokio::time::sleep(backoff.next_delay()).await;
            }
        }
    }
}
