//! The catalog: nodes, their services and their checks, with Consul's catalog
//! register/deregister semantics, check status updates, and the reads behind
//! `/v1/catalog/*` and `/v1/health/*`.
//!
//! Index rules (consul-wire.md §3.2): every catalog change raises the catalog
//! table index; a change that touches a service's instances, their checks, or
//! the node-level data of a node hosting it (node fields, node checks) also
//! sets that service name's index. A service name with no instance left loses
//! its entry and reads fall back to the table index, which is never lower, so
//! per-service indexes never go backwards and a write to service A never moves
//! the index of service B. Service names compare case-insensitively: indexes
//! and `catalog/services` group names by their Unicode lower case, reads
//! match names and tags ASCII-case-insensitively.
//!
//! Writes whose content equals what is stored change nothing (no index bump),
//! so a TTL heartbeat that repeats the same status and output wakes nobody.
//!
//! Besides the stored tables the catalog keeps lookups derived from them, as
//! Consul keeps memdb indexes: the instances of each service name (and of
//! each of its tags, and the union of their tags), the service names and the
//! checks of each node by the service they are for, and the checks in each
//! status. A write updates what it changes, a read walks what it answers,
//! each at O(log n) a row: nothing scans the catalog but `catalog/nodes` and
//! `health/state/any`, whose answer is all of it. The lookups are never
//! serialized: loading a catalog rebuilds them, so the snapshot layout is
//! the tables' alone.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::checks::{CheckStatus, HealthCheck, StatusFilter};
use super::session::SERF_HEALTH;
use super::StateError;
use crate::discovery::api::catalog::{check_meta, META_MAX_PAIRS};

/// A catalog node. Indexes are ignored on input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    pub name: String,
    /// Node ID (uuid text; may be empty for externally registered nodes).
    pub id: String,
    pub address: String,
    pub tagged_addresses: BTreeMap<String, String>,
    pub meta: BTreeMap<String, String>,
    pub create_index: u64,
    pub modify_index: u64,
}

/// DNS SRV weights (`Weights`); Consul's default is 1/1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Weights {
    pub passing: u32,
    pub warning: u32,
}

impl Default for Weights {
    fn default() -> Self {
        Weights {
            passing: 1,
            warning: 1,
        }
    }
}

/// A service instance on a node (`AgentService`). Indexes are ignored on input.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Service {
    /// Defaults to `name` when empty.
    pub id: String,
    pub name: String,
    pub tags: Vec<String>,
    /// `""` = use the node address.
    pub address: String,
    pub port: u16,
    pub meta: BTreeMap<String, String>,
    pub enable_tag_override: bool,
    pub weights: Weights,
    pub create_index: u64,
    pub modify_index: u64,
    /// The fields pilotfish keeps but does not act on; `None` when all are
    /// empty. Added later: absent in snapshots and log entries of earlier
    /// builds, left out of the JSON when `None`, so a catalog without them
    /// serializes as before. Boxed, as most services have none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extras: Option<Box<ServiceExtras>>,
}

/// A service's `Kind`, `TaggedAddresses`, `SocketPath`, `Proxy`,
/// `Connect.Native` and `Locality`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceExtras {
    /// `Kind`: `""` (a typical service), `connect-proxy`, `mesh-gateway`, ...
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub kind: String,
    /// `TaggedAddresses`: name → address and port.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tagged_addresses: BTreeMap<String, ServiceAddress>,
    /// `SocketPath`: a Unix socket instead of address and port.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub socket_path: String,
    /// `Proxy` as the JSON text of the wire's proxy object, `""` when none;
    /// kept opaque like a check's definition.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub proxy: String,
    /// `Connect.Native`.
    #[serde(default, skip_serializing_if = "is_false")]
    pub connect_native: bool,
    /// `Locality` (`Region`, `Zone`), `None` when not given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locality: Option<Locality>,
}

impl ServiceExtras {
    /// `None` when every field is empty, so a plain service stores none.
    pub fn boxed(self) -> Option<Box<ServiceExtras>> {
        (self != ServiceExtras::default()).then(|| Box::new(self))
    }
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// One of a service's `TaggedAddresses`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceAddress {
    pub address: String,
    pub port: u16,
}

/// A service's `Locality`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Locality {
    #[serde(default)]
    pub region: String,
    #[serde(default)]
    pub zone: String,
}

impl Service {
    /// An instance with the given identity and port and empty everything
    /// else (default weights).
    pub fn new(id: &str, name: &str, port: u16) -> Service {
        Service {
            id: id.to_string(),
            name: name.to_string(),
            tags: Vec::new(),
            address: String::new(),
            port,
            meta: BTreeMap::new(),
            enable_tag_override: false,
            weights: Weights::default(),
            ..Service::default()
        }
    }

    /// Equal but for the raft indexes.
    fn same_as(&self, o: &Service) -> bool {
        self.id == o.id
            && self.name == o.name
            && self.tags == o.tags
            && self.address == o.address
            && self.port == o.port
            && self.meta == o.meta
            && self.enable_tag_override == o.enable_tag_override
            && self.weights == o.weights
            && self.extras == o.extras
    }

    /// The extras, or all-empty ones.
    pub fn extras(&self) -> &ServiceExtras {
        static NONE: ServiceExtras = ServiceExtras {
            kind: String::new(),
            tagged_addresses: BTreeMap::new(),
            socket_path: String::new(),
            proxy: String::new(),
            connect_native: false,
            locality: None,
        };
        self.extras.as_deref().unwrap_or(&NONE)
    }

    /// Every wanted tag is present, case-insensitively (`?tag=` is an AND).
    fn has_tags(&self, wanted: &[String]) -> bool {
        wanted
            .iter()
            .all(|w| self.tags.iter().any(|t| t.eq_ignore_ascii_case(w)))
    }
}

/// `PUT /v1/catalog/register` (also what the agent's service/check
/// registrations become).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registration {
    pub node: String,
    pub node_id: String,
    pub address: String,
    pub tagged_addresses: BTreeMap<String, String>,
    pub node_meta: BTreeMap<String, String>,
    /// Leave an existing node's fields alone (address may then be empty).
    pub skip_node_update: bool,
    pub service: Option<Service>,
    /// `node` of each check is overwritten with the registration's node.
    pub checks: Vec<HealthCheck>,
}

