//! `/v1/txn` with catalog and session operations next to KV ones
//! (consul-wire.md §4.5): Consul's `Node`, `Service` and `Check` verbs
//! (`set`, `cas`, `get`, `delete`, `delete-cas`) and `Session` `delete`,
//! applied in op order at one index, all or nothing. The catalog verbs are
//! the catalog's own register/deregister, so index rules and session
//! invalidation are those of the HTTP catalog endpoints.

use serde::{Deserialize, Serialize};

use super::catalog::{Deregistration, LimitError, Node, Registration, Service};
use super::checks::HealthCheck;
use super::kv::{KvEntry, TxnError, TxnOp as KvOp};
use super::{State, StateError};
use crate::discovery::api::gofmt::go_quote;

/// Consul's verbs for `Node`, `Service` and `Check` operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CatalogVerb {
    Set,
    /// Set if `ModifyIndex` matches (0: only if it does not exist yet).
    Cas,
    Get,
    Delete,
    /// Delete if `ModifyIndex` matches.
    DeleteCas,
}

/// One operation of a txn. The catalog ops carry Consul's objects; their
/// `modify_index` is the CAS index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxnOp {
    Kv(KvOp),
    Node {
        verb: CatalogVerb,
        node: Node,
    },
    Service {
        verb: CatalogVerb,
        node: String,
        service: Service,
    },
    Check {
        verb: CatalogVerb,
        check: HealthCheck,
    },
    /// `Session` `delete`: destroy the session, as `session/destroy` does.
    SessionDelete {
        id: String,
    },
}

impl TxnOp {
    /// The op's catalog object within the input limits
    /// ([`Registration::bound`]'s rules); check output is cut to size.
    pub fn bound(&mut self) -> Result<(), LimitError> {
        match self {
            TxnOp::Node { node, .. } => node.check_limits(),
            TxnOp::Service { service, .. } => service.check_limits(),
            TxnOp::Check { check, .. } => check.bound(),
            TxnOp::Kv(_) | TxnOp::SessionDelete { .. } => Ok(()),
        }
    }

    /// True for the ops that never write.
    pub fn is_read(&self) -> bool {
        match self {
            TxnOp::Kv(op) => op.is_read(),
            TxnOp::Node { verb, .. } | TxnOp::Service { verb, .. } | TxnOp::Check { verb, .. } => {
                *verb == CatalogVerb::Get
            }
            TxnOp::SessionDelete { .. } => false,
        }
    }
}

/// One result of a committed txn, in op order (writes that leave nothing,
/// deletes, have none).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxnResult {
    Kv(KvEntry),
    Node(Node),
    Service(Service),
    Check(HealthCheck),
}

/// Every op applied (HTTP 200) or none did (HTTP 409).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxnOutcome {
    Committed(Vec<TxnResult>),
    RolledBack(Vec<TxnError>),
}

impl State {
    /// Apply a mixed txn at `idx`: every op runs in order and every failure
    /// is reported; any failure restores the state as it was.
    pub(super) fn txn(&mut self, idx: u64, now: u64, ops: Vec<TxnOp>) -> TxnOutcome {
        let mut errors = Vec::new();
        for (op_index, op) in ops.iter().enumerate() {
            if let TxnOp::Kv(op) = op {
                if let Err(what) = self.kv.txn_check(op, now) {
                    errors.push(TxnError { op_index, what });
                }
            }
        }
        if !errors.is_empty() {
            return TxnOutcome::RolledBack(errors);
        }
        // Rollback by restoring a copy: obviously atomic, and the states
        // this server holds are small.
        let before = (!ops.iter().all(TxnOp::is_read)).then(|| self.clone());
        let mut results = Vec::new();
        for (op_index, op) in ops.into_iter().enumerate() {
            match self.txn_op(idx, now, op) {
                Ok(r) => results.extend(r),
                Err(what) => errors.push(TxnError { op_index, what }),
            }
        }
        if errors.is_empty() {
            return TxnOutcome::Committed(results);
        }
        if let Some(before) = before {
            *self = before;
        }
        TxnOutcome::RolledBack(errors)
    }

