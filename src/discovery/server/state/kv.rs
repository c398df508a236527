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
use super::{go_quote, StateError};

/// One KV pair as Consul's `KVPair` carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvEntry {
    pub key: String,
    /// Empty = nil (`null` on the wire).
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
        value: Vec<u8>,
        flags: u64,
    },
    Cas {
        key: String,
        value: Vec<u8>,
        flags: u64,
        index: u64,
    },
    Lock {
        key: String,
        value: Vec<u8>,
        flags: u64,
        session: String,
    },
    Unlock {
        key: String,
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

    /// Plain DELETE: tombstone and remove; deleting an absent key changes nothing.
    pub fn delete(&mut self, idx: u64, key: &str) {
        if self.entries.remove(key).is_some() {
            self.tombstones.insert(key.to_string(), idx);
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
        for (i, op) in ops.iter().enumerate() {
            if op.key().is_empty() && !matches!(op, TxnOp::DeleteTree { .. }) {
                errors.push(TxnError {
                    op_index: i,
                    what: "Must provide key".to_string(),
                });
            } else if let TxnOp::Lock { key, .. } = op {
                if self.lock_delay_until(key, now_ms).is_some() {
                    errors.push(TxnError {
                        op_index: i,
                        what: format!("failed to lock key {} due to lock delay", go_quote(key)),
                    });
                }
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
            match self.txn_op(idx, op, sessions) {
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

    /// Run a txn made only of read verbs without the log; `None` if any op writes.
    pub fn txn_read(&self, ops: &[TxnOp]) -> Option<TxnOutcome> {
        if !ops.iter().all(TxnOp::is_read) {
            return None;
        }
        let mut results = Vec::new();
        let mut errors = Vec::new();
        for (i, op) in ops.iter().enumerate() {
            match self.txn_read_op(op) {
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

    fn txn_read_op(&self, op: &TxnOp) -> Result<Vec<KvEntry>, String> {
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

    fn txn_op(
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
            read => self.txn_read_op(&read),
        }
    }
}
