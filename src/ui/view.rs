//! The pages' data, built from the API's JSON answers (pure: no I/O, no
//! clock). Every value from the catalog goes into the page as data for a
//! `{{}}` (escaped); links are built here with their parts percent-encoded.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::encode;
use crate::discovery::api::gofmt::base64_decode;

/// What the services and nodes pages read: every node, each node's
/// services (`/v1/catalog/node/<n>`), every check, the catalog's index.
pub struct Catalog {
    pub nodes: Value,
    pub services: Vec<(String, Value)>,
    pub checks: Value,
    pub index: u64,
}

/// A check status's rank: passing < warning < critical.
fn rank(status: &str) -> u8 {
    match status {
        "passing" => 0,
        "warning" => 1,
        _ => 2,
    }
}

/// The worst of some statuses (`passing` when there are none).
fn worst<'a>(statuses: impl IntoIterator<Item = &'a str>) -> &'a str {
    statuses
        .into_iter()
        .max_by_key(|s| rank(s))
        .unwrap_or("passing")
}

fn text(v: &Value) -> &str {
    v.as_str().unwrap_or_default()
}

fn list(v: &Value) -> &[Value] {
    v.as_array().map_or(&[], Vec::as_slice)
}

/// A JSON object as sorted `{key, value}` rows (meta, tagged addresses).
fn pairs(v: &Value) -> Vec<Value> {
    let map: BTreeMap<&String, &Value> = v.as_object().into_iter().flatten().collect();
    map.into_iter()
        .map(|(k, v)| {
            let value = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            json!({"key": k, "value": value})
        })
        .collect()
}

fn service_href(name: &str) -> String {
    format!("/ui/services/{}", encode(name, false))
}

fn node_href(name: &str) -> String {
    format!("/ui/nodes/{}", encode(name, false))
}

/// A check for a page: name, status, output, and what it belongs to.
fn check_row(c: &Value) -> Value {
    json!({
        "id": c["CheckID"],
        "name": c["Name"],
        "status": c["Status"],
        "output": c["Output"],
        "notes": c["Notes"],
        "service_id": c["ServiceID"],
        "type": c["Type"],
    })
}

fn matches(filter: &str, words: &[&str]) -> bool {
    let f = filter.trim().to_lowercase();
    f.is_empty() || words.iter().any(|w| w.to_lowercase().contains(&f))
}

/// Every service instance with its status: the worst of their
/// own checks and their node's.
struct Instance<'a> {
    service: &'a Value,
    status: &'a str,
}

fn instances(cat: &Catalog) -> Vec<Instance<'_>> {
    // (node, service ID) → its checks' statuses; service ID "" = the node's.
    let mut by_owner: std::collections::HashMap<(&str, &str), Vec<&str>> =
        std::collections::HashMap::new();
    for c in list(&cat.checks) {
        by_owner
            .entry((text(&c["Node"]), text(&c["ServiceID"])))
            .or_default()
            .push(text(&c["Status"]));
    }
    let mut out = Vec::new();
    for (node, ns) in &cat.services {
        let node_checks = by_owner
            .get(&(node.as_str(), ""))
            .map_or(&[][..], Vec::as_slice);
        for s in ns["Services"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(_, s)| s)
        {
            let own = by_owner
                .get(&(node.as_str(), text(&s["ID"])))
                .map_or(&[][..], Vec::as_slice);
            let status = worst(node_checks.iter().chain(own).copied());
            out.push(Instance { service: s, status });
        }
    }
    out
}

/// The services page: name, tags, instances by health, the filter.
pub fn services(cat: &Catalog, filter: &str) -> Value {
    #[derive(Default)]
    struct Row<'a> {
        tags: std::collections::BTreeSet<&'a str>,
        counts: [usize; 3],
    }
    let mut rows: BTreeMap<&str, Row> = BTreeMap::new();
    for i in instances(cat) {
        let row = rows.entry(text(&i.service["Service"])).or_default();
        row.tags.extend(list(&i.service["Tags"]).iter().map(text));
        row.counts[usize::from(rank(i.status))] += 1;
    }
    let total = rows.len();
    let rows: Vec<Value> = rows
        .into_iter()
        .filter(|(name, row)| {
            let mut words: Vec<&str> = row.tags.iter().copied().collect();
            words.push(name);
            matches(filter, &words)
        })
        .map(|(name, row)| {
            let [passing, warning, critical] = row.counts;
            let status = if critical > 0 {
                "critical"
            } else if warning > 0 {
                "warning"
            } else {
                "passing"
            };
            let mut words: Vec<&str> = row.tags.iter().copied().collect();
            words.push(name);
            json!({
                "name": name,
                "href": service_href(name),
                "tags": row.tags,
                "passing": passing,
                "warning": warning,
                "critical": critical,
                "instances": passing + warning + critical,
                "status": status,
                "search": words.join(" ").to_lowercase(),
            })
        })
        .collect();
    json!({
        "title": "Services",
        "nav_services": true,
        "filter": filter,
        "shown": rows.len(),
        "total": total,
        "services": rows,
        "watch": "/v1/catalog/services",
        "index": cat.index,
    })
}

