//! The replica and the parked queries: the state with what raft knows of
//! it, shared with the raft state machine under one lock, and the waiter
//! table of blocking queries.
//!
//! Blocking queries cost memory, not threads. Parked queries are grouped by
//! their *key* (endpoint, target and parameters: the same key answers the
//! same at the same index); a group holds a *probe* (a function of the
//! state returning the query's index, e.g. one key's ModifyIndex), the
//! function that renders its answer, and its waiters, each with the index
//! it last saw. A waiter registers while it holds the read lock it computed
//! its index under, so an apply either happened before it looked or is
//! followed by a wake pass that sees it: no lost wakeups.
//!
//! Waking is off the write's path: an apply only records the KV keys it
//! wrote and nudges the waker task, and the write is answered at once. A
//! wake pass probes only the groups a write can have moved: those watching
//! a written key or a prefix above one, and those watching anything else
//! (the catalog, sessions); every group after a reap or a restore. Probes
//! run once per group under the replica's read lock; a group whose index
//! moved renders its answer once, and that one answer goes to every waiter
//! of the group (N waiters cost one computation and N sends, made after the
//! locks are released). Applies that land while a pass runs are taken by
//! the next pass, so a burst of writes costs a few passes, not one each.

use std::any::{Any, TypeId};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard, Weak};
use std::time::Duration;

use tokio::sync::{oneshot, Notify};

use super::state::kv::KvChanges;
use super::state::State;
use super::{raft, Server};

/// The replica and the parked queries, shared with the raft state machine.
pub(crate) struct Shared {
    replica: RwLock<Replica>,
    waiters: Mutex<Waiters>,
    /// What the applies since the last wake pass wrote.
    pending: Mutex<Pending>,
    /// Nudged after every apply; the waker task wakes the moved queries.
    wake: Arc<Notify>,
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
    /// The shared replica, with its waker task on the current runtime; the
    /// task ends with the replica.
    pub(super) fn new() -> Arc<Shared> {
        let (applied, _) = tokio::sync::watch::channel(0);
        let shared = Arc::new(Shared {
            replica: RwLock::new(Replica {
                state: State::new(),
                last_log: None,
                membership: raft::Membership::default(),
            }),
            waiters: Mutex::new(Waiters::default()),
            pending: Mutex::new(Pending::default()),
            wake: Arc::new(Notify::new()),
            applied,
        });
        tokio::spawn(waker(Arc::downgrade(&shared), shared.wake.clone()));
        shared
    }

    pub(crate) fn replica(&self) -> RwLockReadGuard<'_, Replica> {
        self.replica.read().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn replica_mut(&self) -> RwLockWriteGuard<'_, Replica> {
        self.replica.write().unwrap_or_else(|p| p.into_inner())
    }

    /// After an apply that made `changes` (taken from the state under the
    /// write lock, see [`State::take_kv_changes`]): publish the applied
    /// index and nudge the waker (the wake itself is not on the write's
    /// path). The changes are recorded before the nudge, so the pass it
    /// causes sees them.
    pub(crate) fn applied(&self, changes: KvChanges) {
        {
            let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            match changes {
                KvChanges::All => pending.all = true,
                KvChanges::Keys(keys) if !pending.all => pending.keys.extend(keys),
                KvChanges::Keys(_) => {}
            }
        }
        let last = self.replica().state.last_applied();
        self.applied.send_replace(last);
        self.wake.notify_one();
    }

    fn waiters(&self) -> std::sync::MutexGuard<'_, Waiters> {
        self.waiters.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// One wake pass over the groups the pending changes can have moved
    /// (module doc): each one's probe once, one answer per group whose
    /// index moved; returns the waiters to send it to (after both locks are
    /// released).
    fn wake_moved(&self) -> Vec<Woken> {
        let pending = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|p| p.into_inner()));
        let mut woken = Vec::new();
        let r = self.replica();
        let mut waiters = self.waiters();
        for key in waiters.candidates(&pending) {
            let Some(g) = waiters.groups.get_mut(&key) else {
                continue;
            };
            let index = (g.probe)(&r.state);
            if g.waiters.iter().all(|w| w.seen == index) {
                continue;
            }
            let answer = (g.render)(&r.state);
            let before = g.waiters.len();
            g.waiters.retain_mut(|w| {
                if w.seen == index {
                    return true;
                }
                if let Some(tx) = w.wake.take() {
                    woken.push((tx, answer.clone(), index));
                }
                false
            });
            let (left, empty) = (before - g.waiters.len(), g.waiters.is_empty());
            waiters.parked -= left;
            if empty {
                waiters.remove_group(&key);
            }
        }
        woken
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        // Let the waker task see that the replica is gone.
        self.wake.notify_one();
    }
}

