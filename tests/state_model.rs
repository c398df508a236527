//! Property tests of the discovery state machine against plain-map models.
//! KV against a `BTreeMap`: values, Create/ModifyIndex, cas outcomes, and
//! that blocking indexes never go backwards (deletes, delete-tree and
//! tombstone reaping included). The catalog against a model that answers
//! every read by scanning every node: registrations (case variants of
//! names, tags, node and service checks), deregistrations and check
//! updates, with every read, blocking index and session effect compared
//! after each write. Both: snapshot/restore equivalence.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};

use pilotfish::discovery::server::state::catalog::{
    Catalog, CatalogEffects, Deregistration, Node, NodeServices, Registration, Service,
    ServiceEntry, ServiceInstance,
};
use pilotfish::discovery::server::state::checks::{CheckStatus, HealthCheck, StatusFilter};
use pilotfish::discovery::server::state::{Command, Outcome, Snapshot, State, StateError};
use proptest::prelude::*;

const KEYS: &[&str] = &["a", "a/b", "a/c", "a/b/d", "ab", "b", "b/x"];
const PREFIXES: &[&str] = &["", "a", "a/", "a/b", "b", "c"];

#[derive(Debug, Clone)]
enum Op {
    Set(usize, u8, u64),
    /// cas with: 0 = create-only, 1 = the key's current ModifyIndex, 2 = a wrong index
    Cas(usize, u8, u8),
    Delete(usize),
    DeleteCas(usize, bool),
    DeleteTree(usize),
    Reap(u64),
    Get(usize),
    List(usize),
}

fn op() -> impl Strategy<Value = Op> {
    let k = 0..KEYS.len();
    let p = 0..PREFIXES.len();
    prop_oneof![
        4 => (k.clone(), 0u8..3, 0u64..3).prop_map(|(k, v, f)| Op::Set(k, v, f)),
        3 => (k.clone(), 0u8..3, 0u8..3).prop_map(|(k, v, c)| Op::Cas(k, v, c)),
        2 => k.clone().prop_map(Op::Delete),
        2 => (k.clone(), any::<bool>()).prop_map(|(k, right)| Op::DeleteCas(k, right)),
        1 => p.clone().prop_map(Op::DeleteTree),
        1 => (0u64..40).prop_map(Op::Reap),
        2 => k.prop_map(Op::Get),
        2 => p.prop_map(Op::List),
    ]
}

#[derive(Debug, Clone, PartialEq)]
struct ModelEntry {
    value: Vec<u8>,
    flags: u64,
    create: u64,
    modify: u64,
}

#[derive(Default)]
struct Model {
    map: BTreeMap<String, ModelEntry>,
}

impl Model {
    /// Consul's set: CreateIndex kept, an identical write is a no-op.
    fn set(&mut self, idx: u64, key: &str, value: Vec<u8>, flags: u64) {
        match self.map.get_mut(key) {
            Some(e) if e.value == value && e.flags == flags => {}
            Some(e) => {
                e.value = value;
                e.flags = flags;
                e.modify = idx;
            }
            None => {
                self.map.insert(
                    key.to_string(),
                    ModelEntry {
                        value,
                        flags,
                        create: idx,
                        modify: idx,
                    },
                );
            }
        }
    }
}

fn value(v: u8) -> Vec<u8> {
    vec![v; v as usize]
}

