//! This agent's network coordinate and the servers' coordinate queue, as
//! Consul runs them:
//!
//! - Every gossip probe (`cluster`) is a timed round trip: the answer
//!   carries the peer's coordinate, and the RTT of the exchange moves ours
//!   through the Vivaldi client ([`Server::observe_rtt`]).
//! - [`sync_loop`]: the agent sends its coordinate to the servers every
//!   `max(sync_interval_min, members / sync_rate_target s)` plus a random
//!   stagger of up to as much again (Consul's `sendCoordinate`).
//! - Servers queue updates per `node:segment` (`PUT /v1/coordinate/update`
//!   and the agents' syncs; a client agent hands its own to a server over
//!   the cluster port) and [`flush_loop`] writes them every
//!   `update_period` as raft batches of `batch_size`, at most
//!   `max_batches` of them; the rest is dropped (Consul's
//!   `batchApplyUpdates`), so every server answers the same coordinates.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::cluster::Status;
use super::state::coordinate::CoordinateUpdate;
use super::state::Command;
use super::vivaldi::{self, Coordinate};
use super::Server;

/// Consul's cadence settings (`sync_coordinate_interval_min`,
/// `sync_coordinate_rate_target`, `coordinate_update_period`,
/// `coordinate_update_batch_size`, `coordinate_update_max_batches`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timing {
    pub sync_interval_min: Duration,
    pub sync_rate_target: f64,
    pub update_period: Duration,
    pub batch_size: usize,
    pub max_batches: usize,
}

impl Default for Timing {
    fn default() -> Timing {
        Timing {
            sync_interval_min: Duration::from_secs(15),
            sync_rate_target: 64.0,
            update_period: Duration::from_secs(5),
            batch_size: 128,
            max_batches: 5,
        }
    }
}

/// Why an update was refused (Consul's texts, answered with 500).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpdateError {
    #[error("invalid coordinate")]
    Invalid,
    #[error("incompatible coordinate")]
    Incompatible,
    /// A client agent could not hand the update to a server.
    #[error("{0}")]
    Forward(String),
}

/// The Vivaldi client of this agent and, on a server, the queued updates.
pub struct Local {
    client: Mutex<vivaldi::Client>,
    pending: Mutex<BTreeMap<(String, String), CoordinateUpdate>>,
}

impl Default for Local {
    fn default() -> Local {
        Local {
            client: Mutex::new(vivaldi::Client::new(vivaldi::Config::default())),
            pending: Mutex::new(BTreeMap::new()),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// `max(min, n / rate s)`: Consul's `lib.RateScaledInterval`.
pub fn rate_scaled_interval(rate: f64, min: Duration, n: usize) -> Duration {
    if rate <= 0.0 {
        return min;
    }
    min.max(Duration::from_secs_f64(n as f64 / rate))
}

impl Server {
    /// This agent's current coordinate.
    pub fn coordinate(&self) -> Coordinate {
        lock(&self.coordinates().client).coordinate().clone()
    }

    /// A timed exchange with `node`, whose coordinate is `theirs`, took `rtt`.
    pub fn observe_rtt(&self, node: &str, theirs: &Coordinate, rtt: Duration) {
        let mut client = lock(&self.coordinates().client);
        if let Err(e) = client.update(node, theirs, rtt.as_secs_f64(), &mut rand::rng()) {
            tracing::debug!("coordinate update from {node} refused: {e}");
        }
    }

    /// Forget the latency samples of a member that left.
    pub fn forget_rtt(&self, node: &str) {
        lock(&self.coordinates().client).forget(node);
    }

    /// `PUT /v1/coordinate/update` and an agent's own sync: checked, then
    /// queued here (a server) or handed to a server (a client agent).
    pub async fn update_coordinate(&self, update: CoordinateUpdate) -> Result<(), UpdateError> {
        if self.cluster().server {
            return self.queue_coordinate(update);
        }
        self.check_coordinate(&update.coord)?;
        let target = self.leader().map(|p| p.addr).or_else(|| {
            self.members()
                .others()
                .into_iter()
                .find(|m| m.info.server && m.status == Status::Alive)
                .map(|m| m.info.cluster_addr())
        });
        let Some(addr) = target else {
            return Err(UpdateError::Forward("No known Consul servers".into()));
        };
        self.client()
            .call::<_, Result<(), String>>(&addr, "/coordinate", &update, super::HOLD)
            .await
            .map_err(|e| UpdateError::Forward(e.to_string()))?
            .map_err(UpdateError::Forward)
    }

    fn check_coordinate(&self, coord: &Coordinate) -> Result<(), UpdateError> {
        if !coord.is_valid() {
            return Err(UpdateError::Invalid);
        }
        if !self.coordinate().is_compatible_with(coord) {
            return Err(UpdateError::Incompatible);
        }
        Ok(())
    }

    /// Queue an update on this server (the latest per node and segment).
    pub fn queue_coordinate(&self, update: CoordinateUpdate) -> Result<(), UpdateError> {
        self.check_coordinate(&update.coord)?;
        let key = (update.node.clone(), update.segment.clone());
        lock(&self.coordinates().pending).insert(key, update);
        Ok(())
    }

    /// Take the queued updates: at most `batch_size × max_batches`, the
    /// rest dropped (counted in the answer).
    fn take_coordinates(&self, limit: usize) -> (Vec<CoordinateUpdate>, usize) {
        let pending = std::mem::take(&mut *lock(&self.coordinates().pending));
        let total = pending.len();
        let kept: Vec<CoordinateUpdate> = pending.into_values().take(limit).collect();
        let dropped = total - kept.len();
        (kept, dropped)
    }
}

/// Send this agent's coordinate to the servers at Consul's cadence.
pub async fn sync_loop(server: Server, shutdown: CancellationToken) {
    let timing = server.cluster().coordinates;
    loop {
        let members = server.members().others().len() + 1;
        let every =
            rate_scaled_interval(timing.sync_rate_target, timing.sync_interval_min, members);
        let wait = every + every.mul_f64(rand::random::<f64>());
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
        let update = CoordinateUpdate {
            node: server.config().node.clone(),
            segment: String::new(),
            coord: server.coordinate(),
        };
        if let Err(e) = server.update_coordinate(update).await {
            tracing::warn!("Coordinate update error: {e}");
        }
    }
}

/// A server's flush of the queued updates into the replicated state.
pub async fn flush_loop(server: Server, shutdown: CancellationToken) {
    let timing = server.cluster().coordinates;
    let batch = timing.batch_size.max(1);
    let mut tick = tokio::time::interval(timing.update_period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let (updates, dropped) = server.take_coordinates(batch * timing.max_batches);
        if dropped > 0 {
            tracing::warn!(
                "Discarded {dropped} coordinate updates: the limit is {} per {:?}",
                batch * timing.max_batches,
                timing.update_period
            );
        }
        for chunk in updates.chunks(batch) {
            let cmd = Command::CoordinateBatchUpdate {
                updates: chunk.to_vec(),
            };
            if let Err(e) = server.write(cmd).await {
                tracing::warn!("Failed to apply coordinate updates: {e}");
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sync_interval_scales_with_the_cluster() {
        let min = Duration::from_secs(15);
        assert_eq!(rate_scaled_interval(64.0, min, 3), min);
        assert_eq!(
            rate_scaled_interval(64.0, min, 6400),
            Duration::from_secs(100)
        );
        assert_eq!(rate_scaled_interval(0.0, min, 6400), min);
    }
}
