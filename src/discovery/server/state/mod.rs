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
//! [`Command::Restore`] (`PUT /v1/snapshot`) replaces the KV store, sessions
//! and catalog with a snapshot's. It is an ordinary log entry, so every
//! replica applies it at the same index R; `last_applied` becomes R (never
//! lower than before) and the clock keeps its high-water mark. The restored
//! entries keep the `CreateIndex`/`ModifyIndex`/`LockIndex` they had when
//! the snapshot was taken (a CAS against a saved ModifyIndex works as it
//! did then). The blocking indexes, though, treat the restore as a write
//! to every table: each is at least R, so no list, prefix, catalog, health
//! or session index goes backwards, and every query parked across the
//! restore answers at once with the restored data (Consul instead lets
//! indexes fall back to the snapshot's and relies on clients resetting,
//! consul-wire.md §3.1/§3.3). The one exception is a *present* key's index,
//! which stays its ModifyIndex as Consul defines it, because clients
//! (Patroni's leader watch) block on the ModifyIndex read from a body; that
//! index may go back after a restore, which clients handle by resetting.
//! Session TTL timers restart at full 2×TTL from the restore, as after
//! Consul's post-restore leadership reassertion.
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

pub mod autopilot;
pub mod catalog;
pub mod checks;
pub mod coordinate;
pub mod kv;
pub mod session;
pub mod txn;

use serde::{Deserialize, Serialize};

use crate::discovery::api::gofmt::go_quote;
use crate::discovery::server::vivaldi::Coordinate;

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
        #[serde(with = "kv::b64")]
        value: Vec<u8>,
        flags: u64,
    },
    /// `PUT ?cas=<index>`; `index` 0 = create only.
    KvCas {
        key: String,
        #[serde(with = "kv::b64")]
        value: Vec<u8>,
        flags: u64,
        index: u64,
    },
    /// `PUT ?acquire=<session>`.
    KvAcquire {
        key: String,
        #[serde(with = "kv::b64")]
        value: Vec<u8>,
        flags: u64,
        session: String,
    },
    /// `PUT ?release=<session>`.
    KvRelease {
        key: String,
        #[serde(with = "kv::b64")]
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
    /// `PUT /v1/txn` with KV ops only (kept so older logs still apply).
    KvTxn { ops: Vec<TxnOp> },
    /// `PUT /v1/txn`: KV, catalog and session ops.
    Txn { ops: Vec<txn::TxnOp> },
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
    /// `PUT /v1/snapshot`: replace KV, sessions and catalog with the
    /// snapshot's (see the module doc for the indexes). Boxed: a whole state
    /// would make every other command as large.
    Restore { snapshot: Box<Snapshot> },
    /// `PUT /v1/operator/autopilot/configuration[?cas=]`, and the leader's
    /// default when none is stored: [`Outcome::Bool`] (false: the CAS failed).
    AutopilotSet {
        config: autopilot::AutopilotConfig,
        cas: Option<u64>,
    },
    /// A server's batch of queued `PUT /v1/coordinate/update`s.
    CoordinateBatchUpdate {
        updates: Vec<coordinate::CoordinateUpdate>,
    },
}

/// What an applied command produced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// The `true`/`false` body of KV writes.
    Bool(bool),
    /// A KV-only txn committed or rolled back (HTTP 200 / 409).
    Txn(TxnOutcome),
    /// A [`Command::Txn`] committed or rolled back.
    TxnResults(txn::TxnOutcome),
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
    /// Not a Consul error: a restore of a snapshot layout this version
    /// cannot read. The state is unchanged.
    #[error("snapshot format {found} is not supported: this version reads format {supported}")]
    SnapshotFormat { found: u32, supported: u32 },
}

