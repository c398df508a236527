//! The replicated autopilot configuration (Consul's `AutopilotConfig`,
//! consul-breadth.md §7.1) and its check-and-set. Durations are kept in
//! nanoseconds as Consul stores them; the wire spelling is
//! `discovery::api::operator`'s.

use serde::{Deserialize, Serialize};

/// Consul's autopilot settings, with the indexes of the write that stored
/// them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AutopilotConfig {
    pub cleanup_dead_servers: bool,
    pub last_contact_threshold_ns: u64,
    pub max_trailing_logs: u64,
    pub min_quorum: u64,
    pub server_stabilization_time_ns: u64,
    pub redundancy_zone_tag: String,
    pub disable_upgrade_migration: bool,
    pub upgrade_version_tag: String,
    pub create_index: u64,
    pub modify_index: u64,
}

impl Default for AutopilotConfig {
    /// Consul's defaults (`agent/config/default.go`).
    fn default() -> AutopilotConfig {
        AutopilotConfig {
            cleanup_dead_servers: true,
            last_contact_threshold_ns: 200_000_000,
            max_trailing_logs: 250,
            min_quorum: 0,
            server_stabilization_time_ns: 10_000_000_000,
            redundancy_zone_tag: String::new(),
            disable_upgrade_migration: false,
            upgrade_version_tag: String::new(),
            create_index: 0,
            modify_index: 0,
        }
    }
}

/// Store `config` at `idx`, as Consul's `AutopilotCASConfig` /
/// `AutopilotSetConfig`: with `cas`, only when a config is stored and its
/// ModifyIndex is `cas`. Answers whether it was stored.
pub fn set(
    stored: &mut Option<AutopilotConfig>,
    idx: u64,
    mut config: AutopilotConfig,
    cas: Option<u64>,
) -> bool {
    if let Some(cas) = cas {
        if stored.as_ref().is_none_or(|s| s.modify_index != cas) {
            return false;
        }
    }
    config.create_index = stored.as_ref().map_or(idx, |s| s.create_index);
    config.modify_index = idx;
    *stored = Some(config);
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cas_needs_a_stored_config_at_that_index() {
        let mut stored = None;
        assert!(!set(&mut stored, 5, AutopilotConfig::default(), Some(0)));
        assert!(set(&mut stored, 5, AutopilotConfig::default(), None));
        let changed = AutopilotConfig {
            min_quorum: 3,
            ..AutopilotConfig::default()
        };
        assert!(!set(&mut stored, 7, changed.clone(), Some(4)));
        assert!(set(&mut stored, 8, changed, Some(5)));
        let s = stored
            .as_ref()
            .map(|s| (s.min_quorum, s.create_index, s.modify_index));
        assert_eq!(s, Some((3, 5, 8)));
    }
}
