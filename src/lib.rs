//! pilotfish: a ContainerPilot-style PID-1 supervisor with an embedded
//! Consul-compatible discovery server, template watcher and registrator.
//! See ARCHITECTURE.md for the map and the invariants.

pub mod config;
pub mod control;
pub mod discovery;
pub mod events;
pub mod interfaces;
pub mod signals;
pub mod telemetry;
