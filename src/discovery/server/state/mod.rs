//! The deterministic state machine behind the embedded Consul server: KV,
//! sessions, catalog and health. Every write is a [`Command`] applied in log
//! order with [`State::apply`]`(index, now_ms, cmd)`; reads are methods that
//! return domain values plus the index a blocking query would answer with
//! (never 0, never backwards). No I/O, no clock, no randomness: `now_ms` and
//! every generated ID (session IDs) travel inside the command, stamped once by
//! the proposer, so every replica computes the same state.
//!
//! What the shell must drive (all by proposing commands):
//! - session TTLs: arm a timer for [`State::next_session_deadline`] and propose
//!   [`Command::ExpireSessions`] when it fires; on becoming leader propose
//!   [`Command::ResetSessionTimers`] (Consul restarts timers at full 2×TTL);
//! - tombstone reaping: periodically propose [`Command::ReapTombstones`] with
//!   an index older than the tombstone TTL (see `kv` for the reap rule);
//! - agent check results: [`Command::UpdateCheck`] (only changes are written).
//!
//! `now_ms` is clamped to the highest value seen so far, so a leader whose
//! clock steps backwards cannot shorten lock-delays or TTLs already recorded.
//!
//! Why these types derive serde although LAYOUT.md invariant 4 reserves serde
//! for `config::raw`, `discovery::api` and control bodies: `Command`,
//! [`Outcome`] and [`Snapshot`] are the raft log, response and snapshot
//! formats, owned by this state machine and versioned with it; they are not
//! the Consul wire format (no base64 values, no Consul field spellings), so
//! they must not live in `discovery::api`, and mapping them through a second
//! set of mirror types would double every change for no gain. The invariant
//! should read "... and the state machine's log/snapshot types".

pub mod catalog;
pub mod checks;
pub mod kv;
pub mod session;

use serde::{Deserialize, Serialize};

use catalog::{
    Catalog, CatalogEffects, Deregistration, Node, NodeServices, Registration, ServiceEntry,
    ServiceInstance,
};
use checks::{CheckStatus, HealthCheck, StatusFilter};
use kv::{KvEntry, KvStore, TxnOp, TxnOutcome};
use session::{Session, SessionBehavior, SessionRequest, SessionStore};

/// Every write the state machine knows. Closed: a new case is a compile error
/// in every match that does not handle it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Plain `PUT /v1/kv/<key>` (flags = 0 unless `?flags`).
    KvSet {
        key: String,
        value: Vec<u8>,
        flags: u64,
    },
    /// `PUT ?cas=<index>`; `index` 0 = create only.
    KvCas {
        key: String,
        value: Vec<u8>,
        flags: u64,
        index: u64,
    },
    /// `PUT ?acquire=<session>`.
    KvAcquire {
        key: String,
        value: Vec<u8>,
        flags: u64,
        session: String,
    },
    /// `PUT ?release=<session>`.
    KvRelease {
        key: String,
        value: Vec<u8>,
        flags: u64,
        session: String,
    },
    /// Plain `DELETE /v1/kv/<key>`.
    KvDelete { key: String },
    /// `DELETE ?cas=<index>`.
    KvDeleteCas { key: String, index: u64 },
    /// `DELETE ?recurse` (empty prefix = everything).
    KvDeleteTree { prefix: String },
    /// `PUT /v1/txn` (KV ops only).
    KvTxn { ops: Vec<TxnOp> },
    /// Drop tombstones at or below `up_to` (see `kv`).
    ReapTombstones { up_to: u64 },
    /// `PUT /v1/session/create`.
    SessionCreate(SessionRequest),
    /// `PUT /v1/session/renew/<id>`.
    SessionRenew { id: String },
    /// `PUT /v1/session/destroy/<id>` (idempotent).
    SessionDestroy { id: String },
    /// Invalidate every session whose TTL deadline is `<= now_ms`.
    ExpireSessions,
    /// Re-arm every TTL deadline at `now_ms + 2×TTL` (new leader).
    ResetSessionTimers,
    /// `PUT /v1/catalog/register` and agent registrations.
    Register(Registration),
    /// `PUT /v1/catalog/deregister` and agent deregistrations.
    Deregister(Deregistration),
    /// A check's new status and output.
    UpdateCheck {
        node: String,
        check_id: String,
        status: CheckStatus,
        output: String,
    },
}

