//! The embedded Consul-compatible server: one node's shell around the
//! deterministic state machine (`state`). Writes go through [`Server::write`],
//! which stamps the log index and the time, makes the command durable
//! (`store`), applies it and wakes the blocking queries it affects. Reads take
//! the state under a read lock. The HTTP API (`http`) and DNS (`dns`) only ever
//! use these three entry points: `write`, `read` and `block`.

pub mod checks;
pub mod dns;
pub mod http;
pub mod run;
pub mod state;
pub mod store;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
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
    state: RwLock<State>,
    /// Serialises writes: index assignment, persistence and apply happen in
    /// log order.
    commit: tokio::sync::Mutex<store::Store>,
    /// The last applied index; blocking queries wait for it to move.
    applied: tokio::sync::watch::Sender<u64>,
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
        let (store, state) =
            store::Store::open(cfg.data_dir.as_deref()).map_err(ServerError::Store)?;
        let last = state.last_applied();
        let (applied, _) = tokio::sync::watch::channel(last);
        let server = Server {
            inner: Arc::new(Inner {
                cfg,
                state: RwLock::new(state),
                commit: tokio::sync::Mutex::new(store),
                applied,
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

    /// Apply one command in log order; durable before it is applied.
    pub async fn write(&self, cmd: Command) -> Result<Written, WriteError> {
        let mut store = self.inner.commit.lock().await;
        let index = self.read(|s| s.last_applied()) + 1;
        let now = now_ms();
        store.append(index, now, &cmd).map_err(WriteError::Store)?;
        let result = {
            let mut state = self.inner.state.write().unwrap_or_else(|p| p.into_inner());
            state.apply(index, now, cmd)
        };
        // A refused command still used its index (it is in the log).
        self.inner.applied.send_replace(index);
        Ok(Written {
            index,
            outcome: result?,
        })
    }

    /// Run `f` on the current state.
    pub fn read<R>(&self, f: impl FnOnce(&State) -> R) -> R {
        let state = self.inner.state.read().unwrap_or_else(|p| p.into_inner());
        f(&state)
    }

    pub fn last_index(&self) -> u64 {
        *self.inner.applied.borrow()
    }

    /// A blocking query: answer as soon as `query`'s index is above
    /// `min_index`, or when `wait` has passed, whichever is first.
    pub async fn block<R>(
        &self,
        min_index: u64,
        wait: Duration,
        query: impl Fn(&State) -> (R, u64),
    ) -> (R, u64) {
        let deadline = tokio::time::Instant::now() + wait;
        let mut changes = self.inner.applied.subscribe();
        loop {
            changes.borrow_and_update();
            let (result, index) = self.read(&query);
            if min_index == 0 || index > min_index || tokio::time::Instant::now() >= deadline {
                return (result, index);
            }
            if tokio::time::timeout_at(deadline, changes.changed())
                .await
                .is_err()
            {
                return self.read(&query);
            }
        }
    }
}
