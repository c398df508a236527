//! Read consistency (consul-wire.md §3.4): whether this node knows a leader
//! it may answer a default read for (a lease of one election timeout), the
//! quorum-confirmed read index of `?consistent`, the leader headers, and
//! check-quorum, which openraft 0.9 lacks.

use std::time::Duration;

use super::{raft, Server, HOLD};

/// Why a read with the default or `?consistent` mode was refused.
#[derive(Debug, thiserror::Error)]
#[error("No cluster leader")]
pub struct NoLeader;

/// The read modes of consul-wire.md §3.4.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Consistency {
    /// Answer if a leader is known and in touch with this node.
    Default,
    /// Confirm leadership with a quorum first, then read at least that index.
    Consistent,
    /// Answer from this replica, whatever its state.
    Stale,
}

impl Server {
    /// A follower heard from its leader (append entries or heartbeat).
    pub fn touch_leader_contact(&self) {
        *self
            .inner
            .last_contact
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(tokio::time::Instant::now());
    }

    pub(super) fn last_contact(&self) -> Option<tokio::time::Instant> {
        *self
            .inner
            .last_contact
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    pub fn is_leader(&self) -> bool {
        let m = self.inner.raft.metrics();
        let m = m.borrow();
        m.state == openraft::ServerState::Leader
    }

    /// The current leader, as a peer.
    pub fn leader(&self) -> Option<raft::Peer> {
        let m = self.inner.raft.metrics();
        let m = m.borrow();
        let id = m.current_leader?;
        m.membership_config.membership().get_node(&id).cloned()
    }

    /// Whether this node may answer a default-mode read now: it leads and a
    /// quorum acknowledged it recently, or it follows a leader it heard from
    /// recently (a lease of one election timeout).
    pub fn leader_known(&self) -> bool {
        let m = self.inner.raft.metrics();
        let m = m.borrow();
        match m.state {
            openraft::ServerState::Leader => {
                let only_me = m
                    .membership_config
                    .membership()
                    .voter_ids()
                    .all(|v| v == self.inner.id);
                only_me
                    || m.millis_since_quorum_ack
                        .is_some_and(|ms| ms < raft::millis_u64(raft::ELECTION_MIN))
            }
            _ => {
                m.current_leader.is_some()
                    && self
                        .last_contact()
                        .is_some_and(|t| t.elapsed() < raft::ELECTION_MIN)
            }
        }
    }

    /// Raft's check-quorum, which openraft 0.9 lacks: a leader that no
    /// quorum has acknowledged for [`raft::CHECK_QUORUM`] stops sending
    /// heartbeats. Its followers then stop trusting it within
    /// [`raft::ELECTION_MIN`] (see [`Server::leader_known`]), so none of them
    /// keeps answering default reads for long from data a new majority may
    /// have overwritten (a window of about 0.3 s, under Consul's leader
    /// lease), and they campaign; the vote they ask for makes the old leader
    /// step down. Heartbeats resume once a quorum answers again or this node no
    /// longer leads. Runs until `shutdown`.
    pub async fn check_quorum(&self, shutdown: tokio_util::sync::CancellationToken) {
        let limit = raft::millis_u64(raft::CHECK_QUORUM);
        let mut every = tokio::time::interval(raft::HEARTBEAT);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The term this node leads in, and since when.
        let mut leading: Option<(u64, tokio::time::Instant)> = None;
        let mut beating = true;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = every.tick() => {}
            }
            let lost = {
                let m = self.inner.raft.metrics();
                let m = m.borrow();
                if m.state == openraft::ServerState::Leader {
                    let now = tokio::time::Instant::now();
                    let since = match leading {
                        Some((term, since)) if term == m.current_term => since,
                        _ => leading.insert((m.current_term, now)).1,
                    };
                    let alone = m
                        .membership_config
                        .membership()
                        .voter_ids()
                        .all(|v| v == self.inner.id);
                    !alone
                        && m.millis_since_quorum_ack.map_or_else(
                            || now.duration_since(since) > raft::CHECK_QUORUM,
                            |ms| ms > limit,
                        )
                } else {
                    leading = None;
                    false
                }
            };
            if lost == beating {
                beating = !lost;
                self.inner.raft.runtime_config().heartbeat(beating);
                if lost {
                    tracing::warn!(
                        "no quorum has answered for over {limit} ms: \
                         stopping heartbeats so that a new leader can be elected"
                    );
                } else {
                    tracing::info!("heartbeats resumed");
                }
            }
        }
    }

    /// `X-Consul-KnownLeader` and `X-Consul-LastContact` (ms) for a read.
    pub fn leader_status(&self) -> (bool, u64) {
        let known = self.leader_known();
        let contact = if self.is_leader() {
            0
        } else {
            self.last_contact().map_or(0, |t| {
                u64::try_from(t.elapsed().as_millis()).unwrap_or(u64::MAX)
            })
        };
        (known, contact)
    }

    /// The check a read mode asks for before reading the local replica.
    pub async fn read_barrier(&self, mode: Consistency) -> Result<(), NoLeader> {
        match mode {
            Consistency::Stale => Ok(()),
            Consistency::Default => {
                if self.leader_known() {
                    Ok(())
                } else {
                    // A leader may be about to be elected: hold briefly like
                    // Consul's rpc_hold_timeout, then give up.
                    let deadline = tokio::time::Instant::now() + raft::ELECTION_MIN * 3;
                    while tokio::time::Instant::now() < deadline {
                        tokio::time::sleep(Duration::from_millis(25)).await;
                        if self.leader_known() {
                            return Ok(());
                        }
                    }
                    Err(NoLeader)
                }
            }
            // Boxed for the same reason as `write`: it may call the leader.
            Consistency::Consistent => Box::pin(self.linearizable()).await,
        }
    }

    /// Confirm with a quorum that the leader is still the leader, then wait
    /// until this replica has applied the leader's commit index.
    async fn linearizable(&self) -> Result<(), NoLeader> {
        let deadline = tokio::time::Instant::now() + HOLD;
        loop {
            let index = if self.is_leader() {
                match tokio::time::timeout_at(deadline, self.inner.raft.get_read_log_id()).await {
                    Ok(Ok((read, _))) => Some(read.map_or(0, |l| l.index)),
                    Ok(Err(_)) | Err(_) => None,
                }
            } else if let Some(leader) = self.leader() {
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                self.inner
                    .client
                    .call::<_, Option<u64>>(&leader.addr, "/read-index", &(), left)
                    .await
                    .unwrap_or_default()
            } else {
                None
            };
            if let Some(index) = index {
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                return self
                    .inner
                    .raft
                    .wait(Some(left))
                    .applied_index_at_least(Some(index), "consistent read")
                    .await
                    .map(|_| ())
                    .map_err(|_| NoLeader);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(NoLeader);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The leader's read index for a follower's `?consistent` read: `None`
    /// when this node cannot confirm it leads.
    pub async fn read_index(&self) -> Option<u64> {
        match tokio::time::timeout(HOLD, self.inner.raft.get_read_log_id()).await {
            Ok(Ok((read, _))) => Some(read.map_or(0, |l| l.index)),
            _ => None,
        }
    }
}