/// What an applied command produced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// The `true`/`false` body of KV writes.
    Bool(bool),
    /// A txn committed or rolled back (HTTP 200 / 409).
    Txn(TxnOutcome),
    /// `{"ID": ...}` of a new session.
    SessionCreated(Session),
    /// `[Session]` of a renewal.
    SessionRenewed(Session),
    /// Sessions invalidated by destroy/expiry (possibly none).
    SessionsInvalidated(Vec<String>),
    /// Applied; nothing to report (register, deregister, check update, reap).
    Done,
}

/// `apply`'s answer: an outcome, or an error whose text is Consul's.
pub type CommandResult = Result<Outcome, StateError>;

/// Errors a command can end with. The `Display` texts are Consul's exact
/// strings where consul-wire.md gives them: clients (Patroni) match on them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum StateError {
    /// Not a Consul error: the log fed an index at or below the last applied
    /// one. The state is unchanged.
    #[error("log index {index} is not after the last applied index {applied}")]
    StaleIndex { index: u64, applied: u64 },
    #[error("Missing key name")]
    MissingKey,
    #[error("missing session")]
    MissingSession,
    /// Go `%#v` of the ID: `invalid session "abc"`.
    #[error("invalid session {}", go_quote(.0))]
    InvalidSession(String),
    /// HTTP 404 on renew.
    #[error("Session id '{0}' not found")]
    SessionNotFound(String),
    #[error("Invalid Session TTL '{ttl_ns}', must be between [{min}={max}]")]
    InvalidSessionTtl {
        ttl_ns: u64,
        min: String,
        max: String,
    },
    #[error("Invalid Behavior setting '{0}'")]
    InvalidBehavior(String),
    /// Not a Consul error: the proposer must generate another session ID.
    #[error("session ID '{0}' is empty or already in use")]
    SessionIdInUse(String),
    #[error("Missing node registration")]
    MissingNode,
    #[error("Missing check '{0}' registration")]
    MissingCheck(String),
    #[error("Check '{0}' is in critical state")]
    CheckCritical(String),
    #[error("Must provide node")]
    MissingNodeName,
    #[error("Must provide address if SkipNodeUpdate is not set")]
    MissingAddress,
    #[error("Must provide service name")]
    MissingServiceName,
    #[error("Missing service registration")]
    MissingServiceRegistration,
    #[error("Unknown check ID {}", go_quote(.0))]
    UnknownCheck(String),
}

/// Go's `%q` of a string (also `%#v`): double quotes, backslash escapes.
pub(crate) fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The whole replicated state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    kv: KvStore,
    sessions: SessionStore,
    catalog: Catalog,
    last_applied: u64,
    clock_ms: u64,
}

/// A point-in-time copy of the state for raft snapshots. `format` lets a
/// future version refuse or migrate an older layout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    pub format: u32,
    pub state: State,
}

/// The snapshot layout this code writes.
pub const SNAPSHOT_FORMAT: u32 = 1;

impl State {
    /// An empty state (Consul's default `session_ttl_min` of 10 s).
    pub fn new() -> State {
        State::default()
    }

    /// An empty state enforcing another `session_ttl_min` (all replicas must agree).
    pub fn with_session_ttl_min(ttl_min_ns: u64) -> State {
        State {
            sessions: SessionStore::with_ttl_min(ttl_min_ns),
            ..State::default()
        }
    }

