//! The KV table: entries, deletion tombstones, per-key lock-delays and the
//! Consul verbs over them (set, cas, acquire/release, delete, delete-cas,
//! delete-tree, txn) plus the reads and the blocking indexes they answer with.
//!
//! Index rules (consul-wire.md §3.2):
//! - a present key answers with its own `ModifyIndex`;
//! - a missing key answers with its tombstone's index, else the reap floor;
//! - a prefix answers with the max over entries and tombstones under it and the
//!   reap floor.
//!
//! Reap rule: `reap(up_to)` drops the tombstones whose index is `<= up_to` and
//! raises the *reap floor* to `up_to` (clamped to the table index). Every missing
//! key and every prefix answers at least the floor, so a reap can wake blocked
//! readers (a legal spurious wakeup) but never moves an index backwards: every
//! tombstone it removes was `<= up_to <= floor`. The shell proposes
//! `Command::ReapTombstones { up_to }` with an index that is older than the
//! tombstone TTL (Consul: ~15 min), e.g. the applied index it saw back then.
//!
//! An empty `value` is Consul's nil value (`"Value": null` on the wire): an HTTP
//! PUT with an empty body stores nil in Consul too.

use std::collections::BTreeMap;
use std::ops::Bound;

use serde::{Deserialize, Serialize};

use super::session::SessionStore;
use super::StateError;
use crate::discovery::api::gofmt::go_quote;

/// One KV pair as Consul's `KVPair` carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvEntry {
    pub key: String,
    /// Empty = nil (`null` on the wire).
    #[serde(with = "b64")]
    pub value: Vec<u8>,
    pub flags: u64,
    /// The session holding the lock on this key, if any.
    pub session: Option<String>,
    pub create_index: u64,
    pub modify_index: u64,
    pub lock_index: u64,
}

/// One KV operation of a `/v1/txn` request (consul-wire.md §4.5). `index` is the
/// request's `Index` field; `value`/`flags` are ignored by verbs that don't write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxnOp {
    Set {
        key: String,
        #[serde(with = "b64")]
        value: Vec<u8>,
        flags: u64,
    },
    Cas {
        key: String,
        #[serde(with = "b64")]
        value: Vec<u8>,
        flags: u64,
        index: u64,
    },
    Lock {
        key: String,
        #[serde(with = "b64")]
        value: Vec<u8>,
        flags: u64,
        session: String,
    },
    Unlock {
        key: String,
        #[serde(with = "b64")]
        value: Vec<u8>,
        flags: u64,
        session: String,
    },
    Get {
        key: String,
    },
    GetTree {
        prefix: String,
    },
    CheckIndex {
        key: String,
        index: u64,
    },
    CheckSession {
        key: String,
        session: String,
    },
    CheckNotExists {
        key: String,
    },
    Delete {
        key: String,
    },
    DeleteTree {
        prefix: String,
    },
    DeleteCas {
        key: String,
        index: u64,
    },
}

impl TxnOp {
    /// True for the verbs that never write (a txn made only of these is a read).
    pub fn is_read(&self) -> bool {
        matches!(
            self,
            TxnOp::Get { .. }
                | TxnOp::GetTree { .. }
                | TxnOp::CheckIndex { .. }
                | TxnOp::CheckSession { .. }
                | TxnOp::CheckNotExists { .. }
        )
    }

    fn key(&self) -> &str {
        match self {
            TxnOp::Set { key, .. }
            | TxnOp::Cas { key, .. }
            | TxnOp::Lock { key, .. }
            | TxnOp::Unlock { key, .. }
            | TxnOp::Get { key }
            | TxnOp::CheckIndex { key, .. }
            | TxnOp::CheckSession { key, .. }
            | TxnOp::CheckNotExists { key }
            | TxnOp::Delete { key }
            | TxnOp::DeleteCas { key, .. } => key,
            TxnOp::GetTree { prefix } | TxnOp::DeleteTree { prefix } => prefix,
        }
    }
}

/// One failed op of a rolled-back txn: Consul's `{"OpIndex":i,"What":"..."}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnError {
    pub op_index: usize,
    pub what: String,
}

/// What a txn did: either every op applied (results in op order; entries of
/// write verbs carry no value, as Consul's do) or none did (HTTP 409).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxnOutcome {
    Committed(Vec<KvEntry>),
    RolledBack(Vec<TxnError>),
}

/// The KV table with its tombstones and lock-delays.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvStore {
    entries: BTreeMap<String, KvEntry>,
    /// key → index of the delete that removed it.
    tombstones: BTreeMap<String, u64>,
    /// Every tombstone at or below this index has been reaped.
    reap_floor: u64,
    /// Highest index of any write to the table (sets and deletes).
    table_index: u64,
    /// key → time (ms) until which `acquire` is refused.
    lock_delays: BTreeMap<String, u64>,
    /// The keys written since the replica last took them.
    #[serde(skip)]
    touched: Touched,
}

