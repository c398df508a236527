//! The embedded Consul-compatible server: one node's shell around the
//! deterministic state machine (`state`). Writes go through [`Server::write`],
//! which stamps the log index and the time, makes the command durable
//! (`store`), applies it and wakes the blocking queries it affects. Reads take
//! the state under a read lock. The HTTP API (`http`) and DNS (`dns`) only ever
//! use these entry points: `write`, `read` and `block_on`.
//!
//! Blocking queries cost memory, not threads: each parked query is one entry
//! in a waiter table holding the index it last saw and a *probe* (a function
//! of the state returning the query's index, e.g. one key's ModifyIndex).
//! After every apply the writer runs each probe once under the state's read
//! lock and wakes only the waiters whose probe moved. A waiter registers
//! while it holds the read lock it computed its index under, so a write either
//! happened before it looked or runs its probe afterwards: no lost wakeups.

pub mod checks;
pub mod dns;
pub mod http;
pub mod run;
pub mod state;
pub mod store;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use state::{Command, Outcome, State, StateError};

/// What a server node is, from the command line.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub node: String,
    pub datacenter: String,
    /// DNS domain with a trailing dot, e.g. `consul.`.
    pub domain: String,
    /// This node's address in the catalog.
    pub advertise: IpAddr,
    /// `None`: in memory only (`--dev`).
    pub data_dir: Option<PathBuf>,
    pub enable_script_checks: bool,
    pub recursors: Vec<SocketAddr>,
}

/// How this node takes part in the cluster and which ports it announces
/// (`status/leader`, `status/peers`, `agent/members`). Kept apart from
/// [`ServerConfig`] so code that builds a `ServerConfig` literal keeps
/// compiling; [`Server::open`] uses the defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// `--server`: this node takes part in raft (always true for `--dev`).
    pub server: bool,
    /// `--bootstrap-expect`: servers to wait for before bootstrapping.
    pub bootstrap_expect: u32,
    /// `--server-port` (8300): the RPC port in `status/leader` and `peers`.
    pub server_port: u16,
    /// The serf LAN port Consul shows in `agent/members` (8301).
    pub serf_lan_port: u16,
    /// `--http-port` (8500) and `--dns-port` (8600), as configured.
    pub http_port: u16,
    pub dns_port: u16,
    /// `--retry-join` addresses or names, for clustering.
    pub retry_join: Vec<String>,
}

impl Default for ClusterConfig {
    /// A lone server with Consul's default ports.
    fn default() -> ClusterConfig {
        ClusterConfig {
            server: true,
            bootstrap_expect: 0,
            server_port: 8300,
            serf_lan_port: 8301,
            http_port: 8500,
            dns_port: 8600,
            retry_join: Vec::new(),
        }
    }
}

impl Default for ServerConfig {
    /// A `--dev` node named `node` on loopback.
    fn default() -> ServerConfig {
        ServerConfig {
            node: "node".to_string(),
            datacenter: "dc1".to_string(),
            domain: "consul.".to_string(),
            advertise: IpAddr::from([127, 0, 0, 1]),
            data_dir: None,
            enable_script_checks: false,
            recursors: Vec::new(),
        }
    }
}

/// A write that was applied.
#[derive(Debug, Clone, PartialEq)]
pub struct Written {
    pub index: u64,
    pub outcome: Outcome,
}

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The state machine refused the command; the text is Consul's.
    #[error("{0}")]
    State(#[from] StateError),
    /// The command could not be made durable; nothing was applied.
    #[error("storing the write failed: {0}")]
    Store(String),
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("opening the data dir: {0}")]
    Store(String),
    #[error("registering this node: {0}")]
    Register(String),
}

/// A handle to the node's state; cheap to clone.
#[derive(Clone)]
pub struct Server {
    inner: Arc<Inner>,
}