    /// Apply one log entry. `index` must exceed the last applied index; a
    /// command that fails still consumes its index (failures are deterministic).
    pub fn apply(&mut self, index: u64, now_ms: u64, cmd: Command) -> CommandResult {
        if index <= self.last_applied {
            return Err(StateError::StaleIndex {
                index,
                applied: self.last_applied,
            });
        }
        self.last_applied = index;
        self.clock_ms = self.clock_ms.max(now_ms);
        let now = self.clock_ms;
        self.kv.prune_lock_delays(now);
        self.dispatch(index, now, cmd)
    }

    fn dispatch(&mut self, idx: u64, now: u64, cmd: Command) -> CommandResult {
        let need_key = |k: &str| {
            if k.is_empty() {
                Err(StateError::MissingKey)
            } else {
                Ok(())
            }
        };
        match cmd {
            Command::KvSet { key, value, flags } => {
                need_key(&key)?;
                self.kv.set(idx, &key, value, flags);
                Ok(Outcome::Bool(true))
            }
            Command::KvCas {
                key,
                value,
                flags,
                index,
            } => {
                need_key(&key)?;
                Ok(Outcome::Bool(
                    self.kv.cas(idx, &key, value, flags, index).is_some(),
                ))
            }
            Command::KvAcquire {
                key,
                value,
                flags,
                session,
            } => {
                need_key(&key)?;
                let got =
                    self.kv
                        .acquire(idx, now, &key, value, flags, &session, &self.sessions)?;
                Ok(Outcome::Bool(got.is_some()))
            }
            Command::KvRelease {
                key,
                value,
                flags,
                session,
            } => {
                need_key(&key)?;
                let done = self.kv.release(idx, &key, value, flags, &session)?;
                Ok(Outcome::Bool(done.is_some()))
            }
            Command::KvDelete { key } => {
                need_key(&key)?;
                self.kv.delete(idx, &key);
                Ok(Outcome::Bool(true))
            }
            Command::KvDeleteCas { key, index } => {
                need_key(&key)?;
                Ok(Outcome::Bool(self.kv.delete_cas(idx, &key, index)))
            }
            Command::KvDeleteTree { prefix } => {
                self.kv.delete_tree(idx, &prefix);
                Ok(Outcome::Bool(true))
            }
            Command::KvTxn { ops } => Ok(Outcome::Txn(self.kv.txn(idx, now, ops, &self.sessions))),
            Command::ReapTombstones { up_to } => {
                self.kv.reap(up_to);
                Ok(Outcome::Done)
            }
            Command::SessionCreate(req) => {
                self.check_session_links(&req)?;
                Ok(Outcome::SessionCreated(
                    self.sessions.insert(idx, now, req)?,
                ))
            }
            Command::SessionRenew { id } => {
                Ok(Outcome::SessionRenewed(self.sessions.renew(now, &id)?))
            }
            Command::SessionDestroy { id } => {
                let gone = self.invalidate(idx, now, vec![id]);
                Ok(Outcome::SessionsInvalidated(gone))
            }
            Command::ExpireSessions => {
                let expired = self.sessions.expired(now);
                Ok(Outcome::SessionsInvalidated(
                    self.invalidate(idx, now, expired),
                ))
            }
            Command::ResetSessionTimers => {
                self.sessions.reset_timers(now);
                Ok(Outcome::Done)
            }
            Command::Register(reg) => {
                let effects = self.catalog.register(idx, reg)?;
                self.apply_effects(idx, now, effects);
                Ok(Outcome::Done)
            }
            Command::Deregister(dereg) => {
                let effects = self.catalog.deregister(idx, &dereg);
                self.apply_effects(idx, now, effects);
                Ok(Outcome::Done)
            }
            Command::UpdateCheck {
                node,
                check_id,
                status,
                output,
            } => {
                let effects = self
                    .catalog
                    .update_check(idx, &node, &check_id, status, output)?;
                self.apply_effects(idx, now, effects);
                Ok(Outcome::Done)
            }
        }
    }