/// How many woken queries the waker hands their answer before it lets
/// other tasks run: each woken query is a connection task that writes its
/// answer, and the write that caused the wake must not queue behind a
/// thousand of them.
const WAKE_SLICE: usize = 32;

/// The waker task: a wake pass after every nudge, until the replica is
/// dropped.
async fn waker(shared: Weak<Shared>, wake: Arc<Notify>) {
    loop {
        wake.notified().await;
        let Some(woken) = shared.upgrade().map(|s| s.wake_moved()) else {
            return;
        };
        for (i, (tx, answer, index)) in woken.into_iter().enumerate() {
            if i > 0 && i % WAKE_SLICE == 0 {
                tokio::task::yield_now().await;
            }
            // The receiver may be gone already (timed out); nothing to do.
            let _ = tx.send((answer, index));
        }
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
/// A query's answer, rendered once per wake and shared by its waiters.
type Answer = Arc<dyn Any + Send + Sync>;
type Render = Box<dyn Fn(&State) -> Answer + Send + Sync>;
/// A woken query: where its answer goes, the answer, and its index.
type Woken = (oneshot::Sender<(Answer, u64)>, Answer, u64);

/// A group's key: the query's key and the type of its answer, so that two
/// endpoints can never share an answer of another shape.
type GroupKey = (TypeId, Arc<str>);

/// What a blocking query's index depends on, so that a wake pass probes
/// only the queries a write can have moved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Topic {
    /// One KV key's index (`kv_key_index`).
    KvKey(String),
    /// A KV prefix's index (`kv_prefix_index`).
    KvPrefix(String),
    /// Anything else (catalog, health, sessions): probed on every pass.
    Other,
}

/// The KV keys written since the last wake pass.
#[derive(Default)]
struct Pending {
    keys: BTreeSet<String>,
    /// Any key may have moved (a reap, a restore, a snapshot installed).
    all: bool,
}

#[derive(Default)]
struct Waiters {
    next_id: u64,
    groups: HashMap<GroupKey, Group>,
    /// The groups of `Topic::KvKey`, by key.
    by_kv_key: HashMap<String, Vec<GroupKey>>,
    /// The other groups (prefixes and everything else).
    broad: HashSet<GroupKey>,
    /// Waiters over all groups.
    parked: usize,
}

impl Waiters {
    /// The groups `pending` can have moved.
    fn candidates(&self, pending: &Pending) -> Vec<GroupKey> {
        if pending.all {
            return self.groups.keys().cloned().collect();
        }
        let mut out: Vec<GroupKey> = pending
            .keys
            .iter()
            .filter_map(|k| self.by_kv_key.get(k))
            .flatten()
            .cloned()
            .collect();
        for key in &self.broad {
            let moved = match self.groups.get(key).map(|g| &g.topic) {
                Some(Topic::KvPrefix(p)) => pending
                    .keys
                    .range::<str, _>((
                        std::ops::Bound::Included(p.as_str()),
                        std::ops::Bound::Unbounded,
                    ))
                    .next()
                    .is_some_and(|k| k.starts_with(p.as_str())),
                _ => true,
            };
            if moved {
                out.push(key.clone());
            }
        }
        out
    }

    fn add_group(&mut self, key: GroupKey, group: Group) {
        match &group.topic {
            Topic::KvKey(k) => self
                .by_kv_key
                .entry(k.clone())
                .or_default()
                .push(key.clone()),
            _ => {
                self.broad.insert(key.clone());
            }
        }
        self.groups.insert(key, group);
    }

    fn remove_group(&mut self, key: &GroupKey) {
        let Some(group) = self.groups.remove(key) else {
            return;
        };
        match group.topic {
            Topic::KvKey(k) => {
                if let Some(keys) = self.by_kv_key.get_mut(&k) {
                    keys.retain(|g| g != key);
                    if keys.is_empty() {
                        self.by_kv_key.remove(&k);
                    }
                }
            }
            _ => {
                self.broad.remove(key);
            }
        }
    }
}

/// The parked queries of one key, with the topic, probe and rendering of
/// the waiter that parked first (every waiter of a key would compute the
/// same).
struct Group {
    topic: Topic,
    probe: Probe,
    render: Render,
    waiters: Vec<Waiter>,
}

struct Waiter {
    id: u64,
    /// The probe's value when the query parked.
    seen: u64,
    wake: Option<oneshot::Sender<(Answer, u64)>>,
}

/// Removes a parked query that stopped waiting (timeout, client gone).
struct Parked<'a> {
    server: &'a Server,
    key: &'a GroupKey,
    id: u64,
}