    /// A txn made only of reads, without the log, and the index of the KV
    /// and catalog tables; `None` if any op writes.
    pub fn txn_read(&self, ops: &[TxnOp]) -> Option<(TxnOutcome, u64)> {
        if !ops.iter().all(TxnOp::is_read) {
            return None;
        }
        let mut results = Vec::new();
        let mut errors = Vec::new();
        for (op_index, op) in ops.iter().enumerate() {
            let read = match op {
                TxnOp::Kv(op) => self
                    .kv
                    .txn_read_one(op)
                    .map(|r| r.into_iter().map(TxnResult::Kv).collect()),
                other => self.catalog_get(other).map(|r| vec![r]),
            };
            match read {
                Ok(r) => results.extend(r),
                Err(what) => errors.push(TxnError { op_index, what }),
            }
        }
        let outcome = if errors.is_empty() {
            TxnOutcome::Committed(results)
        } else {
            TxnOutcome::RolledBack(errors)
        };
        let index = self.kv.table_index().max(self.catalog.table_index());
        Some((outcome, self.floor(index)))
    }

    fn txn_op(&mut self, idx: u64, now: u64, op: TxnOp) -> Result<Vec<TxnResult>, String> {
        let get = |state: &State, op: &TxnOp| state.catalog_get(op).map(|r| vec![r]);
        match op {
            TxnOp::Kv(op) => Ok(self
                .kv
                .txn_write_one(idx, op, &self.sessions)?
                .into_iter()
                .map(TxnResult::Kv)
                .collect()),
            TxnOp::SessionDelete { id } => {
                if id.is_empty() {
                    return Err(StateError::MissingSession.to_string());
                }
                self.invalidate(idx, now, vec![id]);
                Ok(Vec::new())
            }
            ref read if read.is_read() => get(self, read),
            TxnOp::Node { verb, node } => {
                self.node_op(idx, now, verb, &node)?;
                let op = TxnOp::Node { verb, node };
                self.after_write(verb, &op)
            }
            TxnOp::Service {
                verb,
                node,
                service,
            } => {
                self.service_op(idx, now, verb, &node, &service)?;
                let op = TxnOp::Service {
                    verb,
                    node,
                    service,
                };
                self.after_write(verb, &op)
            }
            TxnOp::Check { verb, check } => {
                self.check_op(idx, now, verb, &check)?;
                let op = TxnOp::Check { verb, check };
                self.after_write(verb, &op)
            }
        }
    }

    /// A set or cas answers with what is stored now; deletes answer nothing.
    fn after_write(&self, verb: CatalogVerb, op: &TxnOp) -> Result<Vec<TxnResult>, String> {
        match verb {
            CatalogVerb::Set | CatalogVerb::Cas => self.catalog_get(op).map(|r| vec![r]),
            _ => Ok(Vec::new()),
        }
    }

    /// What a catalog op's object is stored as, or Consul's "doesn't exist".
    fn catalog_get(&self, op: &TxnOp) -> Result<TxnResult, String> {
        match op {
            TxnOp::Node { node, .. } => self
                .catalog
                .node(&node.name)
                .map(|n| TxnResult::Node(n.clone()))
                .ok_or_else(|| format!("node {} doesn't exist", go_quote(&node.name))),
            TxnOp::Service { node, service, .. } => self
                .catalog
                .service(node, &service.id)
                .map(|s| TxnResult::Service(s.clone()))
                .ok_or_else(|| {
                    format!(
                        "service {} on node {} doesn't exist",
                        go_quote(&service.id),
                        go_quote(node)
                    )
                }),
            TxnOp::Check { check, .. } => self
                .catalog
                .check(&check.node, &check.check_id)
                .map(TxnResult::Check)
                .ok_or_else(|| {
                    format!(
                        "check {} on node {} doesn't exist",
                        go_quote(&check.check_id),
                        go_quote(&check.node)
                    )
                }),
            TxnOp::Kv(_) | TxnOp::SessionDelete { .. } => {
                Err("not a catalog operation".to_string())
            }
        }
    }