/// The whole replicated state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    kv: KvStore,
    sessions: SessionStore,
    catalog: Catalog,
    last_applied: u64,
    clock_ms: u64,
    /// Index of the last [`Command::Restore`] (0: none): the floor of every
    /// blocking index but a present key's. `default` so states saved before
    /// restores existed still load.
    #[serde(default)]
    restored_at: u64,
    /// The autopilot configuration (`operator/autopilot/configuration`);
    /// absent in states saved before it existed, and left out of the JSON
    /// while unset so such states still serialise alike.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    autopilot: Option<autopilot::AutopilotConfig>,
    /// Network coordinates; `default` so earlier states still load.
    #[serde(default)]
    coordinates: coordinate::Coordinates,
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

/// A [`Snapshot`] that borrows the state instead of copying it: it
/// serialises to the same JSON, so a snapshot can be written as a stream
/// straight from the live state (under the replica's read lock) and read
/// back as a [`Snapshot`].
#[derive(Debug, Clone, Copy, Serialize)]
pub struct SnapshotView<'a> {
    pub format: u32,
    pub state: &'a State,
}

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

    /// Apply the commands of one log entry in order, all at `index` (group
    /// commit): each has its own result, and each sees the ones before it,
    /// exactly as if they had come one by one.
    pub fn apply_all(&mut self, index: u64, now_ms: u64, cmds: Vec<Command>) -> Vec<CommandResult> {
        let mut cmds = cmds.into_iter();
        let Some(first) = cmds.next() else {
            return Vec::new();
        };
        let first = self.apply(index, now_ms, first);
        if let Err(stale @ StateError::StaleIndex { .. }) = &first {
            let stale = stale.clone();
            return std::iter::once(first)
                .chain(cmds.map(|_| Err(stale.clone())))
                .collect();
        }
        let now = self.clock_ms;
        std::iter::once(first)
            .chain(cmds.map(|cmd| self.dispatch(index, now, cmd)))
            .collect()
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
            Command::Txn { ops } => Ok(Outcome::TxnResults(self.txn(idx, now, ops))),
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
            Command::Restore { snapshot } => {
                self.restore_from(*snapshot, now)?;
                Ok(Outcome::Done)
            }
            Command::AutopilotSet { config, cas } => Ok(Outcome::Bool(autopilot::set(
                &mut self.autopilot,
                idx,
                config,
                cas,
            ))),
            Command::CoordinateBatchUpdate { updates } => {
                let catalog = &self.catalog;
                self.coordinates
                    .update(idx, updates, |n| catalog.node(n).is_some());
                Ok(Outcome::Done)
            }
        }
    }

    /// Take the data of a snapshot, keeping this replica's log position
    /// and clock (both only move forward). Called by `apply` once
    /// `last_applied` is this entry's index, which becomes the index floor.
    fn restore_from(&mut self, snapshot: Snapshot, now: u64) -> Result<(), StateError> {
        if snapshot.format != SNAPSHOT_FORMAT {
            return Err(StateError::SnapshotFormat {
                found: snapshot.format,
                supported: SNAPSHOT_FORMAT,
            });
        }
        let State {
            kv,
            sessions,
            catalog,
            last_applied: _,
            clock_ms: _,
            restored_at: _,
            // Consul's restore brings the autopilot config back too.
            autopilot,
            coordinates,
        } = snapshot.state;
        if autopilot.is_some() {
            self.autopilot = autopilot;
        }
        self.restored_at = self.last_applied;
        self.kv = kv;
        self.kv.touch_all();
        self.sessions = sessions;
        self.catalog = catalog;
        self.coordinates = coordinates;
        self.sessions.reset_timers(now);
        Ok(())
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
        self.coordinates.drop_nodes(idx, &effects.dead_nodes);
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

    /// The whole state as a [`Snapshot`] without a copy, to serialise.
    pub fn snapshot_view(&self) -> SnapshotView<'_> {
        SnapshotView {
            format: SNAPSHOT_FORMAT,
            state: self,
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

    /// The stored autopilot configuration (`None` until the leader wrote
    /// the default).
    pub fn autopilot(&self) -> Option<&autopilot::AutopilotConfig> {
        self.autopilot.as_ref()
    }

    /// The clamped clock (ms) of the last applied entry.
    pub fn clock_ms(&self) -> u64 {
        self.clock_ms
    }

    /// A blocking index raised to the last restore's index: a restore is a
    /// write to every table (see the module doc).
    fn floor(&self, index: u64) -> u64 {
        index.max(self.restored_at)
    }

    // ----- KV reads -----

    /// `GET /v1/kv/<key>`: the entry and the key's blocking index.
    pub fn kv_get(&self, key: &str) -> (Option<&KvEntry>, u64) {
        (self.kv.get(key), self.kv_key_index(key))
    }

    /// `GET ?recurse`: entries under the prefix and the prefix index.
    pub fn kv_list(&self, prefix: &str) -> (Vec<&KvEntry>, u64) {
        (self.kv.list(prefix), self.kv_prefix_index(prefix))
    }

    /// `GET ?keys[&separator=]`: key names and the prefix index.
    pub fn kv_keys(&self, prefix: &str, separator: Option<&str>) -> (Vec<String>, u64) {
        (
            self.kv.keys(prefix, separator),
            self.kv_prefix_index(prefix),
        )
    }

    /// Blocking index of one key: its ModifyIndex when present (never
    /// raised to the restore floor: clients block on the ModifyIndex they
    /// read in a body), else its tombstone's index.
    pub fn kv_key_index(&self, key: &str) -> u64 {
        let index = self.kv.key_index(key);
        if self.kv.get(key).is_some() {
            index
        } else {
            self.floor(index)
        }
    }

    /// What KV writes since the last call may have moved: the replica's
    /// wake pass probes only the queries watching those keys.
    pub fn take_kv_changes(&mut self) -> kv::KvChanges {
        self.kv.take_changes()
    }

    /// Blocking index of a prefix (max over entries and tombstones under it).
    pub fn kv_prefix_index(&self, prefix: &str) -> u64 {
        self.floor(self.kv.prefix_index(prefix))
    }

    /// A read-only txn without the log, and the KV table index; `None` if any op writes.
    pub fn kv_txn_read(&self, ops: &[TxnOp]) -> Option<(TxnOutcome, u64)> {
        self.kv
            .txn_read(ops)
            .map(|outcome| (outcome, self.floor(self.kv.table_index())))
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
        (
            self.sessions.get(id),
            self.floor(self.sessions.table_index()),
        )
    }

    /// `GET /v1/session/list`.
    pub fn sessions(&self) -> (Vec<&Session>, u64) {
        (
            self.sessions.all().collect(),
            self.floor(self.sessions.table_index()),
        )
    }

    /// `GET /v1/session/node/<node>`.
    pub fn node_sessions(&self, node: &str) -> (Vec<&Session>, u64) {
        (
            self.sessions.all().filter(|s| s.node == node).collect(),
            self.floor(self.sessions.table_index()),
        )
    }

    /// The earliest session TTL deadline (ms), for the shell's expiry timer.
    pub fn next_session_deadline(&self) -> Option<u64> {
        self.sessions.next_deadline()
    }

    // ----- catalog and health reads -----

    /// Catalog-wide index (`catalog/services`, `catalog/nodes`, `health/state`).
    pub fn catalog_index(&self) -> u64 {
        self.floor(self.catalog.table_index())
    }

    /// Index of one service name (`catalog/service`, `health/service`, `health/checks`).
    pub fn service_index(&self, name: &str) -> u64 {
        self.floor(self.catalog.service_index(name))
    }

    /// `GET /v1/catalog/services`: name → union of tags.
    pub fn catalog_services(&self) -> (std::collections::BTreeMap<String, Vec<String>>, u64) {
        (self.catalog.services(), self.catalog_index())
    }

    /// `GET /v1/catalog/service/<name>?tag=..`.
    pub fn catalog_service(&self, name: &str, tags: &[String]) -> (Vec<ServiceInstance>, u64) {
        (
            self.catalog.service_instances(name, tags),
            self.service_index(name),
        )
    }

    /// `GET /v1/catalog/nodes`.
    pub fn catalog_nodes(&self) -> (Vec<&Node>, u64) {
        (self.catalog.nodes(), self.catalog_index())
    }

    /// `GET /v1/catalog/node/<name>` (`None` ⇒ `null`).
    pub fn catalog_node(&self, name: &str) -> (Option<NodeServices>, u64) {
        (self.catalog.node_services(name), self.catalog_index())
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
            self.service_index(name),
        )
    }

    /// `GET /v1/health/checks/<service>`.
    pub fn health_service_checks(&self, name: &str) -> (Vec<HealthCheck>, u64) {
        (self.catalog.service_checks(name), self.service_index(name))
    }

    /// `GET /v1/health/node/<node>`.
    pub fn health_node(&self, node: &str) -> (Vec<HealthCheck>, u64) {
        (self.catalog.node_checks(node), self.catalog_index())
    }

    /// `GET /v1/health/state/<state>`.
    pub fn health_state(&self, filter: StatusFilter) -> (Vec<HealthCheck>, u64) {
        (self.catalog.checks_in_state(filter), self.catalog_index())
    }

    // ----- coordinate reads -----

    /// Index of the coordinates table (`coordinate/nodes`, `coordinate/node`).
    pub fn coordinate_index(&self) -> u64 {
        self.floor(self.coordinates.table_index())
    }

    /// Every stored (node, segment, coordinate), by node.
    pub fn coordinates(&self) -> impl Iterator<Item = (&str, &str, &Coordinate)> {
        self.coordinates.all()
    }

    /// One node's coordinates by segment.
    pub fn node_coordinates(
        &self,
        node: &str,
    ) -> Option<&std::collections::BTreeMap<String, Coordinate>> {
        self.coordinates.node(node)
    }

    /// One check (the HTTP layer's TTL-check lookups).
    pub fn check(&self, node: &str, check_id: &str) -> Option<HealthCheck> {
        self.catalog.check(node, check_id)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::collections::BTreeMap;

    use super::catalog::{Service, Weights};
    use super::*;

    fn node_reg(node: &str, checks: Vec<HealthCheck>) -> Command {
        Command::Register(Registration {
            node: node.to_string(),
            node_id: String::new(),
            address: "10.0.0.1".to_string(),
            tagged_addresses: BTreeMap::new(),
            node_meta: BTreeMap::new(),
            skip_node_update: false,
            service: None,
            checks,
        })
    }

    fn create(id: &str, behavior: SessionBehavior, ttl_ns: u64) -> Command {
        Command::SessionCreate(SessionRequest {
            id: id.to_string(),
            name: "test".to_string(),
            node: "n1".to_string(),
            node_checks: None,
            service_checks: Vec::new(),
            lock_delay_ns: Some(1_000_000_000),
            behavior,
            ttl: if ttl_ns > 0 {
                "15.0s".into()
            } else {
                String::new()
            },
            ttl_ns,
        })
    }

    fn acquire(key: &str, session: &str) -> Command {
        Command::KvAcquire {
            key: key.to_string(),
            value: b"v".to_vec(),
            flags: 0,
            session: session.to_string(),
        }
    }

    /// A state with node n1 (serfHealth passing) at index 1.
    fn base() -> State {
        let mut s = State::new();
        s.apply(1, 0, node_reg("n1", vec![])).unwrap();
        s
    }

    #[test]
    fn stale_index_is_rejected_without_change() {
        let mut s = base();
        let before = s.clone();
        let err = s
            .apply(
                1,
                0,
                Command::KvSet {
                    key: "a".into(),
                    value: vec![],
                    flags: 0,
                },
            )
            .unwrap_err();
        assert!(matches!(err, StateError::StaleIndex { .. }));
        assert_eq!(s, before);
    }

    #[test]
    fn commands_of_one_entry_apply_in_order_at_its_index() {
        let set = |k: &str, v: &[u8]| Command::KvSet {
            key: k.into(),
            value: v.to_vec(),
            flags: 0,
        };
        let cas = |k: &str, index: u64| Command::KvCas {
            key: k.into(),
            value: b"cas".to_vec(),
            flags: 0,
            index,
        };
        let mut s = base();
        let results = s.apply_all(
            5,
            10,
            vec![
                set("a", b"1"),
                cas("a", 0), // create-only: a exists now
                cas("a", 5), // a's ModifyIndex is the entry's
                Command::KvSet {
                    key: String::new(),
                    value: vec![],
                    flags: 0,
                },
                set("b", b"2"),
            ],
        );
        assert_eq!(
            results,
            vec![
                Ok(Outcome::Bool(true)),
                Ok(Outcome::Bool(false)),
                Ok(Outcome::Bool(true)),
                Err(StateError::MissingKey),
                Ok(Outcome::Bool(true)),
            ]
        );
        assert_eq!(
            s.kv_get("a").0.map(|e| e.value.clone()),
            Some(b"cas".to_vec())
        );
        assert_eq!(s.kv_get("b").0.map(|e| e.modify_index), Some(5));
        let before = s.clone();
        let stale = s.apply_all(5, 11, vec![set("c", b"3"), set("d", b"4")]);
        assert!(stale
            .iter()
            .all(|r| matches!(r, Err(StateError::StaleIndex { .. }))));
        assert_eq!(s, before);
        assert!(s.apply_all(6, 12, Vec::new()).is_empty());
    }

    #[test]
    fn session_create_validates_against_catalog() {
        let mut s = State::new();
        assert_eq!(
            s.apply(1, 0, create("s1", SessionBehavior::Release, 0)),
            Err(StateError::MissingNode)
        );
        s.apply(2, 0, node_reg("n1", vec![])).unwrap();
        let mut req = match create("s1", SessionBehavior::Release, 0) {
            Command::SessionCreate(r) => r,
            _ => unreachable!(),
        };
        req.node_checks = Some(vec!["web".into()]);
        assert_eq!(
            s.apply(3, 0, Command::SessionCreate(req.clone()))
                .unwrap_err()
                .to_string(),
            "Missing check 'web' registration"
        );
        s.apply(
            4,
            0,
            node_reg(
                "n1",
                vec![HealthCheck::new("n1", "web", "web", CheckStatus::Critical)],
            ),
        )
        .unwrap();
        assert_eq!(
            s.apply(5, 0, Command::SessionCreate(req))
                .unwrap_err()
                .to_string(),
            "Check 'web' is in critical state"
        );
        let mut bad_ttl = create("s2", SessionBehavior::Release, 1_000_000_000);
        if let Command::SessionCreate(r) = &mut bad_ttl {
            r.ttl = "1s".into();
        }
        assert_eq!(
            s.apply(6, 0, bad_ttl).unwrap_err().to_string(),
            "Invalid Session TTL '1000000000', must be between [10s=24h0m0s]"
        );
        assert!(s
            .apply(7, 0, create("s3", SessionBehavior::Release, 0))
            .is_ok());
        let (list, idx) = s.sessions();
        assert_eq!((list.len(), idx), (1, 7));
    }

    #[test]
    fn destroy_with_release_keeps_key_and_applies_lock_delay() {
        let mut s = base();
        s.apply(2, 0, create("s1", SessionBehavior::Release, 0))
            .unwrap();
        s.apply(3, 0, create("s2", SessionBehavior::Release, 0))
            .unwrap();
        assert_eq!(s.apply(4, 0, acquire("k", "s1")), Ok(Outcome::Bool(true)));
        assert_eq!(
            s.apply(5, 100, Command::SessionDestroy { id: "s1".into() }),
            Ok(Outcome::SessionsInvalidated(vec!["s1".into()]))
        );
        let (e, idx) = s.kv_get("k");
        let e = e.unwrap();
        assert_eq!((e.session.clone(), e.lock_index, idx), (None, 1, 5));
        // 1 s lock-delay from t=100.
        assert_eq!(
            s.apply(6, 1_099, acquire("k", "s2")),
            Ok(Outcome::Bool(false))
        );
        assert_eq!(
            s.apply(7, 1_100, acquire("k", "s2")),
            Ok(Outcome::Bool(true))
        );
        assert_eq!(s.kv_get("k").0.unwrap().lock_index, 2);
        // Destroy is idempotent.
        assert_eq!(
            s.apply(8, 2_000, Command::SessionDestroy { id: "s1".into() }),
            Ok(Outcome::SessionsInvalidated(vec![]))
        );
    }

    #[test]
    fn voluntary_release_has_no_lock_delay() {
        let mut s = base();
        s.apply(2, 0, create("s1", SessionBehavior::Release, 0))
            .unwrap();
        s.apply(3, 0, create("s2", SessionBehavior::Release, 0))
            .unwrap();
        s.apply(4, 0, acquire("k", "s1")).unwrap();
        let rel = Command::KvRelease {
            key: "k".into(),
            value: b"v".to_vec(),
            flags: 0,
            session: "s1".into(),
        };
        assert_eq!(s.apply(5, 0, rel), Ok(Outcome::Bool(true)));
        assert_eq!(s.apply(6, 0, acquire("k", "s2")), Ok(Outcome::Bool(true)));
    }

    #[test]
    fn behavior_delete_removes_held_keys() {
        let mut s = base();
        s.apply(2, 0, create("s1", SessionBehavior::Delete, 0))
            .unwrap();
        s.apply(3, 0, acquire("svc/leader", "s1")).unwrap();
        s.apply(4, 0, acquire("svc/members/a", "s1")).unwrap();
        s.apply(
            5,
            0,
            Command::KvSet {
                key: "svc/config".into(),
                value: b"c".to_vec(),
                flags: 0,
            },
        )
        .unwrap();
        s.apply(6, 0, Command::SessionDestroy { id: "s1".into() })
            .unwrap();
        let (list, idx) = s.kv_list("svc/");
        let keys: Vec<&str> = list.iter().map(|e| e.key.as_str()).collect();
        assert_eq!((keys, idx), (vec!["svc/config"], 6));
        assert_eq!(s.kv_key_index("svc/leader"), 6);
    }

    #[test]
    fn ttl_expiry_uses_twice_the_ttl() {
        let mut s = base();
        s.apply(
            2,
            1_000,
            create("s1", SessionBehavior::Delete, 15_000_000_000),
        )
        .unwrap();
        s.apply(3, 1_000, acquire("k", "s1")).unwrap();
        assert_eq!(s.next_session_deadline(), Some(31_000));
        // At 1×TTL nothing expires.
        assert_eq!(
            s.apply(4, 16_000, Command::ExpireSessions),
            Ok(Outcome::SessionsInvalidated(vec![]))
        );
        // A renewal re-arms the full 2×TTL.
        s.apply(5, 20_000, Command::SessionRenew { id: "s1".into() })
            .unwrap();
        assert_eq!(
            s.apply(6, 31_000, Command::ExpireSessions),
            Ok(Outcome::SessionsInvalidated(vec![]))
        );
        assert_eq!(
            s.apply(7, 50_000, Command::ExpireSessions),
            Ok(Outcome::SessionsInvalidated(vec!["s1".into()]))
        );
        assert!(s.kv_get("k").0.is_none());
        assert_eq!(s.next_session_deadline(), None);
        assert_eq!(
            s.apply(8, 50_000, Command::SessionRenew { id: "s1".into() })
                .unwrap_err()
                .to_string(),
            "Session id 's1' not found"
        );
    }

    #[test]
    fn clock_never_goes_backwards() {
        let mut s = base();
        s.apply(2, 10_000, create("s1", SessionBehavior::Release, 0))
            .unwrap();
        s.apply(3, 10_000, acquire("k", "s1")).unwrap();
        s.apply(4, 10_000, Command::SessionDestroy { id: "s1".into() })
            .unwrap();
        // A clock stepping back does not shorten the lock-delay.
        s.apply(5, 0, Command::ResetSessionTimers).unwrap();
        assert_eq!(s.clock_ms(), 10_000);
        assert_eq!(s.kv_lock_delay("k"), Some(11_000));
    }

    #[test]
    fn critical_check_invalidates_linked_sessions() {
        let mut s = base();
        s.apply(2, 0, create("s1", SessionBehavior::Release, 0))
            .unwrap();
        let mut other = create("s2", SessionBehavior::Release, 0);
        if let Command::SessionCreate(r) = &mut other {
            r.node_checks = Some(Vec::new());
        }
        s.apply(3, 0, other).unwrap();
        s.apply(4, 0, acquire("k", "s1")).unwrap();
        s.apply(
            5,
            0,
            Command::UpdateCheck {
                node: "n1".into(),
                check_id: "serfHealth".into(),
                status: CheckStatus::Warning,
                output: String::new(),
            },
        )
        .unwrap();
        assert!(s.session_info("s1").0.is_some(), "warning is not critical");
        s.apply(
            6,
            0,
            Command::UpdateCheck {
                node: "n1".into(),
                check_id: "serfHealth".into(),
                status: CheckStatus::Critical,
                output: String::new(),
            },
        )
        .unwrap();
        assert!(s.session_info("s1").0.is_none());
        assert!(
            s.session_info("s2").0.is_some(),
            "no checks, not invalidated"
        );
        assert_eq!(s.kv_get("k").0.unwrap().session, None);
    }

    #[test]
    fn node_deregistration_invalidates_its_sessions() {
        let mut s = base();
        s.apply(2, 0, create("s1", SessionBehavior::Delete, 0))
            .unwrap();
        s.apply(3, 0, acquire("k", "s1")).unwrap();
        s.apply(
            4,
            0,
            Command::Deregister(Deregistration {
                node: "n1".into(),
                service_id: None,
                check_id: None,
            }),
        )
        .unwrap();
        let (list, idx) = s.sessions();
        assert!(list.is_empty());
        assert_eq!(idx, 4);
        assert!(s.kv_get("k").0.is_none());
    }

    #[test]
    fn service_write_does_not_move_other_service_index() {
        let mut s = base();
        let svc = |id: &str| Service {
            id: id.into(),
            name: id.into(),
            tags: vec![],
            address: String::new(),
            port: 1,
            meta: BTreeMap::new(),
            enable_tag_override: false,
            weights: Weights::default(),
            create_index: 0,
            modify_index: 0,
            ..Default::default()
        };
        for (i, name) in [(2, "a"), (3, "b")] {
            let Command::Register(mut r) = node_reg("n1", vec![]) else {
                unreachable!()
            };
            r.service = Some(svc(name));
            s.apply(i, 0, Command::Register(r)).unwrap();
        }
        let (_, b_before) = s.health_service("b", &[], false);
        let Command::Register(mut r) = node_reg("n1", vec![]) else {
            unreachable!()
        };
        let mut a = svc("a");
        a.port = 2;
        r.service = Some(a);
        s.apply(4, 0, Command::Register(r)).unwrap();
        assert_eq!(s.health_service("b", &[], false).1, b_before);
        assert_eq!(s.catalog_service("a", &[]).1, 4);
        assert_eq!(s.catalog_services().1, 4);
    }

    #[test]
    fn snapshot_round_trips_through_json() {
        let mut s = base();
        s.apply(2, 5, create("s1", SessionBehavior::Delete, 20_000_000_000))
            .unwrap();
        s.apply(3, 5, acquire("k", "s1")).unwrap();
        s.apply(4, 5, Command::KvDelete { key: "k".into() })
            .unwrap();
        let snap = s.snapshot();
        let text = serde_json::to_string(&snap).unwrap();
        // The borrowed view writes the very same bytes.
        assert_eq!(serde_json::to_string(&s.snapshot_view()).unwrap(), text);
        let back: Snapshot = serde_json::from_str(&text).unwrap();
        assert_eq!(back.format, SNAPSHOT_FORMAT);
        let restored = State::restore(back);
        assert_eq!(restored, s);
        assert_eq!(restored.kv_key_index("k"), 4);
        assert_eq!(restored.next_session_deadline(), Some(40_005));
    }

    fn set(key: &str, value: &str) -> Command {
        Command::KvSet {
            key: key.into(),
            value: value.as_bytes().to_vec(),
            flags: 0,
        }
    }

    #[test]
    fn restore_replaces_the_data_and_keeps_the_log_position() {
        let mut s = base();
        s.apply(2, 1_000, set("a", "1")).unwrap();
        s.apply(
            3,
            1_000,
            create("s1", SessionBehavior::Release, 15_000_000_000),
        )
        .unwrap();
        let saved = s.snapshot();
        s.apply(4, 2_000, set("a", "2")).unwrap();
        s.apply(5, 2_000, set("b", "new")).unwrap();
        s.apply(6, 2_000, Command::SessionDestroy { id: "s1".into() })
            .unwrap();
        let restore = Command::Restore {
            snapshot: Box::new(saved.clone()),
        };
        assert_eq!(s.apply(7, 50_000, restore), Ok(Outcome::Done));
        // The data is the snapshot's, with the indexes it had then; a
        // present key's blocking index is its ModifyIndex...
        let (a, a_index) = s.kv_get("a");
        assert_eq!(
            (a.unwrap().value.as_slice(), a.unwrap().modify_index),
            (&b"1"[..], 2)
        );
        assert_eq!((a_index, s.kv_key_index("a")), (2, 2));
        assert!(s.kv_get("b").0.is_none());
        assert!(s.session_info("s1").0.is_some());
        // ...every other blocking index counts the restore as a write.
        assert_eq!(s.kv_get("b").1, 7, "absent key");
        assert_eq!(s.kv_list("").1, 7);
        assert_eq!(s.kv_keys("", None).1, 7);
        assert_eq!(s.sessions().1, 7);
        assert_eq!(s.session_info("s1").1, 7);
        assert_eq!(s.catalog_services().1, 7);
        assert_eq!(s.catalog_nodes().1, 7);
        assert_eq!(s.health_service("nope", &[], false).1, 7);
        assert_eq!(s.health_node("n1").1, 7);
        // The log position and the clock do not go back...
        assert_eq!((s.last_applied(), s.clock_ms()), (7, 50_000));
        assert!(matches!(
            s.apply(7, 0, set("c", "x")),
            Err(StateError::StaleIndex { .. })
        ));
        // ...session timers restart at 2×TTL from the restore...
        assert_eq!(s.next_session_deadline(), Some(80_000));
        // ...and the next write is above every index handed out before.
        s.apply(8, 50_000, set("a", "3")).unwrap();
        assert_eq!(s.kv_key_index("a"), 8);
        // Apart from those, the state is the saved one.
        let mut expected = State::restore(saved);
        expected.last_applied = 7;
        expected.restored_at = 7;
        expected.clock_ms = 50_000;
        expected.sessions.reset_timers(50_000);
        expected.kv.set(8, "a", b"3".to_vec(), 0);
        expected.last_applied = 8;
        assert_eq!(s, expected);
    }

    #[test]
    fn restore_of_an_unknown_format_changes_nothing() {
        let mut s = base();
        s.apply(2, 0, set("a", "1")).unwrap();
        let mut snap = State::new().snapshot();
        snap.format = SNAPSHOT_FORMAT + 1;
        let before = s.clone();
        let err = s
            .apply(
                3,
                0,
                Command::Restore {
                    snapshot: Box::new(snap),
                },
            )
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "snapshot format {} is not supported: this version reads format {SNAPSHOT_FORMAT}",
                SNAPSHOT_FORMAT + 1
            )
        );
        // The failed entry consumed its index; the data is untouched.
        assert_eq!(s.last_applied(), 3);
        assert_eq!(s.kv_get("a").0, before.kv_get("a").0);
    }

    #[test]
    fn state_errors_quote_like_go() {
        assert_eq!(
            StateError::InvalidSession("x".into()).to_string(),
            "invalid session \"x\""
        );
    }
}
