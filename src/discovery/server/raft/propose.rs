//! Group commit: the commands that arrive while earlier log entries are
//! still being written and replicated are proposed together, as one log
//! entry. openraft 0.9 appends (and so fsyncs) every `client_write` on its
//! own; without this the leader's write rate is capped at one fsync per
//! write.
//!
//! One task takes the queue. At most [`IN_FLIGHT`] entries are between
//! `client_write` and their answer; while they are, new commands wait in
//! the queue, and the next entry takes all of them (up to [`MAX_BATCH`]).
//! A lone write is proposed at once, so batching adds no latency when
//! the load is light. The commands of one entry are applied one after the
//! other at that entry's log index, each with its own result, exactly as if
//! they had been proposed one by one in that order.

use std::sync::Arc;

use openraft::error::{ClientWriteError, RaftError};
use tokio::sync::{mpsc, oneshot, Semaphore};

use super::{Fault, Peer, Proposal, Raft};
use crate::discovery::server::state::{Command, CommandResult};

/// Entries proposed and not yet answered: one being written and
/// replicated, one queued behind it in raft.
const IN_FLIGHT: usize = 2;
/// The most commands in one log entry.
const MAX_BATCH: usize = 256;

/// A command applied by the leader.
#[derive(Debug)]
pub struct Applied {
    pub index: u64,
    pub result: CommandResult,
}

/// Why a proposal did not commit here.
#[derive(Debug, Clone)]
pub enum Rejected {
    /// This node does not lead; the leader, when known.
    NotLeader(Option<Peer>),
    /// raft refused it (a membership change in progress, say).
    Failed(String),
    /// raft has stopped; on a storage failure, its cause.
    Stopped(Option<String>),
}

struct Pending {
    cmd: Command,
    reply: oneshot::Sender<Result<Applied, Rejected>>,
}

/// The queue's sending side; cheap to clone.
#[derive(Clone)]
pub struct Proposer {
    tx: mpsc::UnboundedSender<Pending>,
}

impl Proposer {
    /// Start the task that proposes the queued commands to `raft`. It ends
    /// once every `Proposer` is dropped. `fault` names why raft stopped.
    pub fn start(raft: Raft, fault: Fault) -> Proposer {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(raft, fault, rx));
        Proposer { tx }
    }

    /// Propose one command; answers once its entry is committed and applied
    /// on this node, or refused.
    pub async fn propose(&self, cmd: Command) -> Result<Applied, Rejected> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Pending { cmd, reply })
            .map_err(|_| Rejected::Stopped(None))?;
        answer.await.unwrap_or(Err(Rejected::Stopped(None)))
    }
}

async fn run(raft: Raft, fault: Fault, mut rx: mpsc::UnboundedReceiver<Pending>) {
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    while let Some(first) = rx.recv().await {
        // Waiting for a slot is what lets the queue fill up under load.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        let (raft, fault) = (raft.clone(), fault.clone());
        tokio::spawn(async move {
            submit(&raft, &fault, batch).await;
            drop(slot);
        });
    }
}

async fn submit(raft: &Raft, fault: &Fault, batch: Vec<Pending>) {
    let (cmds, replies): (Vec<Command>, Vec<_>) =
        batch.into_iter().map(|p| (p.cmd, p.reply)).unzip();
    let proposal = Proposal {
        now_ms: crate::discovery::server::now_ms(),
        cmds,
    };
    match raft.client_write(proposal).await {
        Ok(resp) => {
            let index = resp.log_id.index;
            let mut results = resp.data.into_iter();
            for reply in replies {
                let answer = results.next().map_or_else(
                    || {
                        Err(Rejected::Failed(
                            "the entry has fewer results than commands".into(),
                        ))
                    },
                    |result| Ok(Applied { index, result }),
                );
                let _ = reply.send(answer);
            }
        }
        Err(e) => {
            let why = match e {
                RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => {
                    Rejected::NotLeader(f.leader_node)
                }
                RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => {
                    Rejected::Failed(e.to_string())
                }
                RaftError::Fatal(_) => Rejected::Stopped(fault.get()),
            };
            for reply in replies {
                let _ = reply.send(Err(why.clone()));
            }
        }
    }
}