/// Apply one op to both the state and the model, checking the outcome.
fn step(state: &mut State, model: &mut Model, idx: &mut u64, op: &Op) -> Result<(), TestCaseError> {
    let mut write = |state: &mut State, cmd: Command| {
        *idx += 1;
        state.apply(*idx, 0, cmd)
    };
    match op {
        Op::Set(k, v, f) => {
            let key = KEYS[*k];
            let r = write(
                state,
                Command::KvSet {
                    key: key.into(),
                    value: value(*v),
                    flags: *f,
                },
            );
            prop_assert_eq!(r, Ok(Outcome::Bool(true)));
            model.set(*idx, key, value(*v), *f);
        }
        Op::Cas(k, v, c) => {
            let key = KEYS[*k];
            let current = model.map.get(key).map(|e| e.modify);
            let index = match c {
                0 => 0,
                1 => current.unwrap_or(1),
                _ => current.map_or(1_000, |m| m + 1_000),
            };
            let expect = match current {
                None => index == 0,
                Some(m) => index != 0 && index == m,
            };
            let r = write(
                state,
                Command::KvCas {
                    key: key.into(),
                    value: value(*v),
                    flags: 0,
                    index,
                },
            );
            prop_assert_eq!(r, Ok(Outcome::Bool(expect)));
            if expect {
                model.set(*idx, key, value(*v), 0);
            }
        }
        Op::Delete(k) => {
            let key = KEYS[*k];
            let r = write(state, Command::KvDelete { key: key.into() });
            prop_assert_eq!(r, Ok(Outcome::Bool(true)));
            model.map.remove(key);
        }
        Op::DeleteCas(k, right) => {
            let key = KEYS[*k];
            let current = model.map.get(key).map(|e| e.modify);
            let index = match (current, right) {
                (Some(m), true) => m,
                (Some(m), false) => m + 1_000,
                (None, _) => 7,
            };
            // Consul: an absent key + cas is `true`.
            let expect = current.is_none() || *right;
            let r = write(
                state,
                Command::KvDeleteCas {
                    key: key.into(),
                    index,
                },
            );
            prop_assert_eq!(r, Ok(Outcome::Bool(expect)));
            if expect {
                model.map.remove(key);
            }
        }
        Op::DeleteTree(p) => {
            let prefix = PREFIXES[*p];
            let r = write(
                state,
                Command::KvDeleteTree {
                    prefix: prefix.into(),
                },
            );
            prop_assert_eq!(r, Ok(Outcome::Bool(true)));
            model.map.retain(|k, _| !k.starts_with(prefix));
        }
        Op::Reap(up_to) => {
            let r = write(state, Command::ReapTombstones { up_to: *up_to });
            prop_assert_eq!(r, Ok(Outcome::Done));
        }
        Op::Get(k) => {
            let key = KEYS[*k];
            let (got, index) = state.kv_get(key);
            match (got, model.map.get(key)) {
                (None, None) => {}
                (Some(e), Some(m)) => {
                    prop_assert_eq!(&e.value, &m.value);
                    prop_assert_eq!(e.flags, m.flags);
                    prop_assert_eq!(e.create_index, m.create);
                    prop_assert_eq!(e.modify_index, m.modify);
                    prop_assert_eq!(index, m.modify, "a present key answers its ModifyIndex");
                }
                (got, want) => prop_assert!(false, "get {key}: state {got:?} model {want:?}"),
            }
        }
        Op::List(p) => {
            let prefix = PREFIXES[*p];
            let (list, _) = state.kv_list(prefix);
            let got: Vec<(String, Vec<u8>, u64)> = list
                .iter()
                .map(|e| (e.key.clone(), e.value.clone(), e.modify_index))
                .collect();
            let want: Vec<(String, Vec<u8>, u64)> = model
                .map
                .iter()
                .filter(|(k, _)| k.starts_with(prefix))
                .map(|(k, e)| (k.clone(), e.value.clone(), e.modify))
                .collect();
            prop_assert_eq!(got, want);
        }
    }
    Ok(())
}