struct Inner {
    cfg: ServerConfig,
    cluster: ClusterConfig,
    state: RwLock<State>,
    /// Serialises writes: index assignment, persistence and apply happen in
    /// log order.
    commit: tokio::sync::Mutex<store::Store>,
    /// The last applied index, for the node's own tasks (session timers).
    applied: tokio::sync::watch::Sender<u64>,
    /// Parked blocking queries.
    waiters: Mutex<Waiters>,
    /// Cancelled when the API asks the agent to leave (`PUT /v1/agent/leave`).
    leave: tokio_util::sync::CancellationToken,
    /// Writes waiting for the next group commit.
    pending: Mutex<Vec<Pending>>,
}

/// A write waiting to be committed, and where its answer goes.
struct Pending {
    cmd: Command,
    reply: tokio::sync::oneshot::Sender<Result<Written, WriteError>>,
}

/// Run a blocking call (an fsync) without stalling other tasks where the
/// runtime allows it (multi-thread); inline on a current-thread runtime.
fn blocking<R>(f: impl FnOnce() -> R) -> R {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// A blocking query's index as a function of the state.
type Probe = Arc<dyn Fn(&State) -> u64 + Send + Sync>;

#[derive(Default)]
struct Waiters {
    next_id: u64,
    parked: HashMap<u64, Waiter>,
}

struct Waiter {
    /// The probe's value when the query parked.
    seen: u64,
    probe: Probe,
    wake: Option<tokio::sync::oneshot::Sender<()>>,
}

/// Removes a parked query that stopped waiting (timeout, client gone).
struct Parked<'a> {
    server: &'a Server,
    id: u64,
}

impl Drop for Parked<'_> {
    fn drop(&mut self) {
        self.server.waiters().parked.remove(&self.id);
    }
}

/// Milliseconds since the Unix epoch: the time stamped into commands.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

impl Server {
    /// Open the node's state (from the data dir, if any) and register the node.
    pub async fn open(cfg: ServerConfig) -> Result<Server, ServerError> {
        Server::open_with(cfg, ClusterConfig::default()).await
    }

    /// [`Server::open`] with this node's cluster role and ports (the agent).
    pub async fn open_with(
        cfg: ServerConfig,
        cluster: ClusterConfig,
    ) -> Result<Server, ServerError> {
        let (store, state) =
            store::Store::open(cfg.data_dir.as_deref()).map_err(ServerError::Store)?;
        let last = state.last_applied();
        let (applied, _) = tokio::sync::watch::channel(last);
        let server = Server {
            inner: Arc::new(Inner {
                cfg,
                cluster,
                state: RwLock::new(state),
                commit: tokio::sync::Mutex::new(store),
                applied,
                waiters: Mutex::new(Waiters::default()),
                leave: tokio_util::sync::CancellationToken::new(),
                pending: Mutex::new(Vec::new()),
            }),
        };
        let node = state::catalog::Registration {
            node: server.inner.cfg.node.clone(),
            node_id: String::new(),
            address: server.inner.cfg.advertise.to_string(),
            tagged_addresses: Default::default(),
            node_meta: Default::default(),
            skip_node_update: false,
            service: None,
            checks: Vec::new(),
        };
        server
            .write(Command::Register(node))
            .await
            .map_err(|e| ServerError::Register(e.to_string()))?;
        Ok(server)
    }

    pub fn config(&self) -> &ServerConfig {
        &self.inner.cfg
    }

    pub fn cluster(&self) -> &ClusterConfig {
        &self.inner.cluster
    }

    /// `<advertise>:<server-port>`, this server's raft address as Consul
    /// shows it (`status/leader`, `status/peers`).
    pub fn rpc_addr(&self) -> SocketAddr {
        SocketAddr::new(self.inner.cfg.advertise, self.inner.cluster.server_port)
    }