impl Drop for Parked<'_> {
    fn drop(&mut self) {
        let mut waiters = self.server.waiters();
        let Some(g) = waiters.groups.get_mut(self.key) else {
            return;
        };
        let at = g.waiters.iter().position(|w| w.id == self.id);
        if let Some(at) = at {
            g.waiters.swap_remove(at);
        }
        let empty = g.waiters.is_empty();
        if at.is_some() {
            waiters.parked -= 1;
        }
        if empty {
            waiters.remove_group(self.key);
        }
    }
}

impl Server {
    /// Run `f` on the current state.
    pub fn read<R>(&self, f: impl FnOnce(&State) -> R) -> R {
        let r = self.inner.shared.replica();
        f(&r.state)
    }

    /// Run `f` on the current state with raft's last applied log id and
    /// membership (a snapshot archive's `meta.json`).
    pub fn read_raft<R>(
        &self,
        f: impl FnOnce(&State, Option<raft::LogId>, &raft::Membership) -> R,
    ) -> R {
        let r = self.inner.shared.replica();
        f(&r.state, r.last_log, &r.membership)
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
        self.waiters().parked
    }

    /// A blocking query woken only when `probe`, the query's own index (one
    /// key's ModifyIndex, a prefix's max, a table index), moves. Answers
    /// `(query(state), probe(state))` as soon as the index is above
    /// `min_index`, when `wait` has passed, or at once when `min_index` is 0
    /// or ahead of the whole log (a client that saw an older incarnation of
    /// this server: a lower index makes it reset instead of hanging a wait).
    ///
    /// Queries parked under the same `key` share one answer per wake, so
    /// the key must name everything the answer depends on besides the
    /// state: endpoint, target, parameters. `topic` says what `probe`
    /// reads, so that writes elsewhere don't run it.
    pub async fn block_on<R: Send + Sync + 'static>(
        &self,
        key: Arc<str>,
        topic: Topic,
        min_index: u64,
        wait: Duration,
        probe: impl Fn(&State) -> u64 + Send + Sync + 'static,
        query: impl Fn(&State) -> R + Send + Sync + 'static,
    ) -> (Arc<R>, u64) {
        let deadline = tokio::time::Instant::now() + wait;
        let key = (TypeId::of::<R>(), key);
        let probe: Probe = Arc::new(probe);
        let query = Arc::new(query);
        loop {
            let parked = self.read(|state| {
                let index = probe(state);
                if min_index == 0 || index > min_index || min_index > state.last_applied() {
                    return Err((Arc::new(query(state)), index));
                }
                Ok(self.park(&key, &topic, index, &probe, &query))
            });
            let (id, woken) = match parked {
                Err(answer) => return answer,
                Ok(p) => p,
            };
            let _parked = Parked {
                server: self,
                key: &key,
                id,
            };
            match tokio::time::timeout_at(deadline, woken).await {
                Ok(Ok((answer, index))) if index > min_index => {
                    if let Ok(answer) = answer.downcast::<R>() {
                        return (answer, index);
                    }
                }
                // Moved, but not past the client's index (an index reset is
                // decided by the next look): park again.
                Ok(_) => {}
                Err(_) => return self.read(|state| (Arc::new(query(state)), probe(state))),
            }
        }
    }

    /// Park a query that saw `seen`; called under the state read lock (see
    /// the module doc).
    fn park<R: Send + Sync + 'static>(
        &self,
        key: &GroupKey,
        topic: &Topic,
        seen: u64,
        probe: &Probe,
        query: &Arc<impl Fn(&State) -> R + Send + Sync + 'static>,
    ) -> (u64, oneshot::Receiver<(Answer, u64)>) {
        let (tx, rx) = oneshot::channel();
        let mut waiters = self.waiters();
        let id = waiters.next_id;
        waiters.next_id += 1;
        waiters.parked += 1;
        if !waiters.groups.contains_key(key) {
            let query = query.clone();
            let group = Group {
                topic: topic.clone(),
                probe: probe.clone(),
                render: Box::new(move |state| Arc::new(query(state)) as Answer),
                waiters: Vec::with_capacity(1),
            };
            waiters.add_group(key.clone(), group);
        }
        if let Some(group) = waiters.groups.get_mut(key) {
            group.waiters.push(Waiter {
                id,
                seen,
                wake: Some(tx),
            });
        }
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
        let mut ids: Vec<u64> = server
            .waiters()
            .groups
            .values()
            .flat_map(|g| g.waiters.iter().map(|w| w.id))
            .collect();
        ids.sort_unstable();
        ids
    }

    /// Park a blocking read of one key at its current index.
    fn watch(server: &Server, key: &'static str) -> tokio::task::JoinHandle<(bool, u64)> {
        let server = server.clone();
        let index = server.read(|s| s.kv_key_index(key));
        tokio::spawn(async move {
            let (found, index) = server
                .block_on(
                    key.into(),
                    Topic::KvKey(key.to_string()),
                    index,
                    Duration::from_secs(60),
                    move |s| s.kv_key_index(key),
                    move |s| s.kv_get(key).0.is_some(),
                )
                .await;
            (*found, index)
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

    /// Park `n` reads of `key` under one shared key; each counts the
    /// renders it runs in `renders`.
    fn watch_shared(
        server: &Server,
        key: &'static str,
        renders: &Arc<std::sync::atomic::AtomicUsize>,
    ) -> tokio::task::JoinHandle<(Arc<u64>, u64)> {
        let (server, renders) = (server.clone(), renders.clone());
        let index = server.read(|s| s.kv_key_index(key));
        tokio::spawn(async move {
            server
                .block_on(
                    format!("kv {key}").into(),
                    Topic::KvKey(key.to_string()),
                    index,
                    Duration::from_secs(60),
                    move |s| s.kv_key_index(key),
                    move |s| {
                        renders.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        s.kv_key_index(key)
                    },
                )
                .await
        })
    }

    #[tokio::test]
    async fn waiters_on_one_key_share_one_answer() {
        let server = dev().await;
        server.write(set("a")).await.unwrap();
        let renders = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let waiters: Vec<_> = (0..50)
            .map(|_| watch_shared(&server, "a", &renders))
            .collect();
        while server.parked_queries() < 50 {
            tokio::task::yield_now().await;
        }
        assert_eq!(server.waiters().groups.len(), 1);
        let w = server.write(set("a")).await.unwrap();
        let mut answers = Vec::new();
        for waiter in waiters {
            let (answer, index) = waiter.await.unwrap();
            assert_eq!((*answer, index), (w.index, w.index));
            answers.push(answer);
        }
        // One render for all fifty, and the very same answer.
        assert_eq!(renders.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert!(answers.iter().all(|a| Arc::ptr_eq(a, &answers[0])));
        assert_eq!(server.waiters().groups.len(), 0);
    }

    /// The wake runs on the waker task, not on the write: a write is
    /// answered while the wake it caused is still rendering.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_write_is_answered_before_its_wake_is_done() {
        let server = dev().await;
        server.write(set("a")).await.unwrap();
        let gate = Arc::new((Mutex::new(false), std::sync::Condvar::new()));
        let index = server.read(|s| s.kv_key_index("a"));
        let waiter = {
            let (server, gate) = (server.clone(), gate.clone());
            tokio::spawn(async move {
                server
                    .block_on(
                        "kv a".into(),
                        Topic::KvKey("a".to_string()),
                        index,
                        Duration::from_secs(60),
                        |s| s.kv_key_index("a"),
                        move |s| {
                            let (open, cv) = &*gate;
                            let mut open = open.lock().unwrap();
                            while !*open {
                                open = cv.wait(open).unwrap();
                            }
                            s.kv_key_index("a")
                        },
                    )
                    .await
            })
        };
        while server.parked_queries() < 1 {
            tokio::task::yield_now().await;
        }
        // The waker is stuck rendering behind the closed gate, yet the
        // write that woke it is answered.
        let w = tokio::time::timeout(Duration::from_secs(10), server.write(set("a")))
            .await
            .expect("the write waited for its wake")
            .unwrap();
        assert!(!waiter.is_finished());
        *gate.0.lock().unwrap() = true;
        gate.1.notify_all();
        assert_eq!(waiter.await.unwrap().1, w.index);
    }

    /// Park a query under `key` and `topic` at what `probe` reads now;
    /// answers the index it was woken at.
    fn park(
        server: &Server,
        key: &'static str,
        topic: Topic,
        probe: impl Fn(&State) -> u64 + Send + Sync + 'static,
    ) -> tokio::task::JoinHandle<u64> {
        let server = server.clone();
        let index = server.read(&probe);
        tokio::spawn(async move {
            let wait = Duration::from_secs(60);
            let (_, at) = server
                .block_on(key.into(), topic, index, wait, probe, |_| ())
                .await;
            at
        })
    }

    /// A write to one key runs the probes of the queries on that key and
    /// on the prefixes above it, not those of other keys.
    #[tokio::test]
    async fn a_wake_pass_probes_only_the_queries_a_write_can_have_moved() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let server = dev().await;
        for key in ["a", "b", "p/x"] {
            server.write(set(key)).await.unwrap();
        }
        let probed_b = Arc::new(AtomicUsize::new(0));
        let probed = probed_b.clone();
        let b = park(&server, "kv b", Topic::KvKey("b".into()), move |s| {
            probed.fetch_add(1, Ordering::SeqCst);
            s.kv_key_index("b")
        });
        let p = park(&server, "kv p/", Topic::KvPrefix("p/".into()), |s| {
            s.kv_prefix_index("p/")
        });
        while server.parked_queries() < 2 {
            tokio::task::yield_now().await;
        }
        let before = probed_b.load(Ordering::SeqCst);
        server.write(set("a")).await.unwrap();
        // Let the pass that write caused run (it has nothing to wake).
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(probed_b.load(Ordering::SeqCst), before);
        assert!(!b.is_finished() && !p.is_finished());
        let w = server.write(set("p/y")).await.unwrap();
        assert_eq!(p.await.unwrap(), w.index);
        assert_eq!(probed_b.load(Ordering::SeqCst), before);
        let w = server.write(set("b")).await.unwrap();
        assert_eq!(b.await.unwrap(), w.index);
    }

    #[tokio::test(start_paused = true)]
    async fn timed_out_queries_leave_the_table() {
        let server = dev().await;
        let index = server.read(|s| s.kv_key_index("k"));
        let (found, at) = server
            .block_on(
                "k".into(),
                Topic::KvKey("k".to_string()),
                index,
                Duration::from_secs(5),
                |s| s.kv_key_index("k"),
                |s| s.kv_get("k").0.is_some(),
            )
            .await;
        assert_eq!((*found, at), (false, index));
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
                "k".into(),
                Topic::KvKey("k".to_string()),
                1_000,
                Duration::from_secs(60),
                |s| s.kv_key_index("k"),
                |_| (),
            )
            .await;
        assert!(index < 1_000);
    }
}