/// Every KV blocking index a client could be holding.
fn probes(state: &State) -> Vec<u64> {
    KEYS.iter()
        .map(|k| state.kv_key_index(k))
        .chain(PREFIXES.iter().map(|p| state.kv_prefix_index(p)))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn kv_matches_model_and_indexes_never_decrease(ops in prop::collection::vec(op(), 1..80)) {
        let mut state = State::new();
        let mut model = Model::default();
        let mut idx = 0;
        let mut last = probes(&state);
        prop_assert!(last.iter().all(|i| *i >= 1), "indexes are never 0");
        for op in &ops {
            step(&mut state, &mut model, &mut idx, op)?;
            let now = probes(&state);
            for (n, (before, after)) in last.iter().zip(&now).enumerate() {
                prop_assert!(after >= before, "probe {} went backwards: {} -> {} after {:?}", n, before, after, op);
            }
            // A prefix index covers every key under it.
            for p in PREFIXES {
                for k in KEYS.iter().filter(|k| k.starts_with(p)) {
                    prop_assert!(state.kv_prefix_index(p) >= state.kv_key_index(k));
                }
            }
            last = now;
        }
        let (all, _) = state.kv_list("");
        prop_assert_eq!(all.len(), model.map.len());
    }

    #[test]
    fn snapshot_restore_is_equivalent(
        before in prop::collection::vec(op(), 0..40),
        after in prop::collection::vec(op(), 0..40),
    ) {
        let mut state = State::new();
        let mut model = Model::default();
        let mut idx = 0;
        for op in &before {
            step(&mut state, &mut model, &mut idx, op)?;
        }
        let mut restored = round_trip(&state);
        prop_assert_eq!(&restored, &state);
        prop_assert_eq!(probes(&restored), probes(&state));
        // Both continue identically.
        let mut model2 = Model { map: model.map.clone() };
        let mut idx2 = idx;
        for op in &after {
            step(&mut state, &mut model, &mut idx, op)?;
            step(&mut restored, &mut model2, &mut idx2, op)?;
        }
        prop_assert_eq!(&restored, &state);
    }
}

// ----- catalog -----

const NODES: &[&str] = &["n1", "n2", "n3"];
const ADDRESSES: &[&str] = &["10.0.0.1", "10.0.0.2", ""];
/// `""` registers a service under its name as ID.
const SERVICE_IDS: &[&str] = &["a", "b", "web", ""];
const SERVICE_NAMES: &[&str] = &["web", "Web", "WEB", "db", "api"];
const TAGS: &[&str] = &["primary", "Primary", "v1", "V1", "x"];
const CHECK_IDS: &[&str] = &["c1", "c2", "c3", "serfHealth"];
/// The service a check is for (`""`: the node); also what deregistrations
/// name.
const OWNERS: &[&str] = &["", "a", "b", "web", "db"];
const STATUSES: &[CheckStatus] = &[
    CheckStatus::Passing,
    CheckStatus::Warning,
    CheckStatus::Critical,
];
const OUTPUTS: &[&str] = &["", "ok"];
const QUERY_NAMES: &[&str] = &["web", "WEB", "db", "Db", "api", "nope"];
const QUERY_TAGS: &[&[&str]] = &[
    &[],
    &["primary"],
    &["V1"],
    &["PRIMARY", "v1"],
    &["x", "nope"],
];
const FILTERS: &[StatusFilter] = &[
    StatusFilter::Any,
    StatusFilter::Only(CheckStatus::Passing),
    StatusFilter::Only(CheckStatus::Warning),
    StatusFilter::Only(CheckStatus::Critical),
];

/// Indexes into the universe above.
#[derive(Debug, Clone)]
enum CatalogOp {
    Register {
        node: usize,
        address: usize,
        skip_node_update: bool,
        /// (ID, name, tags, port)
        service: Option<(usize, usize, Vec<usize>, u16)>,
        /// (check ID, owner, status, output)
        checks: Vec<(usize, usize, usize, usize)>,
    },
    Deregister {
        node: usize,
        service: Option<usize>,
        check: Option<usize>,
    },
    UpdateCheck {
        node: usize,
        check: usize,
        status: usize,
        output: usize,
    },
}

fn catalog_op() -> impl Strategy<Value = CatalogOp> {
    let node = 0..NODES.len();
    let service = (
        0..SERVICE_IDS.len(),
        0..SERVICE_NAMES.len(),
        prop::collection::vec(0..TAGS.len(), 0..3),
        80u16..82,
    );
    let check = (
        0..CHECK_IDS.len(),
        0..OWNERS.len(),
        0..STATUSES.len(),
        0..OUTPUTS.len(),
    );
    prop_oneof![
        6 => (
            node.clone(),
            0..ADDRESSES.len(),
            any::<bool>(),
            prop::option::of(service),
            prop::collection::vec(check, 0..3),
        )
            .prop_map(|(node, address, skip_node_update, service, checks)| {
                CatalogOp::Register { node, address, skip_node_update, service, checks }
            }),
        2 => (
            node.clone(),
            prop::option::weighted(0.5, 0..OWNERS.len()),
            prop::option::weighted(0.3, 0..CHECK_IDS.len()),
        )
            .prop_map(|(node, service, check)| CatalogOp::Deregister { node, service, check }),
        3 => (node, 0..CHECK_IDS.len(), 0..STATUSES.len(), 0..OUTPUTS.len())
            .prop_map(|(node, check, status, output)| {
                CatalogOp::UpdateCheck { node, check, status, output }
            }),
    ]
}