/// `PUT /v1/catalog/deregister`: neither ID ⇒ the whole node; otherwise the
/// given service (with its checks) and/or check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deregistration {
    pub node: String,
    pub service_id: Option<String>,
    pub check_id: Option<String>,
}

/// One row of `/v1/catalog/service/<name>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceInstance {
    pub node: Node,
    pub service: Service,
}

/// One row of `/v1/health/service/<name>`: node checks first, then the
/// instance's own checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceEntry {
    pub node: Node,
    pub service: Service,
    pub checks: Vec<HealthCheck>,
}

/// `/v1/catalog/node/<name>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeServices {
    pub node: Node,
    pub services: Vec<Service>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct NodeRecord {
    node: Node,
    services: BTreeMap<String, Service>,
    checks: BTreeMap<String, HealthCheck>,
}

impl NodeRecord {
    /// A new node, with a passing `serfHealth` created with it.
    fn new(node: Node) -> NodeRecord {
        let mut serf = HealthCheck::serf_health(&node.name);
        serf.create_index = node.create_index;
        serf.modify_index = node.create_index;
        NodeRecord {
            node,
            services: BTreeMap::new(),
            checks: BTreeMap::from([(SERF_HEALTH.to_string(), serf)]),
        }
    }

    /// The check with its service name and tags filled in.
    fn decorate(&self, c: &HealthCheck) -> HealthCheck {
        let mut c = c.clone();
        match self.services.get(&c.service_id) {
            Some(s) if !c.service_id.is_empty() => {
                c.service_name = s.name.clone();
                c.service_tags = s.tags.clone();
            }
            _ => {
                c.service_name = String::new();
                c.service_tags = Vec::new();
            }
        }
        c
    }
}

/// What a catalog write means for sessions (State invalidates them).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct CatalogEffects {
    /// (node, check ID) now critical or gone: sessions watching them die.
    pub dead_checks: Vec<(String, String)>,
    /// Nodes that were deregistered: all their sessions die.
    pub dead_nodes: Vec<String>,
}

/// The catalog tables as stored: the snapshot layout.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Tables {
    nodes: BTreeMap<String, NodeRecord>,
    table_index: u64,
    /// lower-cased service name → last index touching it.
    service_indexes: BTreeMap<String, u64>,
}

/// (node, service ID) of one instance, or (node, check ID) of one check:
/// ordered as answers list them.
type RowKey = (String, String);

/// The instances of one (lower-cased) service name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct ServiceGroup {
    instances: BTreeSet<RowKey>,
    /// Tag as written → how many times the instances carry it (the
    /// `catalog/services` union).
    tags: BTreeMap<String, usize>,
    /// ASCII-lower-cased tag → the instances carrying it (`?tag=`).
    by_tag: BTreeMap<String, BTreeSet<RowKey>>,
}

/// What one node holds, by service name and by check owner.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct NodeLookups {
    /// Lower-cased service name → how many of the node's instances have it.
    names: BTreeMap<String, usize>,
    /// Service ID (`""` for node checks) → IDs of the checks naming it.
    checks: BTreeMap<String, BTreeSet<String>>,
}

/// Lookups derived from `Tables`, kept up to date by every write and
/// rebuilt when a catalog is loaded (see the module doc). Empty entries are
/// removed, so an updated catalog's lookups equal a rebuilt one's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Lookups {
    /// Lower-cased service name → its instances.
    services: BTreeMap<String, ServiceGroup>,
    nodes: BTreeMap<String, NodeLookups>,
    /// Status → (node, check ID) of the checks in it.
    by_status: BTreeMap<CheckStatus, BTreeSet<RowKey>>,
}

/// Count one more `key`.
fn count_up(counts: &mut BTreeMap<String, usize>, key: &str) {
    *counts.entry(key.to_string()).or_default() += 1;
}

/// Count one `key` less, forgetting it at zero.
fn count_down(counts: &mut BTreeMap<String, usize>, key: &str) {
    if let Some(n) = counts.get_mut(key) {
        *n -= 1;
        if *n == 0 {
            counts.remove(key);
        }
    }
}

/// Remove `item` from the set at `key`, forgetting the set once empty.
fn unlink<K: Ord, T: Ord>(map: &mut BTreeMap<K, BTreeSet<T>>, key: &K, item: &T) {
    if let Some(set) = map.get_mut(key) {
        set.remove(item);
        if set.is_empty() {
            map.remove(key);
        }
    }
}

impl Lookups {
    fn build(nodes: &BTreeMap<String, NodeRecord>) -> Lookups {
        let mut lookups = Lookups::default();
        for (node, record) in nodes {
            for s in record.services.values() {
                lookups.add_service(node, s);
            }
            for c in record.checks.values() {
                lookups.add_check(node, c);
            }
        }
        lookups
    }

    fn add_service(&mut self, node: &str, s: &Service) {
        let name = s.name.to_lowercase();
        let key = (node.to_string(), s.id.clone());
        let group = self.services.entry(name.clone()).or_default();
        for tag in &s.tags {
            count_up(&mut group.tags, tag);
            group
                .by_tag
                .entry(tag.to_ascii_lowercase())
                .or_default()
                .insert(key.clone());
        }
        group.instances.insert(key);
        count_up(
            &mut self.nodes.entry(node.to_string()).or_default().names,
            &name,
        );
    }

    fn remove_service(&mut self, node: &str, s: &Service) {
        let name = s.name.to_lowercase();
        let key = (node.to_string(), s.id.clone());
        if let Some(group) = self.services.get_mut(&name) {
            for tag in &s.tags {
                count_down(&mut group.tags, tag);
                unlink(&mut group.by_tag, &tag.to_ascii_lowercase(), &key);
            }
            group.instances.remove(&key);
            if group.instances.is_empty() {
                self.services.remove(&name);
            }
        }
        if let Some(n) = self.nodes.get_mut(node) {
            count_down(&mut n.names, &name);
        }
        self.forget_if_empty(node);
    }