    /// Consul's session-create checks against the catalog: the node exists and
    /// every linked check exists on it and is not critical.
    fn check_session_links(&self, req: &SessionRequest) -> Result<(), StateError> {
        self.sessions.validate_ttl(req.ttl_ns)?;
        if self.catalog.node(&req.node).is_none() {
            return Err(StateError::MissingNode);
        }
        let default = [session::SERF_HEALTH.to_string()];
        let node_checks = req.node_checks.as_deref().unwrap_or(&default);
        for id in node_checks.iter().chain(&req.service_checks) {
            match self.catalog.check(&req.node, id) {
                None => return Err(StateError::MissingCheck(id.clone())),
                Some(c) if c.status == CheckStatus::Critical => {
                    return Err(StateError::CheckCritical(id.clone()))
                }
                Some(_) => {}
            }
        }
        Ok(())
    }

    fn apply_effects(&mut self, idx: u64, now: u64, effects: CatalogEffects) {
        let mut doomed = Vec::new();
        for node in &effects.dead_nodes {
            doomed.extend(self.sessions.on_node(node));
        }
        for (node, check) in &effects.dead_checks {
            doomed.extend(self.sessions.watching(node, check));
        }
        self.invalidate(idx, now, doomed);
    }

    /// Invalidate sessions: held keys released or deleted per Behavior, each
    /// with lock-delay from `now`; returns the IDs that existed.
    fn invalidate(&mut self, idx: u64, now: u64, ids: Vec<String>) -> Vec<String> {
        let mut gone = Vec::new();
        for id in ids {
            let Some(s) = self.sessions.remove(idx, &id) else {
                continue;
            };
            let delete = s.behavior == SessionBehavior::Delete;
            for key in self.kv.held_by(&s.id) {
                self.kv
                    .invalidate_lock(idx, now, &key, delete, s.lock_delay_ms());
            }
            gone.push(s.id);
        }
        gone
    }

    // ----- snapshots -----