impl CatalogOp {
    fn command(&self) -> Command {
        match self {
            CatalogOp::Register {
                node,
                address,
                skip_node_update,
                service,
                checks,
            } => Command::Register(Registration {
                skip_node_update: *skip_node_update,
                service: service.as_ref().map(|(id, name, tags, port)| Service {
                    tags: tags.iter().map(|t| TAGS[*t].to_string()).collect(),
                    ..Service::new(SERVICE_IDS[*id], SERVICE_NAMES[*name], *port)
                }),
                checks: checks
                    .iter()
                    .map(|(id, owner, status, output)| HealthCheck {
                        service_id: OWNERS[*owner].to_string(),
                        output: OUTPUTS[*output].to_string(),
                        ..HealthCheck::new(NODES[*node], CHECK_IDS[*id], "c", STATUSES[*status])
                    })
                    .collect(),
                ..registration(NODES[*node], ADDRESSES[*address])
            }),
            CatalogOp::Deregister {
                node,
                service,
                check,
            } => Command::Deregister(Deregistration {
                node: NODES[*node].to_string(),
                service_id: service.map(|s| OWNERS[s].to_string()),
                check_id: check.map(|c| CHECK_IDS[c].to_string()),
            }),
            CatalogOp::UpdateCheck {
                node,
                check,
                status,
                output,
            } => Command::UpdateCheck {
                node: NODES[*node].to_string(),
                check_id: CHECK_IDS[*check].to_string(),
                status: STATUSES[*status],
                output: OUTPUTS[*output].to_string(),
            },
        }
    }
}

/// A registration of `node` at `address`, nothing else.
fn registration(node: &str, address: &str) -> Registration {
    Registration {
        node: node.to_string(),
        node_id: String::new(),
        address: address.to_string(),
        tagged_addresses: BTreeMap::new(),
        node_meta: BTreeMap::new(),
        skip_node_update: false,
        service: None,
        checks: Vec::new(),
    }
}

/// One node as the model keeps it: checks as written, undecorated.
#[derive(Debug, Clone)]
struct ModelNode {
    node: Node,
    services: BTreeMap<String, Service>,
    checks: BTreeMap<String, HealthCheck>,
}

/// The catalog as plain maps; every answer is a scan of everything.
#[derive(Debug, Clone, Default)]
struct CatalogModel {
    nodes: BTreeMap<String, ModelNode>,
    table: u64,
    service_indexes: BTreeMap<String, u64>,
}

impl CatalogModel {
    fn lower_names(&self, node: &str) -> BTreeSet<String> {
        self.nodes.get(node).map_or_else(BTreeSet::new, |n| {
            n.services.values().map(|s| s.name.to_lowercase()).collect()
        })
    }

    /// The index rules: the table index moves with every change; a
    /// touched name takes the write's index while it has instances.
    fn bump(&mut self, idx: u64, touched: BTreeSet<String>) {
        self.table = idx;
        for name in touched {
            let alive = self
                .nodes
                .values()
                .any(|n| n.services.values().any(|s| s.name.to_lowercase() == name));
            if alive {
                self.service_indexes.insert(name, idx);
            } else {
                self.service_indexes.remove(&name);
            }
        }
    }

