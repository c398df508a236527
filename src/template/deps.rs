//! The queries templates use and the pure bookkeeping around them: `Dep`
//! (one Consul read, named canonically so that equal queries from different
//! templates are one watch), the normalisation that turns an answer into what
//! a template can see, and `Schedule`: which templates a changed dependency
//! dirties and when each may render (consul-template's quiescence). No I/O,
//! no clock: `now` is an argument.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

use serde_json::{json, Map, Value};
use tokio::time::Instant;

use crate::discovery::api::catalog::{Node, NodeServices};
use crate::discovery::api::health::{aggregated_status, ServiceEntry};
use crate::discovery::api::kv::{base64_decode, KvPair};

/// One Consul read a template depends on.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Dep {
    /// `GET /v1/health/service/<name>[?passing][&tag=][&dc=]`.
    Service {
        name: String,
        tag: Option<String>,
        dc: Option<String>,
        /// `?passing`: the default, filtered by the server.
        passing: bool,
    },
    /// `GET /v1/catalog/services`.
    Services { dc: Option<String> },
    /// `GET /v1/kv/<key>`.
    Key(String),
    /// `GET /v1/kv/<prefix>?recurse` (`ls` and `tree` share it).
    Tree(String),
    /// `GET /v1/catalog/node/<name>`.
    Node(String),
    /// `GET /v1/catalog/nodes`.
    Nodes { dc: Option<String> },
    /// The agent's own node name (`GET /v1/agent/self`, read once).
    AgentNode,
}

impl fmt::Display for Dep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dep::Service {
                name,
                tag,
                dc,
                passing,
            } => {
                write!(f, "health.service({name}")?;
                if let Some(t) = tag {
                    write!(f, " tag={t}")?;
                }
                if let Some(d) = dc {
                    write!(f, " dc={d}")?;
                }
                if !passing {
                    f.write_str(" any")?;
                }
                f.write_str(")")
            }
            Dep::Services { dc: None } => f.write_str("catalog.services"),
            Dep::Services { dc: Some(d) } => write!(f, "catalog.services(dc={d})"),
            Dep::Key(k) => write!(f, "kv.key({k})"),
            Dep::Tree(p) => write!(f, "kv.tree({p})"),
            Dep::Node(n) => write!(f, "catalog.node({n})"),
            Dep::Nodes { dc: None } => f.write_str("catalog.nodes"),
            Dep::Nodes { dc: Some(d) } => write!(f, "catalog.nodes(dc={d})"),
            Dep::AgentNode => f.write_str("agent.self"),
        }
    }
}

/// What a template sees of `/v1/health/service`: no check output, no
/// indexes, everything sorted (instances by node then ID, tags). A check
/// whose output changes every run therefore changes nothing here.
pub fn service_instances(entries: &[ServiceEntry]) -> Value {
    let mut rows: Vec<(String, String, Value)> = entries
        .iter()
        .map(|e| {
            let address = if e.service.address.is_empty() {
                e.node.address.clone()
            } else {
                e.service.address.clone()
            };
            let mut tags = e.service.tags.clone();
            tags.sort();
            tags.dedup();
            let meta: Map<String, Value> = e
                .service
                .meta
                .iter()
                .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                .collect();
            let node_meta: Map<String, Value> = e
                .node
                .meta
                .iter()
                .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                .collect();
            (
                e.node.node.clone(),
                e.service.id.clone(),
                json!({
                    "Node": e.node.node,
                    "NodeAddress": e.node.address,
                    "NodeMeta": node_meta,
                    "Address": address,
                    "Port": e.service.port,
                    "ID": e.service.id,
                    "Name": e.service.service,
                    "Tags": tags,
                    "Meta": meta,
                    "Status": aggregated_status(&e.checks),
                }),
            )
        })
        .collect();
    rows.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    Value::Array(rows.into_iter().map(|(_, _, v)| v).collect())
}

/// `/v1/catalog/services` as `[{Name, Tags}]`, sorted by name, tags sorted.
pub fn services(map: &BTreeMap<String, Vec<String>>) -> Value {
    Value::Array(
        map.iter()
            .map(|(name, tags)| {
                let mut tags = tags.clone();
                tags.sort();
                tags.dedup();
                json!({"Name": name, "Tags": tags})
            })
            .collect(),
    )
}