/// One service: each instance with node, address, port, tags, meta and
/// checks (from `/v1/health/service/<name>`).
pub fn service(name: &str, entries: &Value, index: u64, watch: &str) -> Value {
    let instances: Vec<Value> = list(entries)
        .iter()
        .map(|e| {
            let (node, svc) = (&e["Node"], &e["Service"]);
            let checks: Vec<Value> = list(&e["Checks"]).iter().map(check_row).collect();
            let status = worst(list(&e["Checks"]).iter().map(|c| text(&c["Status"])));
            let address = match text(&svc["Address"]) {
                "" => text(&node["Address"]),
                a => a,
            };
            json!({
                "id": svc["ID"],
                "node": node["Node"],
                "node_href": node_href(text(&node["Node"])),
                "address": address,
                "port": svc["Port"],
                "tags": svc["Tags"],
                "meta": pairs(&svc["Meta"]),
                "status": status,
                "checks": checks,
            })
        })
        .collect();
    json!({
        "title": format!("Service {name}"),
        "nav_services": true,
        "name": name,
        "count": match instances.len() {
            1 => "1 instance".to_string(),
            n => format!("{n} instances"),
        },
        "instances": instances,
        "watch": watch,
        "index": index,
    })
}

/// The nodes page: address, health (the worst of all its checks), services.
pub fn nodes(cat: &Catalog, filter: &str) -> Value {
    let checks = list(&cat.checks);
    let total = list(&cat.nodes).len();
    let rows: Vec<Value> = list(&cat.nodes)
        .iter()
        .filter_map(|n| {
            let name = text(&n["Node"]);
            let mut services: Vec<&str> = cat
                .services
                .iter()
                .filter(|(node, _)| node == name)
                .flat_map(|(_, ns)| ns["Services"].as_object().into_iter().flatten())
                .map(|(_, s)| text(&s["Service"]))
                .collect();
            services.sort_unstable();
            services.dedup();
            let mut words = services.clone();
            words.extend([name, text(&n["Address"])]);
            if !matches(filter, &words) {
                return None;
            }
            let status = worst(
                checks
                    .iter()
                    .filter(|c| text(&c["Node"]) == name)
                    .map(|c| text(&c["Status"])),
            );
            let services: Vec<Value> = services
                .iter()
                .map(|s| json!({"name": s, "href": service_href(s)}))
                .collect();
            Some(json!({
                "name": name,
                "href": node_href(name),
                "address": n["Address"],
                "status": status,
                "services": services,
                "search": words.join(" ").to_lowercase(),
            }))
        })
        .collect();
    json!({
        "title": "Nodes",
        "nav_nodes": true,
        "filter": filter,
        "shown": rows.len(),
        "total": total,
        "nodes": rows,
        "watch": "/v1/catalog/nodes",
        "index": cat.index,
    })
}

/// One node: address, meta, its services with their health, its checks.
pub fn node(name: &str, ns: &Value, checks: &Value, index: u64, watch: &str) -> Value {
    let checks = list(checks);
    let node_status: Vec<&str> = checks
        .iter()
        .filter(|c| text(&c["ServiceID"]).is_empty())
        .map(|c| text(&c["Status"]))
        .collect();
    let mut services: Vec<Value> = ns["Services"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(id, s)| {
            let status = worst(
                checks
                    .iter()
                    .filter(|c| text(&c["ServiceID"]) == id)
                    .map(|c| text(&c["Status"]))
                    .chain(node_status.iter().copied()),
            );
            json!({
                "id": id,
                "name": s["Service"],
                "href": service_href(text(&s["Service"])),
                "address": s["Address"],
                "port": s["Port"],
                "tags": s["Tags"],
                "status": status,
            })
        })
        .collect();
    services.sort_by(|a, b| text(&a["name"]).cmp(text(&b["name"])));
    json!({
        "title": format!("Node {name}"),
        "nav_nodes": true,
        "name": name,
        "found": !ns.is_null(),
        "address": ns["Node"]["Address"],
        "status": worst(checks.iter().map(|c| text(&c["Status"]))),
        "meta": pairs(&ns["Node"]["Meta"]),
        "tagged": pairs(&ns["Node"]["TaggedAddresses"]),
        "services": services,
        "checks": checks.iter().map(check_row).collect::<Vec<_>>(),
        "watch": watch,
        "index": index,
    })
}