    fn register(&mut self, idx: u64, reg: Registration) -> Result<CatalogEffects, StateError> {
        let exists = self.nodes.contains_key(&reg.node);
        if reg.address.is_empty() && !(reg.skip_node_update && exists) {
            return Err(StateError::MissingAddress);
        }
        let mut service = reg.service;
        if let Some(s) = &mut service {
            if s.id.is_empty() {
                s.id = s.name.clone();
            }
        }
        let stored: Vec<String> = self
            .nodes
            .get(&reg.node)
            .map(|n| n.services.keys().cloned().collect())
            .unwrap_or_default();
        let owner_known = |owner: &String| {
            owner.is_empty()
                || service.as_ref().map(|s| &s.id) == Some(owner)
                || stored.contains(owner)
        };
        if !reg.checks.iter().all(|c| owner_known(&c.service_id)) {
            return Err(StateError::MissingServiceRegistration);
        }
        let wanted = Node {
            name: reg.node.clone(),
            id: reg.node_id,
            address: reg.address,
            tagged_addresses: reg.tagged_addresses,
            meta: reg.node_meta,
            create_index: idx,
            modify_index: idx,
        };
        let mut changed = false;
        let mut node_level = false;
        let n = self.nodes.entry(reg.node.clone()).or_insert_with(|| {
            let mut serf = HealthCheck::serf_health(&reg.node);
            (serf.create_index, serf.modify_index) = (idx, idx);
            node_level = true;
            ModelNode {
                node: wanted.clone(),
                services: BTreeMap::new(),
                checks: BTreeMap::from([(serf.check_id.clone(), serf)]),
            }
        });
        let same_node = Node {
            create_index: n.node.create_index,
            modify_index: n.node.modify_index,
            ..wanted.clone()
        } == n.node;
        if !node_level && !reg.skip_node_update && !same_node {
            n.node = Node {
                create_index: n.node.create_index,
                ..wanted
            };
            node_level = true;
        }
        let mut touched = BTreeSet::new();
        if let Some(mut s) = service {
            let old = n.services.get(&s.id).cloned();
            let unindexed = |s: &Service| Service {
                create_index: 0,
                modify_index: 0,
                ..s.clone()
            };
            if old.as_ref().map(unindexed) != Some(unindexed(&s)) {
                touched.extend(old.as_ref().map(|o| o.name.to_lowercase()));
                touched.insert(s.name.to_lowercase());
                s.create_index = old.map_or(idx, |o| o.create_index);
                s.modify_index = idx;
                n.services.insert(s.id.clone(), s);
                changed = true;
            }
        }
        let mut effects = CatalogEffects::default();
        for mut c in reg.checks {
            c.node = reg.node.clone();
            let old = n.checks.get(&c.check_id);
            let unindexed = |c: &HealthCheck| HealthCheck {
                create_index: 0,
                modify_index: 0,
                ..c.clone()
            };
            if old.map(unindexed) == Some(unindexed(&c)) {
                continue;
            }
            c.create_index = old.map_or(idx, |o| o.create_index);
            c.modify_index = idx;
            changed = true;
            if c.status == CheckStatus::Critical {
                effects
                    .dead_checks
                    .push((c.node.clone(), c.check_id.clone()));
            }
            match n.services.get(&c.service_id) {
                _ if c.service_id.is_empty() => node_level = true,
                Some(s) => {
                    touched.insert(s.name.to_lowercase());
                }
                None => {}
            }
            n.checks.insert(c.check_id.clone(), c);
        }
        if node_level {
            touched.extend(self.lower_names(&reg.node));
        }
        if changed || node_level {
            self.bump(idx, touched);
        }
        Ok(effects)
    }

    /// The names a change to `check` of `node` touches: its service's, or
    /// every name on the node for a node check (or one whose service is gone).
    fn touched_by_check(&self, node: &str, check: &HealthCheck) -> BTreeSet<String> {
        let n = &self.nodes[node];
        match n.services.get(&check.service_id) {
            Some(s) if !check.service_id.is_empty() => BTreeSet::from([s.name.to_lowercase()]),
            _ => self.lower_names(node),
        }
    }