    fn node_op(
        &mut self,
        idx: u64,
        now: u64,
        verb: CatalogVerb,
        node: &Node,
    ) -> Result<(), String> {
        let stored = self.catalog.node(&node.name).map(|n| n.modify_index);
        let stale = || {
            format!(
                "failed to {} node {}, index is stale",
                verb_word(verb),
                go_quote(&node.name)
            )
        };
        if is_stale(verb, stored, node.modify_index) {
            return Err(stale());
        }
        match verb {
            CatalogVerb::Get => Ok(()),
            CatalogVerb::Set | CatalogVerb::Cas => self.register(
                idx,
                now,
                Registration {
                    node: node.name.clone(),
                    node_id: node.id.clone(),
                    address: node.address.clone(),
                    tagged_addresses: node.tagged_addresses.clone(),
                    node_meta: node.meta.clone(),
                    skip_node_update: false,
                    service: None,
                    checks: Vec::new(),
                },
            ),
            CatalogVerb::Delete | CatalogVerb::DeleteCas => {
                self.deregister(idx, now, &node.name, None, None);
                Ok(())
            }
        }
    }

    fn service_op(
        &mut self,
        idx: u64,
        now: u64,
        verb: CatalogVerb,
        node: &str,
        service: &Service,
    ) -> Result<(), String> {
        let stored = self
            .catalog
            .service(node, &service.id)
            .map(|s| s.modify_index);
        let stale = || {
            format!(
                "failed to {} service {} on node {}, index is stale",
                verb_word(verb),
                go_quote(&service.id),
                go_quote(node)
            )
        };
        if is_stale(verb, stored, service.modify_index) {
            return Err(stale());
        }
        match verb {
            CatalogVerb::Get => Ok(()),
            CatalogVerb::Set | CatalogVerb::Cas => {
                if self.catalog.node(node).is_none() {
                    return Err(StateError::MissingNode.to_string());
                }
                self.register(idx, now, attach(node, Some(service.clone()), Vec::new()))
            }
            CatalogVerb::Delete | CatalogVerb::DeleteCas => {
                self.deregister(idx, now, node, Some(service.id.clone()), None);
                Ok(())
            }
        }
    }

    fn check_op(
        &mut self,
        idx: u64,
        now: u64,
        verb: CatalogVerb,
        check: &HealthCheck,
    ) -> Result<(), String> {
        let stored = self
            .catalog
            .check(&check.node, &check.check_id)
            .map(|c| c.modify_index);
        let stale = || {
            format!(
                "failed to {} check {} on node {}, index is stale",
                verb_word(verb),
                go_quote(&check.check_id),
                go_quote(&check.node)
            )
        };
        if is_stale(verb, stored, check.modify_index) {
            return Err(stale());
        }
        match verb {
            CatalogVerb::Get => Ok(()),
            CatalogVerb::Set | CatalogVerb::Cas => {
                if self.catalog.node(&check.node).is_none() {
                    return Err(StateError::MissingNode.to_string());
                }
                self.register(idx, now, attach(&check.node, None, vec![check.clone()]))
            }
            CatalogVerb::Delete | CatalogVerb::DeleteCas => {
                self.deregister(idx, now, &check.node, None, Some(check.check_id.clone()));
                Ok(())
            }
        }
    }

    fn register(&mut self, idx: u64, now: u64, reg: Registration) -> Result<(), String> {
        let effects = self.catalog.register(idx, reg).map_err(|e| e.to_string())?;
        self.apply_effects(idx, now, effects);
        Ok(())
    }

    fn deregister(
        &mut self,
        idx: u64,
        now: u64,
        node: &str,
        service_id: Option<String>,
        check_id: Option<String>,
    ) {
        let effects = self.catalog.deregister(
            idx,
            &Deregistration {
                node: node.to_string(),
                service_id,
                check_id,
            },
        );
        self.apply_effects(idx, now, effects);
    }
}