/// The keys a run of writes touched, for waking only the blocking queries
/// that watch them ([`KvStore::take_changes`]). Bookkeeping beside the
/// state, not state: never serialized, and equal to any other.
#[derive(Debug, Clone, Default)]
struct Touched {
    keys: Vec<String>,
    /// Anything may have moved: a reap, a restore, or too many keys.
    all: bool,
}

/// More keys than this between two looks are kept as "any".
const TOUCHED_MAX: usize = 4096;

impl PartialEq for Touched {
    fn eq(&self, _: &Touched) -> bool {
        true
    }
}

impl Eq for Touched {}

impl Touched {
    fn key(&mut self, key: &str) {
        if self.all {
            return;
        }
        if self.keys.len() >= TOUCHED_MAX {
            self.any();
            return;
        }
        self.keys.push(key.to_string());
    }

    fn any(&mut self) {
        self.all = true;
        self.keys = Vec::new();
    }
}

/// What the KV writes since the last look may have moved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvChanges {
    /// The index of these keys, and of the prefixes above them.
    Keys(Vec<String>),
    /// Any key's or prefix's index (tombstones reaped, a restore).
    All,
}

/// Maximum lock-delay Consul applies (`structs.MaxLockDelay`).
pub const MAX_LOCK_DELAY_MS: u64 = 60_000;

impl KvStore {
    // ----- reads -----

    /// The entry for `key`, if present.
    pub fn get(&self, key: &str) -> Option<&KvEntry> {
        self.entries.get(key)
    }

    /// Entries whose key starts with `prefix` (bytewise, no implicit `/`), sorted.
    pub fn list(&self, prefix: &str) -> Vec<&KvEntry> {
        self.under(prefix).map(|(_, e)| e).collect()
    }