/// A key's value as text (lossy UTF-8), or null when the key does not exist.
pub fn key(pair: Option<&KvPair>) -> Value {
    match pair {
        Some(p) => Value::String(kv_text(p)),
        None => Value::Null,
    }
}

/// A value as text: base64-decoded, lossy UTF-8 (a template writes text).
fn kv_text(p: &KvPair) -> String {
    p.value
        .as_deref()
        .and_then(|v| base64_decode(v).ok())
        .map(|v| String::from_utf8_lossy(&v).into_owned())
        .unwrap_or_default()
}

/// Every pair under a prefix as `[{Key, Value}]`, keys whole, sorted.
pub fn tree(pairs: &[KvPair]) -> Value {
    let mut rows: Vec<(String, String)> =
        pairs.iter().map(|p| (p.key.clone(), kv_text(p))).collect();
    rows.sort();
    Value::Array(
        rows.into_iter()
            .map(|(k, v)| json!({"Key": k, "Value": v}))
            .collect(),
    )
}

/// `/v1/catalog/nodes` as `[{Node, Address, Meta}]`, sorted by name.
pub fn nodes(list: &[Node]) -> Value {
    let mut rows: Vec<&Node> = list.iter().collect();
    rows.sort_by(|a, b| a.node.cmp(&b.node));
    Value::Array(rows.into_iter().map(node_value).collect())
}

/// `/v1/catalog/node/<name>` as `{Node, Address, Meta, Services}` (services
/// sorted by ID), or null when the node is not in the catalog.
pub fn node_services(ns: Option<&NodeServices>) -> Value {
    let Some(ns) = ns else { return Value::Null };
    let mut v = node_value(&ns.node);
    let services: Vec<Value> = ns
        .services
        .values()
        .map(|s| {
            let mut tags = s.tags.clone();
            tags.sort();
            json!({"ID": s.id, "Name": s.service, "Tags": tags, "Port": s.port,
                   "Address": if s.address.is_empty() { &ns.node.address } else { &s.address },
                   "Meta": s.meta})
        })
        .collect();
    v["Services"] = Value::Array(services);
    v
}

pub fn node_value(n: &Node) -> Value {
    let meta: Map<String, Value> = n
        .meta
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    json!({"Node": n.node, "Address": n.address, "Meta": meta})
}

/// Templates' dependencies and their render timing.
///
/// A template renders when it is dirty (never rendered, or a dependency it
/// read changed) and its quiescence timer allows: the first render is
/// immediate; after it, a change arms `min`, every further change re-arms
/// `min`, never past `max` after the first change of the batch.
#[derive(Debug, Default)]
pub struct Schedule {
    templates: Vec<Slot>,
}

#[derive(Debug)]
struct Slot {
    wait: Option<(Duration, Duration)>,
    deps: BTreeSet<Dep>,
    rendered_once: bool,
    dirty: bool,
    /// (fire at, deadline) of the armed quiescence timer.
    timer: Option<(Instant, Instant)>,
}

impl Schedule {
    /// One slot per template, in config order; every one starts dirty.
    pub fn new(waits: impl IntoIterator<Item = Option<(Duration, Duration)>>) -> Schedule {
        Schedule {
            templates: waits
                .into_iter()
                .map(|wait| Slot {
                    wait,
                    deps: BTreeSet::new(),
                    rendered_once: false,
                    dirty: true,
                    timer: None,
                })
                .collect(),
        }
    }

    /// The dependencies a template read in its last render.
    pub fn set_deps(&mut self, t: usize, deps: BTreeSet<Dep>) {
        self.templates[t].deps = deps;
    }

    /// The dependencies template `t` read in its last render.
    pub fn deps(&self, t: usize) -> &BTreeSet<Dep> {
        &self.templates[t].deps
    }

    /// Every dependency some template reads.
    pub fn all_deps(&self) -> BTreeSet<Dep> {
        self.templates
            .iter()
            .flat_map(|s| s.deps.iter().cloned())
            .collect()
    }