    fn deregister(&mut self, idx: u64, d: &Deregistration) -> CatalogEffects {
        let mut effects = CatalogEffects::default();
        if !self.nodes.contains_key(&d.node) {
            return effects;
        }
        if d.service_id.is_none() && d.check_id.is_none() {
            let touched = self.lower_names(&d.node);
            self.nodes.remove(&d.node);
            effects.dead_nodes.push(d.node.clone());
            self.bump(idx, touched);
            return effects;
        }
        let mut touched = BTreeSet::new();
        let mut changed = false;
        let node = d.node.as_str();
        if let Some(sid) = &d.service_id {
            let n = self.nodes.get_mut(node).unwrap();
            if let Some(s) = n.services.remove(sid) {
                changed = true;
                touched.insert(s.name.to_lowercase());
                let gone: Vec<String> = n
                    .checks
                    .values()
                    .filter(|c| &c.service_id == sid)
                    .map(|c| c.check_id.clone())
                    .collect();
                for id in gone {
                    n.checks.remove(&id);
                    effects.dead_checks.push((node.to_string(), id));
                }
            }
        }
        if let Some(cid) = &d.check_id {
            if let Some(c) = self.nodes.get_mut(node).unwrap().checks.remove(cid) {
                changed = true;
                touched.extend(self.touched_by_check(node, &c));
                effects.dead_checks.push((node.to_string(), c.check_id));
            }
        }
        if changed {
            self.bump(idx, touched);
        }
        effects
    }

    fn update_check(
        &mut self,
        idx: u64,
        node: &str,
        check_id: &str,
        status: CheckStatus,
        output: &str,
    ) -> Result<CatalogEffects, StateError> {
        let unknown = || StateError::UnknownCheck(check_id.to_string());
        let c = self
            .nodes
            .get_mut(node)
            .ok_or_else(unknown)?
            .checks
            .get_mut(check_id)
            .ok_or_else(unknown)?;
        let mut effects = CatalogEffects::default();
        if c.status == status && c.output == output {
            return Ok(effects);
        }
        (c.status, c.output, c.modify_index) = (status, output.to_string(), idx);
        if status == CheckStatus::Critical {
            effects
                .dead_checks
                .push((node.to_string(), check_id.to_string()));
        }
        let c = c.clone();
        let touched = self.touched_by_check(node, &c);
        self.bump(idx, touched);
        Ok(effects)
    }

    fn apply(&mut self, idx: u64, cmd: Command) -> Result<CatalogEffects, StateError> {
        match cmd {
            Command::Register(reg) => self.register(idx, reg),
            Command::Deregister(d) => Ok(self.deregister(idx, &d)),
            Command::UpdateCheck {
                node,
                check_id,
                status,
                output,
            } => self.update_check(idx, &node, &check_id, status, &output),
            other => unreachable!("not a catalog command: {other:?}"),
        }
    }

    // ----- answers, by scanning -----

    /// The check as reads show it: with its service's name and tags.
    fn decorated(n: &ModelNode, c: &HealthCheck) -> HealthCheck {
        let service = n
            .services
            .get(&c.service_id)
            .filter(|_| !c.service_id.is_empty());
        HealthCheck {
            service_name: service.map(|s| s.name.clone()).unwrap_or_default(),
            service_tags: service.map(|s| s.tags.clone()).unwrap_or_default(),
            ..c.clone()
        }
    }