    /// A copy of the whole state for a raft snapshot.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            format: SNAPSHOT_FORMAT,
            state: self.clone(),
        }
    }

    /// The state a snapshot captured.
    pub fn restore(snapshot: Snapshot) -> State {
        snapshot.state
    }

    // ----- general reads -----

    /// The last applied log index (0 before the first entry).
    pub fn last_applied(&self) -> u64 {
        self.last_applied
    }

    /// The clamped clock (ms) of the last applied entry.
    pub fn clock_ms(&self) -> u64 {
        self.clock_ms
    }

    // ----- KV reads -----

    /// `GET /v1/kv/<key>`: the entry and the key's blocking index.
    pub fn kv_get(&self, key: &str) -> (Option<&KvEntry>, u64) {
        (self.kv.get(key), self.kv.key_index(key))
    }

    /// `GET ?recurse`: entries under the prefix and the prefix index.
    pub fn kv_list(&self, prefix: &str) -> (Vec<&KvEntry>, u64) {
        (self.kv.list(prefix), self.kv.prefix_index(prefix))
    }

    /// `GET ?keys[&separator=]`: key names and the prefix index.
    pub fn kv_keys(&self, prefix: &str, separator: Option<&str>) -> (Vec<String>, u64) {
        (
            self.kv.keys(prefix, separator),
            self.kv.prefix_index(prefix),
        )
    }

    /// Blocking index of one key (ModifyIndex, or its tombstone's index).
    pub fn kv_key_index(&self, key: &str) -> u64 {
        self.kv.key_index(key)
    }

    /// Blocking index of a prefix (max over entries and tombstones under it).
    pub fn kv_prefix_index(&self, prefix: &str) -> u64 {
        self.kv.prefix_index(prefix)
    }

    /// A read-only txn without the log, and the KV table index; `None` if any op writes.
    pub fn kv_txn_read(&self, ops: &[TxnOp]) -> Option<(TxnOutcome, u64)> {
        self.kv
            .txn_read(ops)
            .map(|outcome| (outcome, self.kv.table_index()))
    }

    /// Until when (ms) `acquire` on `key` is refused at the current clock.
    pub fn kv_lock_delay(&self, key: &str) -> Option<u64> {
        self.kv.lock_delay_until(key, self.clock_ms)
    }

    /// Tombstones awaiting reaping.
    pub fn kv_tombstones(&self) -> usize {
        self.kv.tombstone_count()
    }

    // ----- session reads -----

    /// `GET /v1/session/info/<id>`.
    pub fn session_info(&self, id: &str) -> (Option<&Session>, u64) {
        (self.sessions.get(id), self.sessions.table_index())
    }

    /// `GET /v1/session/list`.
    pub fn sessions(&self) -> (Vec<&Session>, u64) {
        (self.sessions.all().collect(), self.sessions.table_index())
    }

    /// `GET /v1/session/node/<node>`.
    pub fn node_sessions(&self, node: &str) -> (Vec<&Session>, u64) {
        (
            self.sessions.all().filter(|s| s.node == node).collect(),
            self.sessions.table_index(),
        )
    }

    /// The earliest session TTL deadline (ms), for the shell's expiry timer.
    pub fn next_session_deadline(&self) -> Option<u64> {
        self.sessions.next_deadline()
    }

    // ----- catalog and health reads -----

    /// Catalog-wide index (`catalog/services`, `catalog/nodes`, `health/state`).
    pub fn catalog_index(&self) -> u64 {
        self.catalog.table_index()
    }

    /// Index of one service name (`catalog/service`, `health/service`, `health/checks`).
    pub fn service_index(&self, name: &str) -> u64 {
        self.catalog.service_index(name)
    }

    /// `GET /v1/catalog/services`: name → union of tags.
    pub fn catalog_services(&self) -> (std::collections::BTreeMap<String, Vec<String>>, u64) {
        (self.catalog.services(), self.catalog.table_index())
    }

    /// `GET /v1/catalog/service/<name>?tag=..`.
    pub fn catalog_service(&self, name: &str, tags: &[String]) -> (Vec<ServiceInstance>, u64) {
        (
            self.catalog.service_instances(name, tags),
            self.catalog.service_index(name),
        )
    }

    /// `GET /v1/catalog/nodes`.
    pub fn catalog_nodes(&self) -> (Vec<&Node>, u64) {
        (self.catalog.nodes(), self.catalog.table_index())
    }

    /// `GET /v1/catalog/node/<name>` (`None` ⇒ `null`).
    pub fn catalog_node(&self, name: &str) -> (Option<NodeServices>, u64) {
        (self.catalog.node_services(name), self.catalog.table_index())
    }

    /// `GET /v1/health/service/<name>?tag=..[&passing]`.
    pub fn health_service(
        &self,
        name: &str,
        tags: &[String],
        passing_only: bool,
    ) -> (Vec<ServiceEntry>, u64) {
        (
            self.catalog.health_service(name, tags, passing_only),
            self.catalog.service_index(name),
        )
    }

    /// `GET /v1/health/checks/<service>`.
    pub fn health_service_checks(&self, name: &str) -> (Vec<HealthCheck>, u64) {
        (
            self.catalog.service_checks(name),
            self.catalog.service_index(name),
        )
    }

    /// `GET /v1/health/node/<node>`.
    pub fn health_node(&self, node: &str) -> (Vec<HealthCheck>, u64) {
        (self.catalog.node_checks(node), self.catalog.table_index())
    }

    /// `GET /v1/health/state/<state>`.
    pub fn health_state(&self, filter: StatusFilter) -> (Vec<HealthCheck>, u64) {
        (
            self.catalog.checks_in_state(filter),
            self.catalog.table_index(),
        )
    }

    /// One check (the HTTP layer's TTL-check lookups).
    pub fn check(&self, node: &str, check_id: &str) -> Option<HealthCheck> {
        self.catalog.check(node, check_id)
    }
}
