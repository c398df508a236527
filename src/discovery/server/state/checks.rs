//! Health checks as the catalog stores them: status vocabulary, the check
//! record, the `serfHealth` check every node carries, and the status filters
//! the health endpoints apply. Check *execution* (TTL timers, HTTP/TCP probes)
//! belongs to the agent; the state only records results it is told about.

use serde::{Deserialize, Serialize};

use super::session::SERF_HEALTH;

/// A check's status. Maintenance is not a status: it is a critical check with
/// a `_node_maintenance` / `_service_maintenance:<id>` ID.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum CheckStatus {
    Passing,
    Warning,
    Critical,
}

impl CheckStatus {
    /// Parse the wire spelling (`passing`, `warning`, `critical`).
    pub fn parse(s: &str) -> Option<CheckStatus> {
        match s {
            "passing" => Some(CheckStatus::Passing),
            "warning" => Some(CheckStatus::Warning),
            "critical" => Some(CheckStatus::Critical),
            _ => None,
        }
    }

    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            CheckStatus::Passing => "passing",
            CheckStatus::Warning => "warning",
            CheckStatus::Critical => "critical",
        }
    }
}

/// `/v1/health/state/<state>`: `any` or one status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusFilter {
    Any,
    Only(CheckStatus),
}

impl StatusFilter {
    /// Parse the path segment; `None` for anything else (HTTP 400).
    pub fn parse(s: &str) -> Option<StatusFilter> {
        if s == "any" {
            return Some(StatusFilter::Any);
        }
        CheckStatus::parse(s).map(StatusFilter::Only)
    }

    pub fn matches(self, status: CheckStatus) -> bool {
        match self {
            StatusFilter::Any => true,
            StatusFilter::Only(s) => s == status,
        }
    }
}

/// A check as registered in the catalog (`HealthCheck` on the wire).
/// `service_name` and `service_tags` are filled from the service on read;
/// indexes are ignored on input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthCheck {
    pub node: String,
    pub check_id: String,
    pub name: String,
    pub status: CheckStatus,
    pub notes: String,
    pub output: String,
    /// `""` for node checks.
    pub service_id: String,
    pub service_name: String,
    pub service_tags: Vec<String>,
    /// `ttl`, `http`, `tcp`, `script`, ... (`""` for serfHealth).
    pub check_type: String,
    /// The check definition as JSON text, opaque to the state.
    pub definition: String,
    pub create_index: u64,
    pub modify_index: u64,
}

impl HealthCheck {
    /// A check with the given identity and status and empty everything else.
    pub fn new(node: &str, check_id: &str, name: &str, status: CheckStatus) -> HealthCheck {
        HealthCheck {
            node: node.to_string(),
            check_id: check_id.to_string(),
            name: name.to_string(),
            status,
            notes: String::new(),
            output: String::new(),
            service_id: String::new(),
            service_name: String::new(),
            service_tags: Vec::new(),
            check_type: String::new(),
            definition: String::new(),
            create_index: 0,
            modify_index: 0,
        }
    }

    /// The passing `serfHealth` check Consul keeps on every live node.
    pub fn serf_health(node: &str) -> HealthCheck {
        HealthCheck {
            output: "Agent alive and reachable".to_string(),
            ..HealthCheck::new(
                node,
                SERF_HEALTH,
                "Serf Health Status",
                CheckStatus::Passing,
            )
        }
    }

    /// Same content, ignoring indexes and read-time decorations.
    pub fn same_as(&self, other: &HealthCheck) -> bool {
        self.node == other.node
            && self.check_id == other.check_id
            && self.name == other.name
            && self.status == other.status
            && self.notes == other.notes
            && self.output == other.output
            && self.service_id == other.service_id
            && self.check_type == other.check_type
            && self.definition == other.definition
    }
}

/// Consul's `check_output_max_size`: longer check output is cut.
pub const OUTPUT_MAX_SIZE: usize = 4096;

/// Cut a check's output like Consul's `CheckTTL.SetStatus`: the first
/// [`OUTPUT_MAX_SIZE`] bytes (on a character boundary) and a note of how
/// much there was.
pub fn truncate_output(output: String) -> String {
    if output.len() <= OUTPUT_MAX_SIZE {
        return output;
    }
    let mut cut = OUTPUT_MAX_SIZE;
    while !output.is_char_boundary(cut) {
        cut -= 1;
    }
    format!(
        "{} ... (captured {} of {} bytes)",
        &output[..cut],
        OUTPUT_MAX_SIZE,
        output.len()
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn status_and_filter_parse() {
        assert_eq!(CheckStatus::parse("warning"), Some(CheckStatus::Warning));
        assert_eq!(CheckStatus::parse("Warning"), None);
        assert_eq!(StatusFilter::parse("any"), Some(StatusFilter::Any));
        assert!(StatusFilter::parse("critical")
            .is_some_and(|f| f.matches(CheckStatus::Critical) && !f.matches(CheckStatus::Passing)));
        assert_eq!(StatusFilter::parse("bogus"), None);
    }

    #[test]
    fn serf_health_is_passing_node_check() {
        let c = HealthCheck::serf_health("n1");
        assert_eq!(c.check_id, "serfHealth");
        assert_eq!(c.name, "Serf Health Status");
        assert_eq!(c.status, CheckStatus::Passing);
        assert!(c.service_id.is_empty());
    }

    #[test]
    fn same_as_ignores_indexes_but_not_output() {
        let a = HealthCheck::serf_health("n1");
        let mut b = a.clone();
        b.modify_index = 9;
        assert!(a.same_as(&b));
        b.output = "changed".to_string();
        assert!(!a.same_as(&b));
    }
}