    /// Key names under `prefix`, rolled up after the first `separator` that
    /// follows the prefix (deduplicated, sorted), like `?keys&separator=`.
    pub fn keys(&self, prefix: &str, separator: Option<&str>) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for (key, _) in self.under(prefix) {
            let name = match separator.filter(|s| !s.is_empty()) {
                Some(sep) => match key[prefix.len()..].find(sep) {
                    Some(at) => &key[..prefix.len() + at + sep.len()],
                    None => key.as_str(),
                },
                None => key.as_str(),
            };
            if out.last().map(String::as_str) != Some(name) {
                out.push(name.to_string());
            }
        }
        out
    }

    /// Blocking index of a single-key read (never 0).
    pub fn key_index(&self, key: &str) -> u64 {
        let idx = match self.entries.get(key) {
            Some(e) => e.modify_index,
            None => self
                .tombstones
                .get(key)
                .copied()
                .unwrap_or(0)
                .max(self.reap_floor),
        };
        idx.max(1)
    }

    /// Blocking index of a `recurse`/`keys` read under `prefix` (never 0).
    pub fn prefix_index(&self, prefix: &str) -> u64 {
        let live = self.under(prefix).map(|(_, e)| e.modify_index).max();
        let dead = self
            .tombstones
            .range::<str, _>((Bound::Included(prefix), Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(_, i)| *i)
            .max();
        live.unwrap_or(0)
            .max(dead.unwrap_or(0))
            .max(self.reap_floor)
            .max(1)
    }

    /// Highest index of any KV write (never 0).
    pub fn table_index(&self) -> u64 {
        self.table_index.max(1)
    }

    /// Number of tombstones awaiting reaping.
    pub fn tombstone_count(&self) -> usize {
        self.tombstones.len()
    }

    /// Until when (ms) `acquire` on `key` is refused, if a lock-delay is active at `now_ms`.
    pub fn lock_delay_until(&self, key: &str, now_ms: u64) -> Option<u64> {
        self.lock_delays.get(key).copied().filter(|u| *u > now_ms)
    }

    /// Keys currently locked by `session`.
    pub fn held_by(&self, session: &str) -> Vec<String> {
        self.entries
            .values()
            .filter(|e| e.session.as_deref() == Some(session))
            .map(|e| e.key.clone())
            .collect()
    }

    fn under<'a, 'p>(
        &'a self,
        prefix: &'p str,
    ) -> impl Iterator<Item = (&'a String, &'a KvEntry)> + use<'a, 'p> {
        self.entries
            .range::<str, _>((Bound::Included(prefix), Bound::Unbounded))
            .take_while(move |(k, _)| k.starts_with(prefix))
    }

    // ----- writes -----

    /// Write an entry, keeping CreateIndex; a write identical to the stored
    /// entry changes nothing (newer Consul: fewer blocking-query wakeups).
    fn put(
        &mut self,
        idx: u64,
        key: &str,
        value: Vec<u8>,
        flags: u64,
        session: Option<String>,
        lock_index: u64,
    ) -> KvEntry {
        if let Some(e) = self.entries.get(key) {
            if e.value == value
                && e.flags == flags
                && e.session == session
                && e.lock_index == lock_index
            {
                return e.clone();
            }
        }
        let create_index = self.entries.get(key).map_or(idx, |e| e.create_index);
        let entry = KvEntry {
            key: key.to_string(),
            value,
            flags,
            session,
            create_index,
            modify_index: idx,
            lock_index,
        };
        // The live entry's ModifyIndex now exceeds the tombstone's, so the
        // tombstone can go without lowering any index.
        self.tombstones.remove(key);
        self.entries.insert(key.to_string(), entry.clone());
        self.touched.key(key);
        self.table_index = self.table_index.max(idx);
        entry
    }

    /// Plain PUT: value and flags replaced; Session and LockIndex kept.
    pub fn set(&mut self, idx: u64, key: &str, value: Vec<u8>, flags: u64) -> KvEntry {
        let (session, lock_index) = self
            .entries
            .get(key)
            .map_or((None, 0), |e| (e.session.clone(), e.lock_index));
        self.put(idx, key, value, flags, session, lock_index)
    }

    /// `?cas=N`: N = 0 creates only if absent; otherwise writes only if the
    /// key's ModifyIndex is N.
    pub fn cas(
        &mut self,
        idx: u64,
        key: &str,
        value: Vec<u8>,
        flags: u64,
        cas: u64,
    ) -> Option<KvEntry> {
        let ok = match (self.entries.get(key), cas) {
            (None, 0) => true,
            (Some(_), 0) | (None, _) => false,
            (Some(e), n) => e.modify_index == n,
        };
        ok.then(|| self.set(idx, key, value, flags))
    }

    /// `?acquire=<session>`. Errors: empty session (`missing session`), unknown
    /// session (`invalid session "<id>"`). `Ok(None)` = refused (held by another
    /// session, or under lock-delay at `now_ms`).
    #[allow(clippy::too_many_arguments)]
    pub fn acquire(
        &mut self,
        idx: u64,
        now_ms: u64,
        key: &str,
        value: Vec<u8>,
        flags: u64,
        session: &str,
        sessions: &SessionStore,
    ) -> Result<Option<KvEntry>, StateError> {
        if session.is_empty() {
            return Err(StateError::MissingSession);
        }
        if !sessions.contains(session) {
            return Err(StateError::InvalidSession(session.to_string()));
        }
        if self.lock_delay_until(key, now_ms).is_some() {
            return Ok(None);
        }
        Ok(self.lock(idx, key, value, flags, session))
    }

    /// The acquire itself, after session and lock-delay checks.
    fn lock(
        &mut self,
        idx: u64,
        key: &str,
        value: Vec<u8>,
        flags: u64,
        session: &str,
    ) -> Option<KvEntry> {
        let lock_index = match self.entries.get(key) {
            // The holder re-acquires: value updated, LockIndex unchanged.
            Some(e) if e.session.as_deref() == Some(session) => e.lock_index,
            Some(e) if e.session.is_some() => return None,
            Some(e) => e.lock_index + 1,
            None => 1,
        };
        Some(self.put(
            idx,
            key,
            value,
            flags,
            Some(session.to_string()),
            lock_index,
        ))
    }

    /// `?release=<session>`: only the holder releases; value and flags are
    /// written, Session cleared, LockIndex kept. No lock-delay.
    pub fn release(
        &mut self,
        idx: u64,
        key: &str,
        value: Vec<u8>,
        flags: u64,
        session: &str,
    ) -> Result<Option<KvEntry>, StateError> {
        if session.is_empty() {
            return Err(StateError::MissingSession);
        }
        let lock_index = match self.entries.get(key) {
            Some(e) if e.session.as_deref() == Some(session) => e.lock_index,
            _ => return Ok(None),
        };
        Ok(Some(self.put(idx, key, value, flags, None, lock_index)))
    }

    /// What the writes since the last call may have moved (see
    /// [`KvChanges`]).
    pub fn take_changes(&mut self) -> KvChanges {
        let t = std::mem::take(&mut self.touched);
        if t.all {
            KvChanges::All
        } else {
            KvChanges::Keys(t.keys)
        }
    }

    /// Mark every key's index as possibly moved (a restore).
    pub fn touch_all(&mut self) {
        self.touched.any();
    }

    /// Plain DELETE: tombstone and remove; deleting an absent key changes nothing.
    pub fn delete(&mut self, idx: u64, key: &str) {
        if self.entries.remove(key).is_some() {
            self.tombstones.insert(key.to_string(), idx);
            self.touched.key(key);
            self.table_index = self.table_index.max(idx);
        }
    }

    /// `DELETE ?cas=N`: deletes only if ModifyIndex is N; an absent key is `true`
    /// (Consul's kvsDeleteCASTxn) and changes nothing.
    pub fn delete_cas(&mut self, idx: u64, key: &str, cas: u64) -> bool {
        match self.entries.get(key) {
            None => true,
            Some(e) if e.modify_index != cas => false,
            Some(_) => {
                self.delete(idx, key);
                true
            }
        }
    }

    /// `DELETE ?recurse`: every key under the prefix gets its own tombstone.
    pub fn delete_tree(&mut self, idx: u64, prefix: &str) {
        let keys: Vec<String> = self.under(prefix).map(|(k, _)| k.clone()).collect();
        for key in keys {
            self.delete(idx, &key);
        }
    }

    /// Drop tombstones at or below `up_to` and raise the reap floor (module doc).
    pub fn reap(&mut self, up_to: u64) {
        let up_to = up_to.min(self.table_index);
        self.tombstones.retain(|_, i| *i > up_to);
        self.reap_floor = self.reap_floor.max(up_to);
        self.touched.any();
    }

    /// Session invalidation for one held key: delete it (`delete` behaviour)
    /// or clear its Session (`release`), then start its lock-delay.
    pub fn invalidate_lock(
        &mut self,
        idx: u64,
        now_ms: u64,
        key: &str,
        delete: bool,
        lock_delay_ms: u64,
    ) {
        if delete {
            self.delete(idx, key);
        } else if let Some(e) = self.entries.get(key).cloned() {
            self.put(idx, key, e.value, e.flags, None, e.lock_index);
        }
        let delay = lock_delay_ms.min(MAX_LOCK_DELAY_MS);
        if delay > 0 {
            self.lock_delays.insert(key.to_string(), now_ms + delay);
        }
    }

    /// Forget lock-delays that have passed (keeps snapshots small).
    pub fn prune_lock_delays(&mut self, now_ms: u64) {
        self.lock_delays.retain(|_, until| *until > now_ms);
    }

    // ----- txn -----

    /// Apply a txn atomically at `idx`: all ops apply or none (Consul's
    /// TxnRW). Pre-checks (missing key, lock-delay) fail the whole txn before
    /// anything runs; then every op runs and every failure is reported.
    pub fn txn(
        &mut self,
        idx: u64,
        now_ms: u64,
        ops: Vec<TxnOp>,
        sessions: &SessionStore,
    ) -> TxnOutcome {
        let mut errors = Vec::new();
        for (op_index, op) in ops.iter().enumerate() {
            if let Err(what) = self.txn_check(op, now_ms) {
                errors.push(TxnError { op_index, what });
            }
        }
        if !errors.is_empty() {
            return TxnOutcome::RolledBack(errors);
        }
        // Rollback by restoring a copy: simple and obviously atomic; the KV
        // tables this server holds (cluster config, leader keys) are small.
        let before = if ops.iter().all(TxnOp::is_read) {
            None
        } else {
            Some(self.clone())
        };
        let mut results = Vec::new();
        for (i, op) in ops.into_iter().enumerate() {
            match self.txn_write_one(idx, op, sessions) {
                Ok(mut r) => results.append(&mut r),
                Err(what) => errors.push(TxnError { op_index: i, what }),
            }
        }
        if errors.is_empty() {
            TxnOutcome::Committed(results)
        } else {
            if let Some(before) = before {
                *self = before;
            }
            TxnOutcome::RolledBack(errors)
        }
    }

    /// The checks made before any op of a txn runs: a key is given, and a
    /// lock is not refused by a lock-delay.
    pub(super) fn txn_check(&self, op: &TxnOp, now_ms: u64) -> Result<(), String> {
        if op.key().is_empty() && !matches!(op, TxnOp::DeleteTree { .. }) {
            return Err("Must provide key".to_string());
        }
        if let TxnOp::Lock { key, .. } = op {
            if self.lock_delay_until(key, now_ms).is_some() {
                return Err(format!(
                    "failed to lock key {} due to lock delay",
                    go_quote(key)
                ));
            }
        }
        Ok(())
    }

    /// Run a txn made only of read verbs without the log; `None` if any op writes.
    pub fn txn_read(&self, ops: &[TxnOp]) -> Option<TxnOutcome> {
        if !ops.iter().all(TxnOp::is_read) {
            return None;
        }
        let mut results = Vec::new();
        let mut errors = Vec::new();
        for (i, op) in ops.iter().enumerate() {
            match self.txn_read_one(op) {
                Ok(mut r) => results.append(&mut r),
                Err(what) => errors.push(TxnError { op_index: i, what }),
            }
        }
        Some(if errors.is_empty() {
            TxnOutcome::Committed(results)
        } else {
            TxnOutcome::RolledBack(errors)
        })
    }

    /// One read verb's entries (values only for `get` and `get-tree`).
    pub(super) fn txn_read_one(&self, op: &TxnOp) -> Result<Vec<KvEntry>, String> {
        let strip = |e: &KvEntry| KvEntry {
            value: Vec::new(),
            ..e.clone()
        };
        match op {
            TxnOp::Get { key } => self
                .entries
                .get(key)
                .map(|e| vec![e.clone()])
                .ok_or_else(|| format!("key {} doesn't exist", go_quote(key))),
            TxnOp::GetTree { prefix } => Ok(self.list(prefix).into_iter().cloned().collect()),
            TxnOp::CheckIndex { key, index } => match self.entries.get(key) {
                None => Err(format!(
                    "failed to check index, key {} doesn't exist",
                    go_quote(key)
                )),
                Some(e) if e.modify_index != *index => Err(format!(
                    "failed index check for key {}, current modify index {} != {}",
                    go_quote(key),
                    e.modify_index,
                    index
                )),
                Some(e) => Ok(vec![strip(e)]),
            },
            TxnOp::CheckSession { key, session } => match self.entries.get(key) {
                None => Err(format!(
                    "failed to check session, key {} doesn't exist",
                    go_quote(key)
                )),
                Some(e) if e.session.as_deref().unwrap_or("") != session => Err(format!(
                    "failed session check for key {}, current session {} != {}",
                    go_quote(key),
                    go_quote(e.session.as_deref().unwrap_or("")),
                    go_quote(session)
                )),
                Some(e) => Ok(vec![strip(e)]),
            },
            TxnOp::CheckNotExists { key } => match self.entries.get(key) {
                Some(_) => Err(format!("key {} exists", go_quote(key))),
                None => Ok(Vec::new()),
            },
            _ => Ok(Vec::new()),
        }
    }

    /// One op of a txn being applied (entries of write verbs without values).
    pub(super) fn txn_write_one(
        &mut self,
        idx: u64,
        op: TxnOp,
        sessions: &SessionStore,
    ) -> Result<Vec<KvEntry>, String> {
        let strip = |mut e: KvEntry| {
            e.value = Vec::new();
            vec![e]
        };
        match op {
            TxnOp::Set { key, value, flags } => Ok(strip(self.set(idx, &key, value, flags))),
            TxnOp::Cas {
                key,
                value,
                flags,
                index,
            } => match self.cas(idx, &key, value, flags, index) {
                Some(e) => Ok(strip(e)),
                None => Err(format!(
                    "failed to set key {}, index is stale",
                    go_quote(&key)
                )),
            },
            TxnOp::Lock {
                key,
                value,
                flags,
                session,
            } => {
                if session.is_empty() {
                    return Err(StateError::MissingSession.to_string());
                }
                if !sessions.contains(&session) {
                    return Err(StateError::InvalidSession(session).to_string());
                }
                match self.lock(idx, &key, value, flags, &session) {
                    Some(e) => Ok(strip(e)),
                    None => Err(format!(
                        "failed to lock key {}, lock is already held",
                        go_quote(&key)
                    )),
                }
            }
            TxnOp::Unlock {
                key,
                value,
                flags,
                session,
            } => match self.release(idx, &key, value, flags, &session) {
                Ok(Some(e)) => Ok(strip(e)),
                Ok(None) => Err(format!(
                    "failed to unlock key {}, lock isn't held, or is held by another session",
                    go_quote(&key)
                )),
                Err(e) => Err(e.to_string()),
            },
            TxnOp::Delete { key } => {
                self.delete(idx, &key);
                Ok(Vec::new())
            }
            TxnOp::DeleteTree { prefix } => {
                self.delete_tree(idx, &prefix);
                Ok(Vec::new())
            }
            TxnOp::DeleteCas { key, index } => {
                if self.delete_cas(idx, &key, index) {
                    Ok(Vec::new())
                } else {
                    Err(format!(
                        "failed to delete key {}, index is stale",
                        go_quote(&key)
                    ))
                }
            }
            read => self.txn_read_one(&read),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::session::{SessionBehavior, SessionRequest};
    use super::*;

    fn v(s: &str) -> Vec<u8> {
        s.as_bytes().to_vec()
    }

    fn sessions(ids: &[&str]) -> SessionStore {
        let mut store = SessionStore::default();
        for id in ids {
            store
                .insert(
                    1,
                    0,
                    SessionRequest {
                        id: id.to_string(),
                        name: String::new(),
                        node: "n1".to_string(),
                        node_checks: Some(Vec::new()),
                        service_checks: Vec::new(),
                        lock_delay_ns: None,
                        behavior: SessionBehavior::Release,
                        ttl: String::new(),
                        ttl_ns: 0,
                    },
                )
                .unwrap();
        }
        store
    }

    #[test]
    fn values_are_base64_and_arrays_of_earlier_builds_still_load() {
        let e = KvEntry {
            key: "k".into(),
            value: b"hi".to_vec(),
            flags: 0,
            session: None,
            create_index: 1,
            modify_index: 1,
            lock_index: 0,
        };
        let json = serde_json::to_value(&e).unwrap();
        assert_eq!(json["value"], "aGk=");
        let mut old = json.clone();
        old["value"] = serde_json::json!([104, 105]);
        assert_eq!(serde_json::from_value::<KvEntry>(old).unwrap(), e);
        let mut bad = json;
        bad["value"] = serde_json::json!([104, 300]);
        assert!(serde_json::from_value::<KvEntry>(bad).is_err());
    }

    #[test]
    fn set_keeps_create_index_and_resets_flags() {
        let mut kv = KvStore::default();
        kv.set(5, "a", v("1"), 42);
        let e = kv.set(7, "a", v("2"), 0);
        assert_eq!((e.create_index, e.modify_index, e.flags), (5, 7, 0));
        assert_eq!(kv.key_index("a"), 7);
    }

    #[test]
    fn identical_set_is_a_no_op() {
        let mut kv = KvStore::default();
        kv.set(5, "a", v("1"), 3);
        let e = kv.set(9, "a", v("1"), 3);
        assert_eq!(e.modify_index, 5);
        assert_eq!(kv.key_index("a"), 5);
        assert_eq!(kv.table_index(), 5);
    }

    #[test]
    fn cas_zero_creates_only_and_cas_n_needs_modify_index() {
        let mut kv = KvStore::default();
        assert!(kv.cas(2, "k", v("a"), 0, 0).is_some());
        assert!(
            kv.cas(3, "k", v("b"), 0, 0).is_none(),
            "cas=0 on existing key"
        );
        assert!(kv.cas(4, "k", v("b"), 0, 99).is_none(), "stale index");
        assert!(kv.cas(5, "k", v("b"), 0, 2).is_some());
        assert_eq!(kv.get("k").unwrap().value, v("b"));
        assert!(
            kv.cas(6, "missing", v("x"), 0, 5).is_none(),
            "cas=N on absent key"
        );
    }

    #[test]
    fn acquire_by_holder_keeps_lock_index_and_other_session_fails() {
        let s = sessions(&["s1", "s2"]);
        let mut kv = KvStore::default();
        let e = kv
            .acquire(2, 0, "lock", v("a"), 7, "s1", &s)
            .unwrap()
            .unwrap();
        assert_eq!((e.lock_index, e.session.as_deref()), (1, Some("s1")));
        let e = kv
            .acquire(3, 0, "lock", v("b"), 7, "s1", &s)
            .unwrap()
            .unwrap();
        assert_eq!((e.lock_index, e.modify_index), (1, 3), "holder re-acquire");
        assert_eq!(e.value, v("b"));
        assert!(kv
            .acquire(4, 0, "lock", v("c"), 0, "s2", &s)
            .unwrap()
            .is_none());
        assert_eq!(kv.get("lock").unwrap().value, v("b"));
        // A plain PUT keeps the holder.
        kv.set(5, "lock", v("d"), 0);
        assert_eq!(kv.get("lock").unwrap().session.as_deref(), Some("s1"));
        // Release by a non-holder fails, by the holder succeeds without lock bump.
        assert!(kv.release(6, "lock", v("e"), 0, "s2").unwrap().is_none());
        let e = kv.release(7, "lock", v("e"), 0, "s1").unwrap().unwrap();
        assert_eq!((e.session, e.lock_index), (None, 1));
        // A new holder bumps LockIndex.
        let e = kv
            .acquire(8, 0, "lock", v("f"), 0, "s2", &s)
            .unwrap()
            .unwrap();
        assert_eq!(e.lock_index, 2);
    }

    #[test]
    fn acquire_errors_use_consul_text() {
        let s = sessions(&["s1"]);
        let mut kv = KvStore::default();
        assert_eq!(
            kv.acquire(2, 0, "k", v(""), 0, "nope", &s)
                .unwrap_err()
                .to_string(),
            "invalid session \"nope\""
        );
        assert_eq!(
            kv.acquire(2, 0, "k", v(""), 0, "", &s)
                .unwrap_err()
                .to_string(),
            "missing session"
        );
        assert!(kv.get("k").is_none());
    }

    #[test]
    fn lock_delay_blocks_acquire_until_it_passes() {
        let s = sessions(&["s1", "s2"]);
        let mut kv = KvStore::default();
        kv.acquire(2, 1_000, "k", v("a"), 0, "s1", &s)
            .unwrap()
            .unwrap();
        kv.invalidate_lock(3, 1_000, "k", false, 15_000);
        assert_eq!(kv.get("k").unwrap().session, None);
        assert!(kv
            .acquire(4, 15_999, "k", v("b"), 0, "s2", &s)
            .unwrap()
            .is_none());
        assert!(kv
            .acquire(5, 16_000, "k", v("b"), 0, "s2", &s)
            .unwrap()
            .is_some());
        // Lock-delay is capped at 60 s.
        kv.invalidate_lock(6, 20_000, "k", false, 3_600_000);
        assert_eq!(kv.lock_delay_until("k", 20_000), Some(80_000));
    }

    #[test]
    fn delete_behavior_tombstones_the_key() {
        let s = sessions(&["s1"]);
        let mut kv = KvStore::default();
        kv.acquire(2, 0, "svc/leader", v("me"), 0, "s1", &s)
            .unwrap()
            .unwrap();
        kv.invalidate_lock(3, 0, "svc/leader", true, 1);
        assert!(kv.get("svc/leader").is_none());
        assert_eq!(kv.key_index("svc/leader"), 3);
        assert_eq!(kv.prefix_index("svc/"), 3);
    }

    #[test]
    fn delete_cas_semantics() {
        let mut kv = KvStore::default();
        kv.set(2, "k", v("a"), 0);
        assert!(!kv.delete_cas(3, "k", 1));
        assert!(kv.get("k").is_some());
        assert!(kv.delete_cas(4, "k", 2));
        assert!(kv.get("k").is_none());
        assert!(kv.delete_cas(5, "k", 2), "absent key + cas is true");
        assert_eq!(kv.table_index(), 4, "absent delete changes nothing");
    }

    #[test]
    fn tombstones_keep_prefix_index_from_going_backwards() {
        let mut kv = KvStore::default();
        kv.set(2, "p/a", v("1"), 0);
        kv.set(3, "p/b", v("2"), 0);
        kv.set(4, "q", v("3"), 0);
        assert_eq!(kv.prefix_index("p/"), 3);
        kv.delete(5, "p/b");
        assert_eq!(kv.prefix_index("p/"), 5, "delete raises the prefix index");
        assert_eq!(kv.key_index("p/b"), 5);
        kv.delete_tree(6, "p/");
        assert_eq!(kv.prefix_index("p/"), 6);
        assert!(kv.list("p/").is_empty());
        assert_eq!(kv.prefix_index("q"), 4, "other prefixes unaffected");
        // Recreating a key removes its tombstone; the live index is higher.
        kv.set(7, "p/b", v("x"), 0);
        assert_eq!(kv.tombstone_count(), 1);
        assert_eq!(kv.prefix_index("p/"), 7);
    }

    #[test]
    fn reap_drops_old_tombstones_without_lowering_indexes() {
        let mut kv = KvStore::default();
        kv.set(2, "a/x", v("1"), 0);
        kv.set(3, "b/x", v("1"), 0);
        kv.delete(4, "a/x");
        kv.delete(5, "b/x");
        kv.set(6, "c", v("1"), 0);
        let before = (
            kv.prefix_index("a/"),
            kv.key_index("a/x"),
            kv.prefix_index("b/"),
        );
        kv.reap(4);
        assert_eq!(kv.tombstone_count(), 1, "only the tombstone at 4 is reaped");
        assert!(kv.prefix_index("a/") >= before.0);
        assert!(kv.key_index("a/x") >= before.1);
        assert_eq!(kv.prefix_index("b/"), before.2);
        assert_eq!(
            kv.prefix_index("never/"),
            4,
            "floor applies to every prefix"
        );
        // The floor never exceeds what has been written.
        kv.reap(1_000);
        assert_eq!(kv.prefix_index("never/"), 6);
        assert_eq!(kv.tombstone_count(), 0);
    }

    #[test]
    fn indexes_are_never_zero() {
        let kv = KvStore::default();
        assert_eq!(kv.key_index("x"), 1);
        assert_eq!(kv.prefix_index(""), 1);
        assert_eq!(kv.table_index(), 1);
    }

    #[test]
    fn list_and_keys_with_separator() {
        let mut kv = KvStore::default();
        for (i, k) in ["foo", "foo/a", "foo/b/c", "foo/b/d", "foobar", "g"]
            .iter()
            .enumerate()
        {
            kv.set(i as u64 + 1, k, v("x"), 0);
        }
        let keys: Vec<&str> = kv.list("foo").iter().map(|e| e.key.as_str()).collect();
        assert_eq!(keys, ["foo", "foo/a", "foo/b/c", "foo/b/d", "foobar"]);
        assert_eq!(kv.keys("foo/", Some("/")), ["foo/a", "foo/b/"]);
        assert_eq!(kv.keys("", Some("/")), ["foo", "foo/", "foobar", "g"]);
        assert_eq!(kv.keys("foo/b", None), ["foo/b/c", "foo/b/d"]);
        assert_eq!(kv.list("").len(), 6);
    }

    #[test]
    fn txn_is_all_or_nothing_with_consul_errors() {
        let s = sessions(&["s1"]);
        let mut kv = KvStore::default();
        kv.set(2, "a", v("old"), 0);
        let before = kv.clone();
        let out = kv.txn(
            3,
            0,
            vec![
                TxnOp::Set {
                    key: "a".into(),
                    value: v("new"),
                    flags: 0,
                },
                TxnOp::Delete { key: "a".into() },
                TxnOp::Cas {
                    key: "b".into(),
                    value: v("x"),
                    flags: 0,
                    index: 7,
                },
                TxnOp::Get { key: "zz".into() },
            ],
            &s,
        );
        assert_eq!(
            out,
            TxnOutcome::RolledBack(vec![
                TxnError {
                    op_index: 2,
                    what: "failed to set key \"b\", index is stale".into()
                },
                TxnError {
                    op_index: 3,
                    what: "key \"zz\" doesn't exist".into()
                },
            ])
        );
        assert_eq!(kv, before, "nothing applied");

        let out = kv.txn(
            4,
            0,
            vec![
                TxnOp::Set {
                    key: "a".into(),
                    value: v("new"),
                    flags: 1,
                },
                TxnOp::Lock {
                    key: "l".into(),
                    value: v("me"),
                    flags: 0,
                    session: "s1".into(),
                },
                TxnOp::CheckSession {
                    key: "l".into(),
                    session: "s1".into(),
                },
                TxnOp::Get { key: "a".into() },
            ],
            &s,
        );
        let TxnOutcome::Committed(results) = out else {
            panic!("txn failed: {out:?}")
        };
        assert_eq!(results.len(), 4);
        assert!(results[0].value.is_empty(), "write results carry no value");
        assert_eq!(results[0].modify_index, 4);
        assert_eq!(results[3].value, v("new"), "get carries the value");
        assert_eq!(kv.get("l").unwrap().session.as_deref(), Some("s1"));
    }

    #[test]
    fn txn_prechecks_missing_key_and_lock_delay() {
        let s = sessions(&["s1"]);
        let mut kv = KvStore::default();
        kv.invalidate_lock(2, 0, "l", false, 10_000);
        let out = kv.txn(
            3,
            5_000,
            vec![
                TxnOp::Set {
                    key: "ok".into(),
                    value: v("1"),
                    flags: 0,
                },
                TxnOp::Lock {
                    key: "l".into(),
                    value: v(""),
                    flags: 0,
                    session: "s1".into(),
                },
                TxnOp::Delete { key: String::new() },
            ],
            &s,
        );
        assert_eq!(
            out,
            TxnOutcome::RolledBack(vec![
                TxnError {
                    op_index: 1,
                    what: "failed to lock key \"l\" due to lock delay".into()
                },
                TxnError {
                    op_index: 2,
                    what: "Must provide key".into()
                },
            ])
        );
        assert!(kv.get("ok").is_none());
    }

    #[test]
    fn writes_record_their_keys_and_reaps_record_everything() {
        let mut kv = KvStore::default();
        kv.set(1, "a", b"1".to_vec(), 0);
        kv.set(2, "b/c", b"2".to_vec(), 0);
        kv.delete(3, "a");
        kv.delete(4, "absent");
        assert_eq!(
            kv.take_changes(),
            KvChanges::Keys(vec!["a".into(), "b/c".into(), "a".into()])
        );
        assert_eq!(kv.take_changes(), KvChanges::Keys(Vec::new()));
        kv.reap(3);
        assert_eq!(kv.take_changes(), KvChanges::All);
        for i in 0..=TOUCHED_MAX as u64 {
            kv.set(10 + i, &format!("k{i}"), b"v".to_vec(), 0);
        }
        assert_eq!(kv.take_changes(), KvChanges::All);
        // Bookkeeping, not state: two stores differing only in it are equal.
        let mut other = kv.clone();
        other.set(1_000_000, "z", b"v".to_vec(), 0);
        other.delete(1_000_001, "z");
        kv.set(1_000_000, "z", b"v".to_vec(), 0);
        kv.delete(1_000_001, "z");
        let _ = kv.take_changes();
        assert_eq!(kv, other);
    }

    #[test]
    fn txn_check_errors_and_read_only_path() {
        let mut kv = KvStore::default();
        kv.set(2, "a", v("1"), 0);
        let ops = [
            TxnOp::CheckIndex {
                key: "a".into(),
                index: 9,
            },
            TxnOp::CheckNotExists { key: "a".into() },
            TxnOp::CheckSession {
                key: "a".into(),
                session: "s".into(),
            },
        ];
        let Some(TxnOutcome::RolledBack(errs)) = kv.txn_read(&ops) else {
            panic!("expected errors")
        };
        let whats: Vec<&str> = errs.iter().map(|e| e.what.as_str()).collect();
        assert_eq!(
            whats,
            [
                "failed index check for key \"a\", current modify index 2 != 9",
                "key \"a\" exists",
                "failed session check for key \"a\", current session \"\" != \"s\"",
            ]
        );
        assert!(kv.txn_read(&[TxnOp::Delete { key: "a".into() }]).is_none());
    }
}

/// KV values in the log, snapshots and forwarded writes as base64 strings:
/// a quarter of the size of serde's default array of numbers, and far
/// quicker to encode and decode for the 512 KiB values Consul allows. The
/// array of numbers of earlier builds is still read, so their logs,
/// snapshots and snapshot files load.
pub(crate) mod b64 {
    use serde::de::{Error, SeqAccess, Visitor};
    use serde::{Deserializer, Serializer};

    use crate::discovery::api::gofmt::{base64_decode, base64_encode};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64_encode(v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        d.deserialize_any(Value)
    }

    /// A base64 string, or an earlier build's array of byte numbers.
    struct Value;

    impl<'de> Visitor<'de> for Value {
        type Value = Vec<u8>;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a base64 string or an array of bytes")
        }

        fn visit_str<E: Error>(self, text: &str) -> Result<Vec<u8>, E> {
            base64_decode(text).map_err(E::custom)
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
            let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0));
            while let Some(b) = seq.next_element::<u8>()? {
                out.push(b);
            }
            Ok(out)
        }
    }
}