/// The folders above `prefix` (`a/b/` → `/`, `a/`, `a/b/`) as links.
fn crumbs(prefix: &str) -> Vec<Value> {
    let mut out = vec![json!({"name": "(root)", "href": "/ui/kv/"})];
    let mut at = String::new();
    for part in prefix.split('/').filter(|p| !p.is_empty()) {
        at.push_str(part);
        at.push('/');
        out.push(json!({"name": part, "href": format!("/ui/kv/{}", encode(&at, true))}));
    }
    out
}

/// A KV folder: the keys and sub-folders right below `prefix`.
pub fn kv_folder(prefix: &str, keys: &Value, index: u64, watch: &str) -> Value {
    let entries: Vec<Value> = list(keys)
        .iter()
        .map(text)
        .filter(|k| *k != prefix)
        .map(|k| {
            json!({
                "name": k.strip_prefix(prefix).unwrap_or(k),
                "folder": k.ends_with('/'),
                "href": format!("/ui/kv/{}", encode(k, true)),
            })
        })
        .collect();
    json!({
        "title": if prefix.is_empty() { "Key/Value".to_string() } else { format!("Key/Value {prefix}") },
        "nav_kv": true,
        "prefix": prefix,
        "crumbs": crumbs(prefix),
        "entries": entries,
        "watch": watch,
        "index": index,
    })
}

/// One key: its value (text, or base64 when it is not UTF-8), its indexes.
pub fn kv_key(key: &str, entry: &Value) -> Value {
    let parent = match key.rfind('/') {
        Some(i) => &key[..=i],
        None => "",
    };
    let bytes = match &entry["Value"] {
        Value::String(b64) => base64_decode(b64).unwrap_or_default(),
        _ => Vec::new(),
    };
    let (value, binary) = match String::from_utf8(bytes) {
        Ok(s) => (s, false),
        Err(e) => (
            crate::discovery::api::gofmt::base64_encode(e.as_bytes()),
            true,
        ),
    };
    json!({
        "title": format!("Key {key}"),
        "nav_kv": true,
        "key": key,
        "found": !entry.is_null(),
        "crumbs": crumbs(parent),
        "parent_href": format!("/ui/kv/{}", encode(parent, true)),
        "value": value,
        "binary": binary,
        "flags": entry["Flags"],
        "modify_index": entry["ModifyIndex"],
        "create_index": entry["CreateIndex"],
        "lock_index": entry["LockIndex"],
        "session": entry["Session"],
    })
}

/// Sessions: ID, name, node, behaviour, TTL, lock delay, checks.
pub fn sessions(list_: &Value, index: u64, watch: &str) -> Value {
    let rows: Vec<Value> = list(list_)
        .iter()
        .map(|s| {
            let mut checks: Vec<Value> = list(&s["NodeChecks"]).to_vec();
            checks.extend(list(&s["Checks"]).iter().cloned());
            checks.extend(list(&s["ServiceChecks"]).iter().map(|c| c["ID"].clone()));
            checks.dedup();
            let delay_ms = s["LockDelay"].as_u64().unwrap_or(0) / 1_000_000;
            json!({
                "id": s["ID"],
                "name": s["Name"],
                "node": s["Node"],
                "node_href": node_href(text(&s["Node"])),
                "behavior": s["Behavior"],
                "ttl": s["TTL"],
                "lock_delay": format!("{delay_ms}ms"),
                "checks": checks,
                "create_index": s["CreateIndex"],
            })
        })
        .collect();
    json!({
        "title": "Sessions",
        "nav_sessions": true,
        "sessions": rows,
        "watch": watch,
        "index": index,
    })
}

/// Serf's member status codes.
fn member_status(code: u64) -> &'static str {
    match code {
        1 => "alive",
        2 => "leaving",
        3 => "left",
        4 => "failed",
        _ => "none",
    }
}