    /// A dependency's data changed: dirty every template that read it.
    pub fn changed(&mut self, dep: &Dep, now: Instant) {
        for s in &mut self.templates {
            if !s.deps.contains(dep) {
                continue;
            }
            s.dirty = true;
            if !s.rendered_once {
                continue;
            }
            if let Some((min, max)) = s.wait {
                s.timer = Some(match s.timer {
                    None => (now + min, now + max),
                    Some((_, deadline)) => ((now + min).min(deadline), deadline),
                });
            }
        }
    }

    /// Mark a template dirty without touching its timer (a retry after an
    /// install failed, or a forced re-render).
    pub fn touch(&mut self, t: usize) {
        self.templates[t].dirty = true;
    }

    /// Templates due at `now`, cleared of their dirt and timers.
    pub fn due(&mut self, now: Instant) -> Vec<usize> {
        let mut out = Vec::new();
        for (i, s) in self.templates.iter_mut().enumerate() {
            if !s.dirty {
                continue;
            }
            let ready = match s.timer {
                Some((at, _)) => at <= now,
                None => true,
            };
            if ready {
                s.dirty = false;
                s.timer = None;
                out.push(i);
            }
        }
        out
    }

    /// A template's render reached the data it needs and was handled (an
    /// install, an unchanged file, or a refused one): quiescence applies from now on.
    pub fn rendered(&mut self, t: usize) {
        self.templates[t].rendered_once = true;
    }

    /// When the next quiescence timer fires, if any.
    pub fn next_timer(&self) -> Option<Instant> {
        self.templates
            .iter()
            .filter(|s| s.dirty)
            .filter_map(|s| s.timer.map(|(at, _)| at))
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(k: &str) -> Dep {
        Dep::Key(k.into())
    }

    #[test]
    fn first_render_is_immediate_then_quiescence_debounces_up_to_max() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut sch = Schedule::new([Some((s(2), s(5)))]);
        sch.set_deps(0, [key("a")].into());
        assert_eq!(sch.due(t0), vec![0], "the first render never waits");
        sch.rendered(0);
        assert!(sch.due(t0).is_empty());
        sch.changed(&key("a"), t0);
        assert_eq!(sch.next_timer(), Some(t0 + s(2)));
        sch.changed(&key("a"), t0 + s(1));
        assert!(sch.due(t0 + s(2)).is_empty(), "re-armed for min");
        sch.changed(&key("a"), t0 + s(2));
        sch.changed(&key("a"), t0 + s(4));
        assert_eq!(sch.next_timer(), Some(t0 + s(5)), "never past max");
        assert_eq!(sch.due(t0 + s(5)), vec![0]);
        assert_eq!(sch.next_timer(), None);
    }

    #[test]
    fn only_templates_reading_a_changed_dependency_render() {
        let t0 = Instant::now();
        let mut sch = Schedule::new([None, None]);
        sch.set_deps(0, [key("a")].into());
        sch.set_deps(1, [key("b")].into());
        assert_eq!(sch.due(t0), vec![0, 1]);
        sch.rendered(0);
        sch.rendered(1);
        sch.changed(&key("b"), t0);
        assert_eq!(sch.due(t0), vec![1]);
        assert_eq!(sch.all_deps(), [key("a"), key("b")].into());
    }

    #[test]
    fn check_output_and_order_do_not_change_what_a_template_sees() {
        let entry = |output: &str, tags: &[&str]| -> ServiceEntry {
            serde_json::from_value(json!({
                "Node": {"Node": "n1", "Address": "10.0.0.1"},
                "Service": {"ID": "web-1", "Service": "web", "Tags": tags, "Port": 80, "Address": ""},
                "Checks": [{"CheckID": "service:web-1", "Status": "passing", "Output": output}]
            }))
            .expect("entry")
        };
        let a = service_instances(&[entry("t=1", &["b", "a"])]);
        let b = service_instances(&[entry("t=2", &["a", "b"])]);
        assert_eq!(a, b);
        assert_eq!(a[0]["Address"], "10.0.0.1", "node address stands in");
        assert_eq!(a[0]["Tags"], json!(["a", "b"]));
        assert_eq!(a[0]["Status"], "passing");
    }
}