    fn add_check(&mut self, node: &str, c: &HealthCheck) {
        self.nodes
            .entry(node.to_string())
            .or_default()
            .checks
            .entry(c.service_id.clone())
            .or_default()
            .insert(c.check_id.clone());
        self.by_status
            .entry(c.status)
            .or_default()
            .insert((node.to_string(), c.check_id.clone()));
    }

    fn remove_check(&mut self, node: &str, c: &HealthCheck) {
        if let Some(n) = self.nodes.get_mut(node) {
            unlink(&mut n.checks, &c.service_id, &c.check_id);
        }
        self.forget_if_empty(node);
        unlink(
            &mut self.by_status,
            &c.status,
            &(node.to_string(), c.check_id.clone()),
        );
    }

    fn forget_if_empty(&mut self, node: &str) {
        if self
            .nodes
            .get(node)
            .is_some_and(|n| n.names.is_empty() && n.checks.is_empty())
        {
            self.nodes.remove(node);
        }
    }

    /// The lower-cased names of a node's services.
    fn names_on(&self, node: &str) -> BTreeSet<String> {
        self.nodes
            .get(node)
            .map(|n| n.names.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// IDs of a node's checks owned by `service_id` (`""`: node checks).
    fn checks_of<'a>(&'a self, node: &str, service_id: &str) -> impl Iterator<Item = &'a String> {
        self.nodes
            .get(node)
            .and_then(|n| n.checks.get(service_id))
            .into_iter()
            .flatten()
    }
}

/// The catalog: the stored tables plus the lookups derived from them.
/// Serialized, compared and loaded as its tables alone (the lookups are
/// rebuilt on load), so snapshots keep their layout.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(from = "Tables")]
pub struct Catalog {
    tables: Tables,
    lookups: Lookups,
}

impl From<Tables> for Catalog {
    fn from(tables: Tables) -> Catalog {
        let lookups = Lookups::build(&tables.nodes);
        Catalog { tables, lookups }
    }
}

impl Serialize for Catalog {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.tables.serialize(serializer)
    }
}

impl PartialEq for Catalog {
    fn eq(&self, other: &Catalog) -> bool {
        self.tables == other.tables
    }
}

impl Eq for Catalog {}

impl Catalog {
    // ----- indexes -----

    /// Catalog-wide index (never 0): `catalog/services`, `catalog/nodes`, `health/state`.
    pub fn table_index(&self) -> u64 {
        self.tables.table_index.max(1)
    }

    /// Index of one service name (never 0); unknown names answer the table index.
    pub fn service_index(&self, name: &str) -> u64 {
        self.tables
            .service_indexes
            .get(&name.to_lowercase())
            .copied()
            .unwrap_or(self.tables.table_index)
            .max(1)
    }

    fn touch(&mut self, idx: u64, names: BTreeSet<String>) {
        let tables = &mut self.tables;
        tables.table_index = tables.table_index.max(idx);
        for name in names {
            if self.lookups.services.contains_key(&name) {
                tables.service_indexes.insert(name, idx);
            } else {
                tables.service_indexes.remove(&name);
            }
        }
    }

    // ----- writes -----

    /// Catalog register: upsert the node (a new node gets a passing
    /// `serfHealth`), then the service, then the checks; all or nothing.
    pub fn register(&mut self, idx: u64, reg: Registration) -> Result<CatalogEffects, StateError> {
        if reg.node.is_empty() {
            return Err(StateError::MissingNodeName);
        }
        let exists = self.tables.nodes.contains_key(&reg.node);
        if reg.address.is_empty() && !(reg.skip_node_update && exists) {
            return Err(StateError::MissingAddress);
        }
        let mut service = reg.service;
        if let Some(s) = service.as_mut() {
            if s.name.is_empty() {
                return Err(StateError::MissingServiceName);
            }
            if s.id.is_empty() {
                s.id = s.name.clone();
            }
        }
        for c in &reg.checks {
            let known = c.service_id.is_empty()
                || service.as_ref().is_some_and(|s| s.id == c.service_id)
                || self
                    .tables
                    .nodes
                    .get(&reg.node)
                    .is_some_and(|r| r.services.contains_key(&c.service_id));
            if !known {
                return Err(StateError::MissingServiceRegistration);
            }
        }

        let lookups = &mut self.lookups;
        let mut touched = BTreeSet::new();
        let mut node_level = !exists;
        let record = self
            .tables
            .nodes
            .entry(reg.node.clone())
            .or_insert_with(|| {
                let record = NodeRecord::new(Node {
                    name: reg.node.clone(),
                    id: reg.node_id.clone(),
                    address: reg.address.clone(),
                    tagged_addresses: reg.tagged_addresses.clone(),
                    meta: reg.node_meta.clone(),
                    create_index: idx,
                    modify_index: idx,
                });
                for c in record.checks.values() {
                    lookups.add_check(&reg.node, c);
                }
                record
            });
        if exists && !reg.skip_node_update {
            let n = &mut record.node;
            if n.id != reg.node_id
                || n.address != reg.address
                || n.tagged_addresses != reg.tagged_addresses
                || n.meta != reg.node_meta
            {
                n.id = reg.node_id;
                n.address = reg.address;
                n.tagged_addresses = reg.tagged_addresses;
                n.meta = reg.node_meta;
                n.modify_index = idx;
                node_level = true;
            }
        }

        if let Some(mut s) = service {
            match record.services.get(&s.id) {
                Some(old) if old.same_as(&s) => {}
                old => {
                    if let Some(old) = old {
                        touched.insert(old.name.to_lowercase());
                        lookups.remove_service(&reg.node, old);
                    }
                    s.create_index = old.map_or(idx, |o| o.create_index);
                    s.modify_index = idx;
                    touched.insert(s.name.to_lowercase());
                    lookups.add_service(&reg.node, &s);
                    record.services.insert(s.id.clone(), s);
                }
            }
        }

        let mut effects = CatalogEffects::default();
        for mut c in reg.checks {
            c.node = reg.node.clone();
            c.service_name = String::new();
            c.service_tags = Vec::new();
            match record.checks.get(&c.check_id) {
                Some(old) if old.same_as(&c) => continue,
                old => {
                    if let Some(old) = old {
                        lookups.remove_check(&reg.node, old);
                    }
                    c.create_index = old.map_or(idx, |o| o.create_index);
                    c.modify_index = idx;
                }
            }
            if c.status == CheckStatus::Critical {
                effects
                    .dead_checks
                    .push((c.node.clone(), c.check_id.clone()));
            }
            if c.service_id.is_empty() {
                node_level = true;
            } else if let Some(s) = record.services.get(&c.service_id) {
                touched.insert(s.name.to_lowercase());
            }
            lookups.add_check(&reg.node, &c);
            record.checks.insert(c.check_id.clone(), c);
        }
        if node_level {
            touched.extend(lookups.names_on(&reg.node));
            self.tables.table_index = self.tables.table_index.max(idx);
        }
        if !touched.is_empty() || !effects.dead_checks.is_empty() {
            self.touch(idx, touched);
        }
        Ok(effects)
    }

