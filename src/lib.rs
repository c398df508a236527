//! pilotfish: a ContainerPilot-style PID-1 supervisor with an embedded
//! Consul-compatible discovery server, template watcher and registrator.
//! See ARCHITECTURE.md for the map and the invariants.

pub mod app;
pub mod cli;
pub mod config;
pub mod control;
pub mod discovery;
pub mod events;
pub mod interfaces;
pub mod logging;
pub mod pid1;
pub mod registrator;
pub mod sdnotify;
pub mod signals;
pub mod supervisor;
pub mod telemetry;
pub mod template;
pub mod ui;

/// The version printed by `pilotfish version` and reported in `/status`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