/// The cluster: leader, raft servers, this server's raft state, members.
pub fn cluster(leader: &Value, raft: &Value, me: &Value, members: &Value, index: u64) -> Value {
    let stats = &me["Stats"]["raft"];
    let servers: Vec<Value> = list(&raft["Servers"])
        .iter()
        .map(|s| {
            json!({
                "node": s["Node"],
                "node_href": node_href(text(&s["Node"])),
                "id": s["ID"],
                "address": s["Address"],
                "leader": s["Leader"],
                "voter": s["Voter"],
            })
        })
        .collect();
    let members: Vec<Value> = list(members)
        .iter()
        .map(|m| {
            let status = member_status(m["Status"].as_u64().unwrap_or(0));
            json!({
                "name": m["Name"],
                "node_href": node_href(text(&m["Name"])),
                "address": format!("{}:{}", text(&m["Addr"]), m["Port"]),
                "status": status,
                "health": match status { "alive" => "passing", "leaving" => "warning", _ => "critical" },
                "role": if text(&m["Tags"]["role"]) == "consul" { "server" } else { "client" },
                "dc": m["Tags"]["dc"],
            })
        })
        .collect();
    json!({
        "title": "Cluster",
        "nav_cluster": true,
        "leader": leader,
        "has_leader": !text(leader).is_empty(),
        "servers": servers,
        "raft_state": stats["state"],
        "term": stats["term"],
        "last_contact": stats["last_contact"],
        "commit_index": stats["commit_index"],
        "applied_index": stats["applied_index"],
        "last_log_index": stats["last_log_index"],
        "is_server": me["Config"]["Server"],
        "members": members,
        "watch": "/v1/catalog/nodes",
        "index": index,
    })
}

/// The agent: version, config, log level, stats.
pub fn agent(me: &Value) -> Value {
    let stats: Vec<Value> = me["Stats"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(section, v)| json!({"name": section, "rows": pairs(v)}))
        .collect();
    json!({
        "title": "Agent",
        "nav_agent": true,
        "version": me["Config"]["Version"],
        "pilotfish": me["Stats"]["runtime"]["version"],
        "log_level": me["DebugConfig"]["LogLevel"],
        "config": pairs(&me["Config"]),
        "member": pairs(&me["Member"]["Tags"]),
        "stats": stats,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    fn catalog() -> Catalog {
        Catalog {
            nodes: json!([{"Node": "n1", "Address": "10.0.0.1"}, {"Node": "n2", "Address": "10.0.0.2"}]),
            services: vec![
                (
                    "n1".into(),
                    json!({"Services": {
                        "web1": {"ID": "web1", "Service": "web", "Tags": ["a"]},
                        "db": {"ID": "db", "Service": "db", "Tags": []},
                    }}),
                ),
                (
                    "n2".into(),
                    json!({"Services": {"web2": {"ID": "web2", "Service": "web", "Tags": ["b"]}}}),
                ),
            ],
            checks: json!([
                {"Node": "n1", "CheckID": "serfHealth", "Status": "passing", "ServiceID": ""},
                {"Node": "n2", "CheckID": "serfHealth", "Status": "passing", "ServiceID": ""},
                {"Node": "n2", "CheckID": "c", "Status": "critical", "ServiceID": "web2"},
                {"Node": "n1", "CheckID": "d", "Status": "warning", "ServiceID": "db"},
            ]),
            index: 9,
        }
    }

    #[test]
    fn services_count_instances_by_health() {
        let page = services(&catalog(), "");
        let rows = page["services"].as_array().unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[1]["name"], "web");
        assert_eq!(rows[1]["tags"], json!(["a", "b"]));
        assert_eq!(
            (
                &rows[1]["passing"],
                &rows[1]["critical"],
                &rows[1]["status"]
            ),
            (&json!(1), &json!(1), &json!("critical"))
        );
        assert_eq!(rows[0]["status"], "warning");
        let filtered = services(&catalog(), "A");
        assert_eq!(filtered["services"].as_array().unwrap().len(), 1, "by tag");
    }

    #[test]
    fn nodes_show_their_worst_check() {
        let page = nodes(&catalog(), "");
        let rows = page["nodes"].as_array().unwrap();
        assert_eq!(rows[0]["status"], "warning");
        assert_eq!(rows[1]["status"], "critical");
        assert_eq!(rows[0]["services"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn kv_folders_and_links() {
        let page = kv_folder("a/", &json!(["a/", "a/b/", "a/k y"]), 3, "/w");
        let e = page["entries"].as_array().unwrap();
        assert_eq!(e.len(), 2);
        assert_eq!(
            (&e[0]["name"], &e[0]["folder"]),
            (&json!("b/"), &json!(true))
        );
        assert_eq!(e[1]["href"], "/ui/kv/a/k%20y");
        let key = kv_key("a/k", &json!({"Value": "aGk=", "ModifyIndex": 5}));
        assert_eq!(
            (&key["value"], &key["binary"]),
            (&json!("hi"), &json!(false))
        );
        assert_eq!(key["parent_href"], "/ui/kv/a/");
    }
}