    /// Catalog deregister. Unknown node, service or check: nothing happens.
    pub fn deregister(&mut self, idx: u64, dereg: &Deregistration) -> CatalogEffects {
        let mut effects = CatalogEffects::default();
        let node = dereg.node.as_str();
        let lookups = &mut self.lookups;
        let Some(record) = self.tables.nodes.get_mut(node) else {
            return effects;
        };
        let mut touched = BTreeSet::new();
        if dereg.service_id.is_none() && dereg.check_id.is_none() {
            touched = lookups.names_on(node);
            for s in record.services.values() {
                lookups.remove_service(node, s);
            }
            for c in record.checks.values() {
                lookups.remove_check(node, c);
            }
            effects.dead_nodes.push(node.to_string());
            self.tables.nodes.remove(node);
            self.touch(idx, touched);
            return effects;
        }
        let mut changed = false;
        if let Some(sid) = &dereg.service_id {
            if let Some(s) = record.services.remove(sid) {
                touched.insert(s.name.to_lowercase());
                lookups.remove_service(node, &s);
                changed = true;
                let gone: Vec<String> = lookups.checks_of(node, sid).cloned().collect();
                for id in gone {
                    if let Some(c) = record.checks.remove(&id) {
                        lookups.remove_check(node, &c);
                    }
                    effects.dead_checks.push((node.to_string(), id));
                }
            }
        }
        if let Some(cid) = &dereg.check_id {
            if let Some(c) = record.checks.remove(cid) {
                changed = true;
                lookups.remove_check(node, &c);
                effects
                    .dead_checks
                    .push((node.to_string(), c.check_id.clone()));
                match record.services.get(&c.service_id) {
                    Some(s) if !c.service_id.is_empty() => {
                        touched.insert(s.name.to_lowercase());
                    }
                    _ => touched.extend(lookups.names_on(node)),
                }
            }
        }
        if changed {
            self.touch(idx, touched);
        }
        effects
    }

    /// Set a check's status and output (TTL update, agent check result).
    pub fn update_check(
        &mut self,
        idx: u64,
        node: &str,
        check_id: &str,
        status: CheckStatus,
        output: String,
    ) -> Result<CatalogEffects, StateError> {
        let record = self
            .tables
            .nodes
            .get_mut(node)
            .ok_or_else(|| StateError::UnknownCheck(check_id.to_string()))?;
        let check = record
            .checks
            .get_mut(check_id)
            .ok_or_else(|| StateError::UnknownCheck(check_id.to_string()))?;
        let mut effects = CatalogEffects::default();
        if check.status == status && check.output == output {
            return Ok(effects);
        }
        if check.status != status {
            self.lookups.remove_check(node, check);
            check.status = status;
            self.lookups.add_check(node, check);
        }
        check.output = output;
        check.modify_index = idx;
        if status == CheckStatus::Critical {
            effects
                .dead_checks
                .push((node.to_string(), check_id.to_string()));
        }
        let touched = match record.services.get(&check.service_id) {
            Some(s) if !check.service_id.is_empty() => BTreeSet::from([s.name.to_lowercase()]),
            _ => self.lookups.names_on(node),
        };
        self.touch(idx, touched);
        Ok(effects)
    }

    // ----- reads -----

    /// The node, if registered.
    pub fn node(&self, name: &str) -> Option<&Node> {
        self.tables.nodes.get(name).map(|r| &r.node)
    }

    /// One service instance of a node.
    pub fn service(&self, node: &str, id: &str) -> Option<&Service> {
        self.tables.nodes.get(node)?.services.get(id)
    }

    /// One check, decorated with its service name and tags.
    pub fn check(&self, node: &str, check_id: &str) -> Option<HealthCheck> {
        let r = self.tables.nodes.get(node)?;
        r.checks.get(check_id).map(|c| r.decorate(c))
    }

    /// All nodes, by name.
    pub fn nodes(&self) -> Vec<&Node> {
        self.tables.nodes.values().map(|r| &r.node).collect()
    }

    /// A node and its services (`catalog/node/<n>`, `None` ⇒ JSON `null`).
    pub fn node_services(&self, name: &str) -> Option<NodeServices> {
        self.tables.nodes.get(name).map(|r| NodeServices {
            node: r.node.clone(),
            services: r.services.values().cloned().collect(),
        })
    }

    /// Service name → union of its instances' tags (sorted, deduplicated).
    /// Names that differ only in case are one service, spelled as its
    /// first instance (by node, then service ID) spells it.
    pub fn services(&self) -> BTreeMap<String, Vec<String>> {
        self.lookups
            .services
            .values()
            .filter_map(|group| {
                let (node, id) = group.instances.first()?;
                let first = self.tables.nodes.get(node)?.services.get(id)?;
                Some((first.name.clone(), group.tags.keys().cloned().collect()))
            })
            .collect()
    }