    /// Apply one command in log order; durable before it is applied.
    pub async fn write(&self, cmd: Command) -> Result<Written, WriteError> {
        let (reply, mut answer) = tokio::sync::oneshot::channel();
        self.pending().push(Pending { cmd, reply });
        loop {
            // Group commit: whoever holds the commit lock takes every write
            // queued so far and makes them durable with one fsync. A writer
            // whose entry an earlier holder already committed takes its
            // answer without queueing for the lock.
            tokio::select! {
                biased;
                done = &mut answer => {
                    return done.unwrap_or_else(|_| {
                        Err(WriteError::Store("the write was dropped before it was committed".into()))
                    });
                }
                mut store = self.inner.commit.lock() => {
                    let batch = std::mem::take(&mut *self.pending());
                    if !batch.is_empty() {
                        self.commit(&mut store, batch);
                    }
                }
            }
        }
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, Vec<Pending>> {
        self.inner.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Append a batch (one fsync), apply it in log order, snapshot when due,
    /// wake the blocking queries whose index moved, answer every writer.
    fn commit(&self, store: &mut store::Store, batch: Vec<Pending>) {
        let first = self.read(|s| s.last_applied()) + 1;
        let now = now_ms();
        let appended = {
            let entries: Vec<(u64, u64, &Command)> = batch
                .iter()
                .zip(first..)
                .map(|(p, index)| (index, now, &p.cmd))
                .collect();
            blocking(|| store.append_batch(&entries))
        };
        if let Err(e) = appended {
            for p in batch {
                let _ = p.reply.send(Err(WriteError::Store(e.to_string())));
            }
            return;
        }
        let mut answers = Vec::with_capacity(batch.len());
        let mut last = first;
        {
            let mut state = self.inner.state.write().unwrap_or_else(|p| p.into_inner());
            for (p, index) in batch.into_iter().zip(first..) {
                // A refused command still used its index (it is in the log).
                let result = state.apply(index, now, p.cmd);
                answers.push((p.reply, index, result));
                last = index;
            }
        }
        if let Err(e) = self.read(|state| store.snapshot_if_due(state)) {
            tracing::warn!(
                "state snapshot failed; the log keeps every entry until one succeeds: {e}"
            );
        }
        self.read(|state| self.wake(state));
        self.inner.applied.send_replace(last);
        for (reply, index, result) in answers {
            let _ = reply.send(
                result
                    .map(|outcome| Written { index, outcome })
                    .map_err(WriteError::from),
            );
        }
    }

    /// Run `f` on the current state.
    pub fn read<R>(&self, f: impl FnOnce(&State) -> R) -> R {
        let state = self.inner.state.read().unwrap_or_else(|p| p.into_inner());
        f(&state)
    }

    /// Ask the process running this node to leave and shut down.
    pub fn request_leave(&self) {
        self.inner.leave.cancel();
    }

    /// Completes once a leave was requested.
    pub async fn leave_requested(&self) {
        self.inner.leave.cancelled().await;
    }

    pub fn last_index(&self) -> u64 {
        *self.inner.applied.borrow()
    }

    /// Every applied index, for the node's own tasks (e.g. re-arming the
    /// session timer after writes). Blocking queries use [`Server::block_on`].
    pub fn applied(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.applied.subscribe()
    }

    /// How many blocking queries are parked (telemetry, tests).
    pub fn parked_queries(&self) -> usize {
        self.waiters().parked.len()
    }

    /// A blocking query woken only when `probe`, the query's own index (one
    /// key's ModifyIndex, a prefix's max, a table index), moves. Answers
    /// `(query(state), probe(state))` as soon as the index is above
    /// `min_index`, when `wait` has passed, or at once when `min_index` is 0
    /// or ahead of the whole log (a client that saw an older incarnation of
    /// this server: a lower index makes it reset instead of hanging a wait).
    pub async fn block_on<R>(
        &self,
        min_index: u64,
        wait: Duration,
        probe: impl Fn(&State) -> u64 + Send + Sync + 'static,
        query: impl Fn(&State) -> R,
    ) -> (R, u64) {
        let deadline = tokio::time::Instant::now() + wait;
        let probe: Probe = Arc::new(probe);
        loop {
            let parked = self.read(|state| {
                let index = probe(state);
                if min_index == 0 || index > min_index || min_index > state.last_applied() {
                    return Err((query(state), index));
                }
                Ok(self.park(state, probe.clone()))
            });
            let (id, woken) = match parked {
                Err(answer) => return answer,
                Ok(p) => p,
            };
            let _parked = Parked { server: self, id };
            if tokio::time::timeout_at(deadline, woken).await.is_err() {
                return self.read(|state| (query(state), probe(state)));
            }
        }
    }

    /// Park a query; called under the state read lock (see the module doc).
    fn park(&self, state: &State, probe: Probe) -> (u64, tokio::sync::oneshot::Receiver<()>) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let seen = probe(state);
        let mut w = self.waiters();
        let id = w.next_id;
        w.next_id += 1;
        w.parked.insert(
            id,
            Waiter {
                seen,
                probe,
                wake: Some(tx),
            },
        );
        (id, rx)
    }

    /// Wake the parked queries whose index moved; called after each apply
    /// under the state read lock.
    fn wake(&self, state: &State) {
        self.waiters().parked.retain(|_, w| {
            if (w.probe)(state) == w.seen {
                return true;
            }
            if let Some(tx) = w.wake.take() {
                // The receiver may be gone already (timed out); nothing to do.
                let _ = tx.send(());
            }
            false
        });
    }

    fn waiters(&self) -> std::sync::MutexGuard<'_, Waiters> {
        self.inner.waiters.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    async fn dev() -> Server {
        Server::open(ServerConfig::default()).await.unwrap()
    }

    /// A write that changes `key` (an identical write is a no-op).
    fn set(key: &str) -> Command {
        Command::KvSet {
            key: key.to_string(),
            value: now_ms().to_le_bytes().to_vec(),
            flags: rand::random(),
        }
    }

    fn parked_ids(server: &Server) -> Vec<u64> {
        let mut ids: Vec<u64> = server.waiters().parked.keys().copied().collect();
        ids.sort_unstable();
        ids
    }

    /// Park a blocking read of one key at its current index.
    fn watch(server: &Server, key: &'static str) -> tokio::task::JoinHandle<(bool, u64)> {
        let server = server.clone();
        let index = server.read(|s| s.kv_key_index(key));
        tokio::spawn(async move {
            server
                .block_on(
                    index,
                    Duration::from_secs(60),
                    move |s| s.kv_key_index(key),
                    move |s| s.kv_get(key).0.is_some(),
                )
                .await
        })
    }

    // Real time: a paused clock auto-advances past the waits while the test
    // yields for the waiters to park.
    #[tokio::test]
    async fn a_write_wakes_only_the_queries_whose_index_moved() {
        let server = dev().await;
        server.write(set("a")).await.unwrap();
        server.write(set("b")).await.unwrap();
        let a = watch(&server, "a");
        let b = watch(&server, "b");
        while server.parked_queries() < 2 {
            tokio::task::yield_now().await;
        }
        let before = parked_ids(&server);
        let w = server.write(set("a")).await.unwrap();
        assert_eq!(a.await.unwrap(), (true, w.index));
        // b was never woken: still parked under its first registration.
        assert_eq!(parked_ids(&server), before[1..].to_vec());
        assert!(!b.is_finished());
        let w = server.write(set("b")).await.unwrap();
        assert_eq!(b.await.unwrap(), (true, w.index));
        assert_eq!(server.parked_queries(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn timed_out_queries_leave_the_table() {
        let server = dev().await;
        let index = server.read(|s| s.kv_key_index("k"));
        let (found, at) = server
            .block_on(
                index,
                Duration::from_secs(5),
                |s| s.kv_key_index("k"),
                |s| s.kv_get("k").0.is_some(),
            )
            .await;
        assert_eq!((found, at), (false, index));
        assert_eq!(server.parked_queries(), 0);
    }

    #[tokio::test]
    async fn abandoned_queries_leave_the_table() {
        let server = dev().await;
        let abandoned = watch(&server, "k");
        while server.parked_queries() < 1 {
            tokio::task::yield_now().await;
        }
        abandoned.abort();
        let _ = abandoned.await;
        assert_eq!(server.parked_queries(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn an_index_ahead_of_the_log_answers_at_once() {
        let server = dev().await;
        let (_, index) = server
            .block_on(
                1_000,
                Duration::from_secs(60),
                |s| s.kv_key_index("k"),
                |_| (),
            )
            .await;
        assert!(index < 1_000);
    }
}