/// A registration that adds a service or checks to an existing node.
fn attach(node: &str, service: Option<Service>, checks: Vec<HealthCheck>) -> Registration {
    Registration {
        node: node.to_string(),
        node_id: String::new(),
        address: String::new(),
        tagged_addresses: Default::default(),
        node_meta: Default::default(),
        skip_node_update: true,
        service,
        checks,
    }
}

/// Consul's CAS rule: index 0 = only if absent, else the stored index.
fn cas_matches(stored: Option<u64>, index: u64) -> bool {
    match stored {
        None => index == 0,
        Some(stored) => index != 0 && stored == index,
    }
}

/// Whether a `cas` or `delete-cas` op's index no longer matches the stored
/// entry's (other verbs carry no index to check).
fn is_stale(verb: CatalogVerb, stored: Option<u64>, index: u64) -> bool {
    match verb {
        CatalogVerb::Cas => !cas_matches(stored, index),
        CatalogVerb::DeleteCas => stored != Some(index),
        CatalogVerb::Get | CatalogVerb::Set | CatalogVerb::Delete => false,
    }
}

fn verb_word(verb: CatalogVerb) -> &'static str {
    match verb {
        CatalogVerb::Delete | CatalogVerb::DeleteCas => "delete",
        _ => "set",
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::discovery::server::state::checks::CheckStatus;
    use crate::discovery::server::state::session::SessionRequest;
    use crate::discovery::server::state::{Command, Outcome};

    fn node(name: &str, modify_index: u64) -> Node {
        Node {
            name: name.into(),
            id: String::new(),
            address: "10.0.0.1".into(),
            tagged_addresses: BTreeMap::new(),
            meta: BTreeMap::new(),
            create_index: 0,
            modify_index,
        }
    }

    fn service(id: &str, modify_index: u64) -> Service {
        Service {
            id: id.into(),
            name: "web".into(),
            tags: Vec::new(),
            address: String::new(),
            port: 80,
            meta: BTreeMap::new(),
            enable_tag_override: false,
            weights: Default::default(),
            create_index: 0,
            modify_index,
            ..Default::default()
        }
    }

    /// A state with node n1, registered at index 1 by a txn.
    fn with_n1() -> State {
        let mut state = State::new();
        run(
            &mut state,
            1,
            vec![TxnOp::Node {
                verb: CatalogVerb::Set,
                node: node("n1", 0),
            }],
        );
        state
    }

    fn run(state: &mut State, idx: u64, ops: Vec<TxnOp>) -> TxnOutcome {
        match state.apply(idx, 1_000, Command::Txn { ops }).unwrap() {
            Outcome::TxnResults(outcome) => outcome,
            other => panic!("not a txn outcome: {other:?}"),
        }
    }

    fn whats(outcome: TxnOutcome) -> Vec<(usize, String)> {
        match outcome {
            TxnOutcome::RolledBack(errors) => {
                errors.into_iter().map(|e| (e.op_index, e.what)).collect()
            }
            other => panic!("committed: {other:?}"),
        }
    }

    #[test]
    fn catalog_and_kv_ops_commit_together() {
        let mut state = State::new();
        let check = HealthCheck {
            service_id: "w1".into(),
            ..HealthCheck::new("n1", "w1-ok", "ok", CheckStatus::Passing)
        };
        let outcome = run(
            &mut state,
            1,
            vec![
                TxnOp::Node {
                    verb: CatalogVerb::Set,
                    node: node("n1", 0),
                },
                TxnOp::Service {
                    verb: CatalogVerb::Set,
                    node: "n1".into(),
                    service: service("w1", 0),
                },
                TxnOp::Check {
                    verb: CatalogVerb::Set,
                    check,
                },
                TxnOp::Kv(KvOp::Set {
                    key: "k".into(),
                    value: b"v".to_vec(),
                    flags: 0,
                }),
            ],
        );
        let TxnOutcome::Committed(results) = outcome else {
            panic!("rolled back: {outcome:?}")
        };
        assert_eq!(results.len(), 4);
        assert!(matches!(&results[0], TxnResult::Node(n) if n.modify_index == 1));
        assert!(matches!(&results[1], TxnResult::Service(s) if s.modify_index == 1));
        assert!(matches!(&results[2], TxnResult::Check(c) if c.service_name == "web"));
        assert_eq!(state.health_service("web", &[], true).0.len(), 1);
        assert!(state.kv_get("k").0.is_some());
    }

    #[test]
    fn one_failure_rolls_back_every_op_and_reports_all() {
        let mut state = with_n1();
        let before = state.catalog.clone();
        let errors = whats(run(
            &mut state,
            2,
            vec![
                TxnOp::Kv(KvOp::Set {
                    key: "k".into(),
                    value: Vec::new(),
                    flags: 0,
                }),
                // CAS 0 means "create": n1 exists.
                TxnOp::Node {
                    verb: CatalogVerb::Cas,
                    node: node("n1", 0),
                },
                TxnOp::Node {
                    verb: CatalogVerb::Delete,
                    node: node("n1", 0),
                },
                TxnOp::Service {
                    verb: CatalogVerb::Set,
                    node: "ghost".into(),
                    service: service("w1", 0),
                },
                TxnOp::Node {
                    verb: CatalogVerb::DeleteCas,
                    node: node("n2", 1),
                },
            ],
        ));
        assert_eq!(
            errors,
            [
                (1, "failed to set node \"n1\", index is stale".to_string()),
                (3, "Missing node registration".to_string()),
                (
                    4,
                    "failed to delete node \"n2\", index is stale".to_string()
                ),
            ]
        );
        assert_eq!(state.catalog, before, "the node delete was rolled back");
        assert!(state.kv_get("k").0.is_none(), "the KV set was rolled back");
    }

    #[test]
    fn cas_and_delete_cas_follow_the_modify_index() {
        let mut state = State::new();
        run(
            &mut state,
            1,
            vec![TxnOp::Node {
                verb: CatalogVerb::Cas,
                node: node("n1", 0),
            }],
        );
        let stale = |verb| TxnOp::Node {
            verb,
            node: node("n1", 5),
        };
        assert_eq!(
            whats(run(&mut state, 2, vec![stale(CatalogVerb::Cas)])).len(),
            1
        );
        assert_eq!(
            whats(run(&mut state, 3, vec![stale(CatalogVerb::DeleteCas)])).len(),
            1
        );
        let outcome = run(
            &mut state,
            4,
            vec![TxnOp::Node {
                verb: CatalogVerb::DeleteCas,
                node: node("n1", 1),
            }],
        );
        assert_eq!(outcome, TxnOutcome::Committed(Vec::new()));
        assert!(state.catalog.node("n1").is_none());
    }

    #[test]
    fn session_delete_destroys_and_reads_need_no_log() {
        let mut state = with_n1();
        let created = state
            .apply(
                2,
                1_000,
                Command::SessionCreate(SessionRequest {
                    id: "s1".into(),
                    name: String::new(),
                    node: "n1".into(),
                    node_checks: None,
                    service_checks: Vec::new(),
                    lock_delay_ns: None,
                    behavior: crate::discovery::server::state::session::SessionBehavior::Release,
                    ttl: String::new(),
                    ttl_ns: 0,
                }),
            )
            .unwrap();
        assert!(matches!(created, Outcome::SessionCreated(_)));
        let get = TxnOp::Node {
            verb: CatalogVerb::Get,
            node: node("n1", 0),
        };
        let (read, index) = state.txn_read(std::slice::from_ref(&get)).unwrap();
        assert!(matches!(&read, TxnOutcome::Committed(r) if r.len() == 1));
        assert!(index >= 1);
        let delete = TxnOp::SessionDelete { id: "s1".into() };
        assert!(state.txn_read(&[get, delete.clone()]).is_none());
        run(&mut state, 3, vec![delete]);
        assert!(state.session_info("s1").0.is_none());
    }
}