    /// The instances of a service carrying every tag in `tags`, by node
    /// then service ID, each with its node's key and record. Walks the
    /// instances of the rarest wanted tag, or all of the name's.
    fn instances<'a>(
        &'a self,
        name: &'a str,
        tags: &'a [String],
    ) -> impl Iterator<Item = (&'a str, &'a NodeRecord, &'a Service)> {
        let rows = self
            .lookups
            .services
            .get(&name.to_lowercase())
            .and_then(|g| {
                if tags.is_empty() {
                    return Some(&g.instances);
                }
                let by_tag = tags.iter().map(|t| g.by_tag.get(&t.to_ascii_lowercase()));
                // A tag no instance carries (None) answers nothing.
                by_tag.min_by_key(|rows| rows.map_or(0, BTreeSet::len))?
            });
        rows.into_iter()
            .flatten()
            .filter_map(move |(node, id)| {
                let r = self.tables.nodes.get(node)?;
                Some((node.as_str(), r, r.services.get(id)?))
            })
            // The name lookup folds Unicode case; answers match ASCII case only.
            .filter(move |(_, _, s)| s.name.eq_ignore_ascii_case(name) && s.has_tags(tags))
    }

    /// The checks of `node` owned by `service_id` (`""`: node checks), by ID.
    fn owned_checks<'a>(
        &'a self,
        node: &str,
        r: &'a NodeRecord,
        service_id: &str,
    ) -> impl Iterator<Item = &'a HealthCheck> {
        self.lookups
            .checks_of(node, service_id)
            .filter_map(|id| r.checks.get(id))
    }

    /// `catalog/service/<name>?tag=..`: every instance, no health filter,
    /// ordered by node then service ID.
    pub fn service_instances(&self, name: &str, tags: &[String]) -> Vec<ServiceInstance> {
        self.instances(name, tags)
            .map(|(_, r, s)| ServiceInstance {
                node: r.node.clone(),
                service: s.clone(),
            })
            .collect()
    }

    /// `health/service/<name>?tag=..[&passing]`: each instance with its node's
    /// checks and its own; `passing_only` drops instances with any check that
    /// is not passing (warning included, consul-wire.md §6.4).
    pub fn health_service(
        &self,
        name: &str,
        tags: &[String],
        passing_only: bool,
    ) -> Vec<ServiceEntry> {
        self.instances(name, tags)
            .map(|(node, r, s)| ServiceEntry {
                node: r.node.clone(),
                service: s.clone(),
                checks: self
                    .owned_checks(node, r, "")
                    .chain(self.owned_checks(node, r, &s.id))
                    .map(|c| r.decorate(c))
                    .collect(),
            })
            .filter(|e| !passing_only || e.checks.iter().all(|c| c.status == CheckStatus::Passing))
            .collect()
    }

    /// `health/node/<node>`: the node's checks.
    pub fn node_checks(&self, node: &str) -> Vec<HealthCheck> {
        self.tables
            .nodes
            .get(node)
            .map(|r| r.checks.values().map(|c| r.decorate(c)).collect())
            .unwrap_or_default()
    }

    /// `health/checks/<service>`: the checks of all its instances, by node
    /// then check ID.
    pub fn service_checks(&self, name: &str) -> Vec<HealthCheck> {
        let mut rows: Vec<(&str, &NodeRecord, &HealthCheck)> = self
            .instances(name, &[])
            .flat_map(|(node, r, s)| self.owned_checks(node, r, &s.id).map(move |c| (node, r, c)))
            .collect();
        rows.sort_by(|a, b| (a.0, &a.2.check_id).cmp(&(b.0, &b.2.check_id)));
        rows.into_iter().map(|(_, r, c)| r.decorate(c)).collect()
    }

    /// `health/state/<state>`: every check in that state, by node then
    /// check ID.
    pub fn checks_in_state(&self, filter: StatusFilter) -> Vec<HealthCheck> {
        let StatusFilter::Only(status) = filter else {
            return self
                .tables
                .nodes
                .values()
                .flat_map(|r| r.checks.values().map(|c| r.decorate(c)))
                .collect();
        };
        self.lookups
            .by_status
            .get(&status)
            .into_iter()
            .flatten()
            .filter_map(|(node, id)| {
                let r = self.tables.nodes.get(node)?;
                Some(r.decorate(r.checks.get(id)?))
            })
            .collect()
    }
}

// ----- input limits -----

/// Not Consul's (it has no cap): node names, service names and IDs, check
/// names and IDs, addresses and tagged-address keys. Registrator's IDs
/// (`host:container:port`) stay far below it.
pub const NAME_MAX_LEN: usize = 512;
/// Not Consul's: tags per service, and the length of one tag (Traefik's
/// rule tags are the longest seen in practice, well under it).
pub const TAGS_MAX: usize = 256;
pub const TAG_MAX_LEN: usize = 1024;
/// Not Consul's: checks in one registration.
pub const CHECKS_MAX: usize = 64;
/// Not Consul's: tagged addresses per node or service.
pub const TAGGED_ADDRESSES_MAX: usize = META_MAX_PAIRS;
/// Not Consul's: a check's notes and its stored definition (HTTP headers,
/// script args).
pub const NOTES_MAX_LEN: usize = 4096;
pub const DEFINITION_MAX_LEN: usize = 64 * 1024;

/// What a registration may not carry: every write that reaches the
/// catalog from a client (agent and catalog registrations, `/v1/txn`
/// ops) is checked with these before it is proposed, so an oversized
/// one costs neither the log nor the replicas anything. Not checked on
/// apply: entries already in a log must apply the same on every version.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    /// Consul's agent answer (`Invalid Service Meta: ...`).
    #[error("Invalid Service Meta: {0}")]
    ServiceMeta(String),
    #[error("Invalid Node Meta: {0}")]
    NodeMeta(String),
    #[error("{what} is too long ({len} characters, limit: {max} characters)")]
    TooLong {
        what: &'static str,
        len: usize,
        max: usize,
    },
    #[error("{what} cannot contain more than {max} entries ({count} given)")]
    TooMany {
        what: &'static str,
        count: usize,
        max: usize,
    },
}

fn check_len(what: &'static str, s: &str, max: usize) -> Result<(), LimitError> {
    if s.len() > max {
        return Err(LimitError::TooLong {
            what,
            len: s.len(),
            max,
        });
    }
    Ok(())
}

fn check_count(what: &'static str, count: usize, max: usize) -> Result<(), LimitError> {
    if count > max {
        return Err(LimitError::TooMany { what, count, max });
    }
    Ok(())
}

