//! The replica and the parked queries: the state with what raft knows of
//! it, shared with the raft state machine under one lock, and the waiter
//! table of blocking queries.
//!
//! Blocking queries cost memory, not threads: each parked query is one entry
//! in a waiter table holding the index it last saw and a *probe* (a function
//! of the state returning the query's index, e.g. one key's ModifyIndex).
//! After every apply the state machine runs each probe once under the
//! replica's read lock and wakes only the waiters whose probe moved. A waiter
//! registers while it holds the read lock it computed its index under, so an
//! apply either happened before it looked or runs its probe afterwards: no
//! lost wakeups.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use super::state::State;
use super::{raft, Server};

/// The replica and the parked queries, shared with the raft state machine.
pub(crate) struct Shared {
    replica: RwLock<Replica>,
    waiters: Mutex<Waiters>,
    /// The last applied index, for the node's own tasks (session timers).
    applied: tokio::sync::watch::Sender<u64>,
}

/// The state and what raft needs to know about it.
pub(crate) struct Replica {
    pub state: State,
    pub last_log: Option<raft::LogId>,
    pub membership: raft::Membership,
}

impl Shared {
    pub(super) fn new() -> Shared {
        let (applied, _) = tokio::sync::watch::channel(0);
        Shared {
            replica: RwLock::new(Replica {
                state: State::new(),
                last_log: None,
                membership: raft::Membership::default(),
            }),
            waiters: Mutex::new(Waiters::default()),
            applied,
        }
    }

    pub(crate) fn replica(&self) -> RwLockReadGuard<'_, Replica> {
        self.replica.read().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn replica_mut(&self) -> RwLockWriteGuard<'_, Replica> {
        self.replica.write().unwrap_or_else(|p| p.into_inner())
    }

    /// After an apply: wake the parked queries whose index moved, publish
    /// the applied index.
    pub(crate) fn applied(&self) {
        let r = self.replica();
        self.wake(&r.state);
        self.applied.send_replace(r.state.last_applied());
    }

    fn waiters(&self) -> std::sync::MutexGuard<'_, Waiters> {
        self.waiters.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Wake the parked queries whose index moved; called after each apply
    /// under the replica's read lock.
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
}

/// Run a blocking call (an fsync) without stalling other tasks where the
/// runtime allows it (multi-thread); inline on a current-thread runtime.
pub(crate) fn blocking<R>(f: impl FnOnce() -> R) -> R {
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
        self.server.inner.shared.waiters().parked.remove(&self.id);
    }
}

impl Server {
    /// Run `f` on the current state.
    pub fn read<R>(&self, f: impl FnOnce(&State) -> R) -> R {
        let r = self.inner.shared.replica();
        f(&r.state)
    }

    pub fn last_index(&self) -> u64 {
        *self.inner.shared.applied.borrow()
    }

    /// Every applied index, for the node's own tasks (e.g. re-arming the
    /// session timer after writes). Blocking queries use [`Server::block_on`].
    pub fn applied(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.shared.applied.subscribe()
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

    fn waiters(&self) -> std::sync::MutexGuard<'_, Waiters> {
        self.inner.shared.waiters()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::discovery::server::state::Command;
    use crate::discovery::server::{now_ms, ServerConfig};

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