    fn rows<'a>(
        &'a self,
        name: &'a str,
        tags: &'a [String],
    ) -> impl Iterator<Item = (&'a ModelNode, &'a Service)> {
        self.nodes.values().flat_map(move |n| {
            n.services
                .values()
                .filter(move |s| {
                    s.name.eq_ignore_ascii_case(name)
                        && tags
                            .iter()
                            .all(|w| s.tags.iter().any(|t| t.eq_ignore_ascii_case(w)))
                })
                .map(move |s| (n, s))
        })
    }

    fn health(&self, name: &str, tags: &[String], passing_only: bool) -> Vec<ServiceEntry> {
        let mut entries = Vec::new();
        for (n, s) in self.rows(name, tags) {
            let node_checks = n.checks.values().filter(|c| c.service_id.is_empty());
            let own = n.checks.values().filter(|c| c.service_id == s.id);
            let checks: Vec<HealthCheck> = node_checks
                .chain(own)
                .map(|c| Self::decorated(n, c))
                .collect();
            if passing_only && checks.iter().any(|c| c.status != CheckStatus::Passing) {
                continue;
            }
            entries.push(ServiceEntry {
                node: n.node.clone(),
                service: s.clone(),
                checks,
            });
        }
        entries
    }

    fn answers(&self) -> Vec<(String, Answer)> {
        let mut services: BTreeMap<String, (String, BTreeSet<String>)> = BTreeMap::new();
        for s in self.nodes.values().flat_map(|n| n.services.values()) {
            let slot = services
                .entry(s.name.to_lowercase())
                .or_insert_with(|| (s.name.clone(), BTreeSet::new()));
            slot.1.extend(s.tags.iter().cloned());
        }
        let all_checks = || {
            self.nodes
                .values()
                .flat_map(|n| n.checks.values().map(move |c| (n, c)))
        };
        let table = self.table.max(1);
        let mut out = vec![
            ("table index".to_string(), Answer::Index(table)),
            (
                "services".to_string(),
                Answer::Services(
                    services
                        .into_values()
                        .map(|(name, tags)| (name, tags.into_iter().collect()))
                        .collect(),
                ),
            ),
            (
                "nodes".to_string(),
                Answer::Nodes(self.nodes.values().map(|n| n.node.clone()).collect()),
            ),
        ];
        for node in NODES.iter().chain(&["ghost"]) {
            let n = self.nodes.get(*node);
            out.push((
                format!("node {node}"),
                Answer::Node(n.map(|n| NodeServices {
                    node: n.node.clone(),
                    services: n.services.values().cloned().collect(),
                })),
            ));
            out.push((
                format!("node checks {node}"),
                Answer::Checks(n.map_or_else(Vec::new, |n| {
                    n.checks.values().map(|c| Self::decorated(n, c)).collect()
                })),
            ));
        }
        for f in FILTERS {
            out.push((
                format!("state {f:?}"),
                Answer::Checks(
                    all_checks()
                        .filter(|(_, c)| f.matches(c.status))
                        .map(|(n, c)| Self::decorated(n, c))
                        .collect(),
                ),
            ));
        }
        for name in QUERY_NAMES {
            let index = self.service_indexes.get(&name.to_lowercase()).copied();
            out.push((
                format!("index {name}"),
                Answer::Index(index.unwrap_or(table).max(1)),
            ));
            let checks = all_checks().filter(|(n, c)| {
                n.services
                    .get(&c.service_id)
                    .is_some_and(|s| !c.service_id.is_empty() && s.name.eq_ignore_ascii_case(name))
            });
            out.push((
                format!("checks {name}"),
                Answer::Checks(checks.map(|(n, c)| Self::decorated(n, c)).collect()),
            ));
            for tags in QUERY_TAGS {
                let tags: Vec<String> = tags.iter().map(|t| t.to_string()).collect();
                let instances = self.rows(name, &tags).map(|(n, s)| ServiceInstance {
                    node: n.node.clone(),
                    service: s.clone(),
                });
                out.push((
                    format!("instances {name} {tags:?}"),
                    Answer::Instances(instances.collect()),
                ));
                for passing in [false, true] {
                    out.push((
                        format!("health {name} {tags:?} passing={passing}"),
                        Answer::Entries(self.health(name, &tags, passing)),
                    ));
                }
            }
        }
        out
    }
}

/// One catalog read's answer, whatever its shape.
#[derive(Debug, PartialEq)]
enum Answer {
    Index(u64),
    Services(BTreeMap<String, Vec<String>>),
    Nodes(Vec<Node>),
    Node(Option<NodeServices>),
    Checks(Vec<HealthCheck>),
    Instances(Vec<ServiceInstance>),
    Entries(Vec<ServiceEntry>),
}

/// The same reads as [`CatalogModel::answers`], from the state.
fn catalog_answers(state: &State) -> Vec<(String, Answer)> {
    let mut out = vec![
        (
            "table index".to_string(),
            Answer::Index(state.catalog_index()),
        ),
        (
            "services".to_string(),
            Answer::Services(state.catalog_services().0),
        ),
        (
            "nodes".to_string(),
            Answer::Nodes(state.catalog_nodes().0.into_iter().cloned().collect()),
        ),
    ];
    for node in NODES.iter().chain(&["ghost"]) {
        out.push((
            format!("node {node}"),
            Answer::Node(state.catalog_node(node).0),
        ));
        out.push((
            format!("node checks {node}"),
            Answer::Checks(state.health_node(node).0),
        ));
    }
    for f in FILTERS {
        out.push((
            format!("state {f:?}"),
            Answer::Checks(state.health_state(*f).0),
        ));
    }
    for name in QUERY_NAMES {
        out.push((
            format!("index {name}"),
            Answer::Index(state.service_index(name)),
        ));
        out.push((
            format!("checks {name}"),
            Answer::Checks(state.health_service_checks(name).0),
        ));
        for tags in QUERY_TAGS {
            let tags: Vec<String> = tags.iter().map(|t| t.to_string()).collect();
            out.push((
                format!("instances {name} {tags:?}"),
                Answer::Instances(state.catalog_service(name, &tags).0),
            ));
            for passing in [false, true] {
                out.push((
                    format!("health {name} {tags:?} passing={passing}"),
                    Answer::Entries(state.health_service(name, &tags, passing).0),
                ));
            }
        }
    }
    out
}