fn check_tagged_addresses(
    what: &'static str,
    addrs: &BTreeMap<String, String>,
) -> Result<(), LimitError> {
    check_count(what, addrs.len(), TAGGED_ADDRESSES_MAX)?;
    for (k, v) in addrs {
        check_len("Tagged address key", k, NAME_MAX_LEN)?;
        check_len("Tagged address", v, NAME_MAX_LEN)?;
    }
    Ok(())
}

impl Node {
    /// The node's fields within the input limits (node meta as Consul
    /// validates it, the `consul-` prefix allowed).
    pub fn check_limits(&self) -> Result<(), LimitError> {
        check_len("Node name", &self.name, NAME_MAX_LEN)?;
        check_len("Node ID", &self.id, NAME_MAX_LEN)?;
        check_len("Node address", &self.address, NAME_MAX_LEN)?;
        check_tagged_addresses("Node tagged addresses", &self.tagged_addresses)?;
        check_meta(&self.meta, true).map_err(LimitError::NodeMeta)
    }
}

impl Service {
    /// The service's fields within the input limits (meta as Consul's
    /// `ValidateServiceMetadata`).
    pub fn check_limits(&self) -> Result<(), LimitError> {
        check_len("Service name", &self.name, NAME_MAX_LEN)?;
        check_len("Service ID", &self.id, NAME_MAX_LEN)?;
        check_len("Service address", &self.address, NAME_MAX_LEN)?;
        check_count("Service tags", self.tags.len(), TAGS_MAX)?;
        for tag in &self.tags {
            check_len("Service tag", tag, TAG_MAX_LEN)?;
        }
        let x = self.extras();
        check_len("Service kind", &x.kind, NAME_MAX_LEN)?;
        check_len("Service socket path", &x.socket_path, NAME_MAX_LEN)?;
        check_len("Service proxy", &x.proxy, DEFINITION_MAX_LEN)?;
        check_count(
            "Service tagged addresses",
            x.tagged_addresses.len(),
            TAGGED_ADDRESSES_MAX,
        )?;
        for (k, v) in &x.tagged_addresses {
            check_len("Tagged address key", k, NAME_MAX_LEN)?;
            check_len("Tagged address", &v.address, NAME_MAX_LEN)?;
        }
        if let Some(l) = &x.locality {
            check_len("Service locality region", &l.region, NAME_MAX_LEN)?;
            check_len("Service locality zone", &l.zone, NAME_MAX_LEN)?;
        }
        check_meta(&self.meta, false).map_err(LimitError::ServiceMeta)
    }
}

impl HealthCheck {
    /// The check within the input limits; its output is cut to
    /// [`OUTPUT_MAX_SIZE`](super::checks::OUTPUT_MAX_SIZE) as Consul cuts
    /// check output, not refused.
    pub fn bound(&mut self) -> Result<(), LimitError> {
        check_len("Check name", &self.name, NAME_MAX_LEN)?;
        check_len("Check ID", &self.check_id, NAME_MAX_LEN)?;
        check_len("Check service ID", &self.service_id, NAME_MAX_LEN)?;
        check_len("Check type", &self.check_type, NAME_MAX_LEN)?;
        check_len("Check notes", &self.notes, NOTES_MAX_LEN)?;
        check_len("Check definition", &self.definition, DEFINITION_MAX_LEN)?;
        self.output = super::checks::truncate_output(std::mem::take(&mut self.output));
        Ok(())
    }
}

