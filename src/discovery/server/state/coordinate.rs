//! The coordinates table (Consul's `coordinates`): each node's network
//! coordinate per segment, written in batches by the servers
//! ([`super::Command::CoordinateBatchUpdate`]) and deleted with the node.
//! Updates for nodes the catalog does not know are dropped silently, as
//! Consul's state store does, so a coordinate never outlives its node.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::discovery::server::vivaldi::Coordinate;

/// One node's coordinate in one segment (`""` = the default segment).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CoordinateUpdate {
    pub node: String,
    pub segment: String,
    pub coord: Coordinate,
}

/// node → segment → coordinate, and the table's index.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Coordinates {
    rows: BTreeMap<String, BTreeMap<String, Coordinate>>,
    table_index: u64,
}

impl Coordinates {
    /// Store the updates whose node `known` says exists.
    pub fn update(
        &mut self,
        idx: u64,
        updates: Vec<CoordinateUpdate>,
        known: impl Fn(&str) -> bool,
    ) {
        for u in updates {
            if !known(&u.node) {
                continue;
            }
            self.rows
                .entry(u.node)
                .or_default()
                .insert(u.segment, u.coord);
        }
        self.table_index = idx;
    }

    /// Delete every coordinate of these (deregistered) nodes.
    pub fn drop_nodes(&mut self, idx: u64, nodes: &[String]) {
        let mut changed = false;
        for n in nodes {
            changed |= self.rows.remove(n).is_some();
        }
        if changed {
            self.table_index = idx;
        }
    }

    /// Every (node, segment, coordinate), by node then segment.
    pub fn all(&self) -> impl Iterator<Item = (&str, &str, &Coordinate)> {
        self.rows
            .iter()
            .flat_map(|(n, segs)| segs.iter().map(move |(s, c)| (n.as_str(), s.as_str(), c)))
    }

    /// One node's coordinates, by segment.
    pub fn node(&self, node: &str) -> Option<&BTreeMap<String, Coordinate>> {
        self.rows.get(node)
    }

    pub fn table_index(&self) -> u64 {
        self.table_index
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discovery::server::vivaldi::Config;

    #[test]
    fn unknown_nodes_are_dropped_and_deletes_follow_nodes() {
        let coord = Coordinate::new(&Config::default());
        let up = |node: &str| CoordinateUpdate {
            node: node.into(),
            segment: String::new(),
            coord: coord.clone(),
        };
        let mut t = Coordinates::default();
        t.update(5, vec![up("a"), up("ghost")], |n| n == "a");
        assert_eq!(t.all().map(|r| r.0).collect::<Vec<_>>(), vec!["a"]);
        assert_eq!(t.table_index(), 5);
        t.drop_nodes(6, &["b".into()]);
        assert_eq!(t.table_index(), 5);
        t.drop_nodes(7, &["a".into()]);
        assert_eq!(t.table_index(), 7);
        assert!(t.node("a").is_none());
    }
}