fn same_answers(
    got: Vec<(String, Answer)>,
    want: Vec<(String, Answer)>,
    after: &dyn std::fmt::Debug,
) -> Result<(), TestCaseError> {
    prop_assert_eq!(got.len(), want.len());
    for ((label, got), (_, want)) in got.into_iter().zip(want) {
        prop_assert_eq!(got, want, "{} after {:?}", label, after);
    }
    Ok(())
}

/// A state, a bare catalog (whose effects the state only shows through
/// sessions) and the model, driven by the same ops.
#[derive(Default)]
struct CatalogRun {
    state: State,
    catalog: Catalog,
    model: CatalogModel,
    idx: u64,
}

impl CatalogRun {
    /// Apply one op to all three; compare outcomes, effects and every read.
    fn step(&mut self, op: &CatalogOp) -> Result<(), TestCaseError> {
        self.idx += 1;
        let idx = self.idx;
        let want = self.model.apply(idx, op.command());
        let effects = match op.command() {
            Command::Register(reg) => self.catalog.register(idx, reg),
            Command::Deregister(d) => Ok(self.catalog.deregister(idx, &d)),
            Command::UpdateCheck {
                node,
                check_id,
                status,
                output,
            } => self
                .catalog
                .update_check(idx, &node, &check_id, status, output),
            other => unreachable!("not a catalog command: {other:?}"),
        };
        prop_assert_eq!(&effects, &want, "effects of {:?}", op);
        let outcome = self.state.apply(idx, 0, op.command());
        prop_assert_eq!(outcome, want.map(|_| Outcome::Done), "outcome of {:?}", op);
        same_answers(catalog_answers(&self.state), self.model.answers(), op)
    }

    fn steps(&mut self, ops: &[CatalogOp]) -> Result<(), TestCaseError> {
        ops.iter().try_for_each(|op| self.step(op))
    }

    /// The same run after its state and catalog went through a snapshot.
    fn restored(&self) -> CatalogRun {
        let json = serde_json::to_vec(&self.catalog).unwrap();
        CatalogRun {
            state: round_trip(&self.state),
            catalog: serde_json::from_slice(&json).unwrap(),
            model: self.model.clone(),
            idx: self.idx,
        }
    }
}

/// Serialize, deserialize and restore, as a raft snapshot does; the
/// restored state saves byte for byte as the original did.
fn round_trip(state: &State) -> State {
    let json = serde_json::to_vec(&state.snapshot()).unwrap();
    let snapshot: Snapshot = serde_json::from_slice(&json).unwrap();
    let restored = State::restore(snapshot);
    assert_eq!(serde_json::to_vec(&restored.snapshot()).unwrap(), json);
    restored
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn catalog_matches_scanning_model(ops in prop::collection::vec(catalog_op(), 1..60)) {
        CatalogRun::default().steps(&ops)?;
    }

    #[test]
    fn catalog_snapshot_restore_is_equivalent(
        before in prop::collection::vec(catalog_op(), 0..40),
        after in prop::collection::vec(catalog_op(), 0..20),
    ) {
        let mut run = CatalogRun::default();
        run.steps(&before)?;
        let mut restored = run.restored();
        same_answers(catalog_answers(&restored.state), run.model.answers(), &"restore")?;
        // Both continue identically.
        for op in &after {
            run.step(op)?;
            restored.step(op)?;
        }
        prop_assert_eq!(&restored.state, &run.state);
    }
}