impl Registration {
    /// Every part of the registration within the input limits (node fields
    /// only when they are written), check outputs cut to size.
    pub fn bound(&mut self) -> Result<(), LimitError> {
        check_len("Node name", &self.node, NAME_MAX_LEN)?;
        check_len("Node ID", &self.node_id, NAME_MAX_LEN)?;
        check_len("Node address", &self.address, NAME_MAX_LEN)?;
        check_tagged_addresses("Node tagged addresses", &self.tagged_addresses)?;
        check_meta(&self.node_meta, true).map_err(LimitError::NodeMeta)?;
        if let Some(s) = &self.service {
            s.check_limits()?;
        }
        check_count("Checks", self.checks.len(), CHECKS_MAX)?;
        self.checks.iter_mut().try_for_each(HealthCheck::bound)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    pub(crate) fn svc(id: &str, name: &str, tags: &[&str], port: u16) -> Service {
        Service {
            tags: tags.iter().map(|t| t.to_string()).collect(),
            ..Service::new(id, name, port)
        }
    }

    fn reg(node: &str, service: Option<Service>, checks: Vec<HealthCheck>) -> Registration {
        Registration {
            node: node.to_string(),
            node_id: String::new(),
            address: "10.0.0.1".to_string(),
            tagged_addresses: BTreeMap::new(),
            node_meta: BTreeMap::new(),
            skip_node_update: false,
            service,
            checks,
        }
    }

    fn svc_check(node: &str, sid: &str, status: CheckStatus) -> HealthCheck {
        HealthCheck {
            service_id: sid.to_string(),
            check_type: "ttl".to_string(),
            ..HealthCheck::new(node, &format!("service:{sid}"), "c", status)
        }
    }

    #[test]
    fn new_node_gets_passing_serf_health() {
        let mut c = Catalog::default();
        c.register(3, reg("n1", None, vec![])).unwrap();
        let checks = c.node_checks("n1");
        assert_eq!(checks.len(), 1);
        assert_eq!(checks[0].check_id, "serfHealth");
        assert_eq!(checks[0].status, CheckStatus::Passing);
        assert_eq!(c.node("n1").unwrap().create_index, 3);
    }

    #[test]
    fn per_service_indexes_are_independent() {
        let mut c = Catalog::default();
        c.register(2, reg("n1", Some(svc("a1", "a", &[], 80)), vec![]))
            .unwrap();
        c.register(3, reg("n1", Some(svc("b1", "b", &[], 81)), vec![]))
            .unwrap();
        assert_eq!(c.service_index("a"), 2);
        assert_eq!(c.service_index("b"), 3);
        c.register(4, reg("n1", Some(svc("a1", "a", &["x"], 80)), vec![]))
            .unwrap();
        assert_eq!(c.service_index("a"), 4);
        assert_eq!(c.service_index("b"), 3, "a write to a must not move b");
        assert_eq!(c.table_index(), 4);
        // Service-check change touches only its service.
        c.register(
            5,
            reg(
                "n1",
                None,
                vec![svc_check("n1", "b1", CheckStatus::Passing)],
            ),
        )
        .unwrap();
        assert_eq!((c.service_index("a"), c.service_index("b")), (4, 5));
        // Identical re-registration changes nothing.
        c.register(6, reg("n1", Some(svc("a1", "a", &["x"], 80)), vec![]))
            .unwrap();
        assert_eq!(c.service_index("a"), 4);
        assert_eq!(c.table_index(), 5);
        // A node-level change touches every service on the node.
        let mut r = reg("n1", None, vec![]);
        r.address = "10.0.0.2".to_string();
        c.register(7, r).unwrap();
        assert_eq!((c.service_index("a"), c.service_index("b")), (7, 7));
        assert_eq!(c.service_index("A"), 7, "names are case-insensitive");
    }

    #[test]
    fn removed_service_index_never_goes_backwards() {
        let mut c = Catalog::default();
        c.register(2, reg("n1", Some(svc("a1", "a", &[], 80)), vec![]))
            .unwrap();
        c.register(3, reg("n2", Some(svc("z", "z", &[], 80)), vec![]))
            .unwrap();
        let d = Deregistration {
            node: "n1".into(),
            service_id: Some("a1".into()),
            check_id: None,
        };
        c.deregister(4, &d);
        assert!(c.service_index("a") >= 4);
        assert!(c.service_instances("a", &[]).is_empty());
        assert_eq!(c.service_index("unknown"), c.table_index());
    }

    #[test]
    fn health_passing_filter_and_tags() {
        let mut c = Catalog::default();
        c.register(
            2,
            reg(
                "n1",
                Some(svc("w1", "web", &["Primary"], 80)),
                vec![svc_check("n1", "w1", CheckStatus::Passing)],
            ),
        )
        .unwrap();
        c.register(
            3,
            reg(
                "n2",
                Some(svc("w2", "web", &["replica"], 80)),
                vec![svc_check("n2", "w2", CheckStatus::Warning)],
            ),
        )
        .unwrap();
        let all = c.health_service("web", &[], false);
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].checks.len(), 2, "serfHealth + service check");
        assert_eq!(all[0].checks[0].check_id, "serfHealth");
        assert_eq!(all[0].checks[1].service_name, "web");
        assert_eq!(all[0].checks[1].service_tags, vec!["Primary".to_string()]);
        let passing = c.health_service("web", &[], true);
        assert_eq!(passing.len(), 1, "warning is not passing");
        assert_eq!(passing[0].service.id, "w1");
        assert_eq!(c.health_service("WEB", &["primary".into()], false).len(), 1);
        assert!(c
            .health_service("web", &["primary".into(), "replica".into()], false)
            .is_empty());
        // A critical node check hides every instance on that node.
        c.update_check(4, "n1", "serfHealth", CheckStatus::Critical, "down".into())
            .unwrap();
        assert!(c.health_service("web", &[], true).is_empty());
        assert_eq!(
            c.checks_in_state(StatusFilter::Only(CheckStatus::Critical))
                .len(),
            1
        );
        assert_eq!(c.services().get("web").unwrap(), &["Primary", "replica"]);
    }

    #[test]
    fn check_update_no_op_and_unknown() {
        let mut c = Catalog::default();
        c.register(2, reg("n1", None, vec![])).unwrap();
        let fx = c
            .update_check(
                3,
                "n1",
                "serfHealth",
                CheckStatus::Passing,
                "Agent alive and reachable".into(),
            )
            .unwrap();
        assert_eq!(fx, CatalogEffects::default());
        assert_eq!(c.table_index(), 2, "same status and output: no write");
        assert_eq!(
            c.update_check(4, "n1", "nope", CheckStatus::Passing, String::new())
                .unwrap_err()
                .to_string(),
            "Unknown check ID \"nope\""
        );
    }

    #[test]
    fn register_is_atomic_and_validates() {
        let mut c = Catalog::default();
        let err = c
            .register(
                2,
                reg(
                    "n1",
                    None,
                    vec![svc_check("n1", "ghost", CheckStatus::Passing)],
                ),
            )
            .unwrap_err();
        assert_eq!(err, StateError::MissingServiceRegistration);
        assert!(c.node("n1").is_none(), "nothing applied");
        let mut r = reg("n1", None, vec![]);
        r.address.clear();
        assert_eq!(c.register(2, r).unwrap_err(), StateError::MissingAddress);
        // Service ID defaults to the name.
        c.register(3, reg("n1", Some(svc("", "db", &[], 5432)), vec![]))
            .unwrap();
        assert_eq!(c.service_instances("db", &[])[0].service.id, "db");
    }

    #[test]
    fn deregister_node_removes_everything() {
        let mut c = Catalog::default();
        c.register(2, reg("n1", Some(svc("w1", "web", &[], 80)), vec![]))
            .unwrap();
        let fx = c.deregister(
            3,
            &Deregistration {
                node: "n1".into(),
                service_id: None,
                check_id: None,
            },
        );
        assert_eq!(fx.dead_nodes, vec!["n1".to_string()]);
        assert!(c.nodes().is_empty());
        assert!(c.node_services("n1").is_none());
        assert!(c.service_index("web") >= 3);
    }

    /// The lookups an updated catalog holds are the ones a load rebuilds.
    fn assert_lookups_rebuilt(c: &Catalog) {
        assert_eq!(c.lookups, Lookups::build(&c.tables.nodes));
    }

    #[test]
    fn lookups_follow_every_write() {
        let mut c = Catalog::default();
        let tags = &["Primary", "primary", "v1"];
        c.register(2, reg("n2", Some(svc("w2", "web", tags, 80)), vec![]))
            .unwrap();
        let check = svc_check("n1", "w1", CheckStatus::Passing);
        let web = Some(svc("w1", "Web", &["v1"], 80));
        c.register(3, reg("n1", web, vec![check])).unwrap();
        assert_lookups_rebuilt(&c);
        // Spelled as the first instance by node: n1's.
        let services = c.services();
        assert_eq!(services.get("Web").unwrap(), &["Primary", "primary", "v1"]);
        assert_eq!(c.service_instances("WEB", &["PRIMARY".into()]).len(), 1);
        // The check moves to the node, then changes status.
        let moved = HealthCheck::new("n1", "service:w1", "c", CheckStatus::Warning);
        c.register(4, reg("n1", None, vec![moved])).unwrap();
        assert_lookups_rebuilt(&c);
        assert_eq!(
            c.health_service("web", &[], false)[0].checks.len(),
            2,
            "n1: serfHealth and the moved check"
        );
        c.update_check(5, "n1", "service:w1", CheckStatus::Critical, "x".into())
            .unwrap();
        assert_lookups_rebuilt(&c);
        let critical = c.checks_in_state(StatusFilter::Only(CheckStatus::Critical));
        assert_eq!(critical.len(), 1);
        // Renamed and retagged under the same ID.
        c.register(6, reg("n2", Some(svc("w2", "db", &["x"], 80)), vec![]))
            .unwrap();
        assert_lookups_rebuilt(&c);
        assert_eq!(c.services().get("Web").unwrap(), &["v1"]);
        assert_eq!((c.service_index("web"), c.service_index("db")), (6, 6));
        let d = |node: &str, service_id: Option<&str>, check_id: Option<&str>| Deregistration {
            node: node.into(),
            service_id: service_id.map(String::from),
            check_id: check_id.map(String::from),
        };
        c.deregister(7, &d("n1", None, Some("service:w1")));
        assert_lookups_rebuilt(&c);
        c.deregister(8, &d("n1", Some("w1"), None));
        assert_lookups_rebuilt(&c);
        assert!(!c.services().contains_key("Web"));
        assert_eq!(c.service_index("web"), 8, "gone: the table index");
        c.deregister(9, &d("n1", None, None));
        c.deregister(10, &d("n2", None, None));
        assert_eq!(c.lookups, Lookups::default(), "nothing left behind");
    }

    /// A service's extras go through a snapshot and back; a service
    /// without them stores none, as an earlier build did.
    #[test]
    fn service_extras_round_trip_and_plain_services_store_none() {
        let mut c = Catalog::default();
        let mut s = svc("g1", "gw", &[], 443);
        s.extras = ServiceExtras {
            kind: "mesh-gateway".into(),
            tagged_addresses: BTreeMap::from([(
                "wan".to_string(),
                ServiceAddress {
                    address: "198.51.100.1".into(),
                    port: 443,
                },
            )]),
            locality: Some(Locality {
                region: "eu".into(),
                zone: String::new(),
            }),
            ..ServiceExtras::default()
        }
        .boxed();
        c.register(2, reg("n1", Some(s.clone()), vec![])).unwrap();
        c.register(3, reg("n1", Some(svc("p1", "plain", &[], 80)), vec![]))
            .unwrap();
        let text = serde_json::to_string(&c).unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        let services = &v["nodes"]["n1"]["services"];
        assert!(services["p1"].get("extras").is_none(), "{services}");
        assert_eq!(services["g1"]["extras"]["kind"], "mesh-gateway");
        let back: Catalog = serde_json::from_str(&text).unwrap();
        assert_eq!(back, c);
        assert_eq!(back.service("n1", "g1").unwrap().extras, s.extras);
        assert_eq!(back.service("n1", "p1").unwrap().extras, None);
        assert_eq!(ServiceExtras::default().boxed(), None);
        // Same extras again: no change, no index bump.
        c.register(4, reg("n1", Some(s), vec![])).unwrap();
        assert_eq!(c.service_index("gw"), 2);
    }

    /// A catalog saved before the lookups existed loads, answers from
    /// rebuilt lookups, and saves byte for byte as it was.
    #[test]
    fn snapshot_layout_is_unchanged() {
        let saved = r#"{"nodes":{"n1":{"node":{"name":"n1","id":"","address":"10.0.0.1","tagged_addresses":{},"meta":{},"create_index":2,"modify_index":2},"services":{"w1":{"id":"w1","name":"Web","tags":["primary"],"address":"","port":80,"meta":{},"enable_tag_override":false,"weights":{"passing":1,"warning":1},"create_index":2,"modify_index":2}},"checks":{"c1":{"node":"n1","check_id":"c1","name":"c","status":"Passing","notes":"","output":"","service_id":"w1","service_name":"","service_tags":[],"check_type":"ttl","definition":"","create_index":2,"modify_index":2},"serfHealth":{"node":"n1","check_id":"serfHealth","name":"Serf Health Status","status":"Passing","notes":"","output":"Agent alive and reachable","service_id":"","service_name":"","service_tags":[],"check_type":"","definition":"","create_index":2,"modify_index":2}}},"n2":{"node":{"name":"n2","id":"","address":"10.0.0.1","tagged_addresses":{},"meta":{},"create_index":3,"modify_index":3},"services":{"d1":{"id":"d1","name":"db","tags":[],"address":"","port":80,"meta":{},"enable_tag_override":false,"weights":{"passing":1,"warning":1},"create_index":4,"modify_index":4},"w2":{"id":"w2","name":"web","tags":["replica","v1"],"address":"","port":80,"meta":{},"enable_tag_override":false,"weights":{"passing":1,"warning":1},"create_index":3,"modify_index":3}},"checks":{"c2":{"node":"n2","check_id":"c2","name":"c","status":"Critical","notes":"","output":"","service_id":"w2","service_name":"","service_tags":[],"check_type":"ttl","definition":"","create_index":3,"modify_index":3},"serfHealth":{"node":"n2","check_id":"serfHealth","name":"Serf Health Status","status":"Passing","notes":"","output":"Agent alive and reachable","service_id":"","service_name":"","service_tags":[],"check_type":"","definition":"","create_index":3,"modify_index":3}}}},"table_index":4,"service_indexes":{"db":4,"web":3}}"#;
        let c: Catalog = serde_json::from_str(saved).unwrap();
        assert_lookups_rebuilt(&c);
        assert_eq!(c.lookups.services.len(), 2);
        assert_eq!(c.health_service("WEB", &[], false).len(), 2);
        assert_eq!(c.service_checks("web").len(), 2);
        assert_eq!(c.service_index("Web"), 3);
        assert_eq!(serde_json::to_string(&c).unwrap(), saved);
    }
}
