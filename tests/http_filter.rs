//! `?filter=` against the real binary (`pilotfish agent --dev`): every
//! operator, `and`/`or`/`not` and parentheses on `/v1/agent/services`;
//! each filterable endpoint with its own selectors, combined with `?tag=`,
//! `?passing` and blocking queries; and Consul's 500s with their texts.
#![allow(clippy::unwrap_used)]

#[allow(dead_code, unused_imports)]
mod common;

use std::time::Duration;

use common::agent::{consul_index, Agent};
use common::text;
use serde_json::{json, Value};

const NODE: &str = "filter-node";

fn start() -> Agent {
    Agent::dev()
        .args(["--node", NODE])
        .wait_for_leader()
        .start()
}

/// A query component as Go's `url.Values.Encode()` writes it (space = `+`).
fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                char::from(b).to_string()
            }
            b' ' => "+".to_string(),
            b => format!("%{b:02X}"),
        })
        .collect()
}

/// `GET path?filter=…` (`path` may carry other parameters).
fn get(agent: &Agent, path: &str, filter: &str) -> (u16, String, u64) {
    let sep = if path.contains('?') { '&' } else { '?' };
    let url = format!("{path}{sep}filter={}", enc(filter));
    let (status, headers, body) = agent.request("GET", &url, b"").unwrap();
    // Agent endpoints send no index.
    let index = if headers.iter().any(|(k, _)| k == "x-consul-index") {
        consul_index(&headers)
    } else {
        0
    };
    (status, text(&body), index)
}

fn get_json(agent: &Agent, path: &str, filter: &str) -> Value {
    let (status, body, _) = get(agent, path, filter);
    assert_eq!(status, 200, "{path} {filter}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

fn put(agent: &Agent, path: &str, body: Value) {
    let (status, _, reply) = agent
        .request("PUT", path, body.to_string().as_bytes())
        .unwrap();
    assert_eq!(status, 200, "{path}: {}", text(&reply));
}

/// Three services on the agent: web-1 (v1, primary, env=prod, a passing
/// TTL check), web-2 (v2, env=staging, its check critical) and db.
fn register(agent: &Agent) {
    put(
        agent,
        "/v1/agent/service/register",
        json!({"ID": "web-1", "Name": "web", "Tags": ["v1", "primary"], "Port": 8080,
               "Address": "10.0.0.1", "Meta": {"env": "prod", "build-id": "2024-07"},
               "Check": {"TTL": "30s"}, "Checks": null}),
    );
    put(
        agent,
        "/v1/agent/service/register",
        json!({"ID": "web-2", "Name": "web", "Tags": ["v2"], "Port": 8081,
               "Meta": {"env": "staging"}, "Check": {"TTL": "30s"}, "Checks": null}),
    );
    put(
        agent,
        "/v1/agent/service/register",
        json!({"Name": "db", "Port": 5432, "Weights": {"Passing": 3, "Warning": 1},
               "EnableTagOverride": true, "Check": null, "Checks": null}),
    );
    put(agent, "/v1/agent/check/pass/service:web-1", json!(null));
    put(agent, "/v1/agent/check/fail/service:web-2", json!(null));
}

/// The keys of a JSON object, or the `field` of each element of an array.
fn ids(v: &Value, field: &str) -> Vec<String> {
    let mut out: Vec<String> = match v {
        Value::Object(o) => o.keys().cloned().collect(),
        Value::Array(a) => a
            .iter()
            .map(|e| e[field].as_str().unwrap().to_string())
            .collect(),
        v => panic!("not a list: {v}"),
    };
    out.sort();
    out
}

#[test]
fn every_operator_and_the_boolean_structure() {
    let agent = start();
    register(&agent);
    let cases: &[(&str, &[&str])] = &[
        ("Service == web", &["web-1", "web-2"]),
        ("Service == \"db\"", &["db"]),
        ("Service != web", &["db"]),
        ("Port == 8081", &["web-2"]),
        ("Port != 8081", &["db", "web-1"]),
        ("v1 in Tags", &["web-1"]),
        ("v1 not in Tags", &["db", "web-2"]),
        ("Tags contains primary", &["web-1"]),
        ("Tags not contains primary", &["db", "web-2"]),
        ("\"eb\" in Service", &["web-1", "web-2"]),
        ("Service contains d", &["db"]),
        ("Tags is empty", &["db"]),
        ("Tags is not empty", &["web-1", "web-2"]),
        ("Meta is empty", &["db"]),
        ("env in Meta", &["web-1", "web-2"]),
        ("env not in Meta", &["db"]),
        ("Meta.env == prod", &["web-1"]),
        ("Meta[\"build-id\"] matches \"^2024\"", &["web-1"]),
        ("Meta.env != prod", &["db", "web-2"]),
        ("ID matches \"^web-[12]$\"", &["web-1", "web-2"]),
        ("ID not matches \"-\"", &["db"]),
        ("Weights.Passing == 3", &["db"]),
        ("EnableTagOverride == true", &["db"]),
        ("Address == \"10.0.0.1\"", &["web-1"]),
        ("Service == web and Port == 8080", &["web-1"]),
        ("Service == db or Port == 8081", &["db", "web-2"]),
        ("not Service == web", &["db"]),
        ("not not Service == db", &["db"]),
        (
            "Service == db or Service == web and v2 in Tags",
            &["db", "web-2"],
        ),
        (
            "(Service == db or Service == web) and v2 in Tags",
            &["web-2"],
        ),
        ("not (Service == db or v2 in Tags)", &["web-1"]),
        ("Service == nothing", &[]),
    ];
    for (filter, want) in cases {
        let got = ids(&get_json(&agent, "/v1/agent/services", filter), "");
        assert_eq!(got, *want, "{filter}");
    }
    // No filter, or an empty one, is every service.
    assert_eq!(
        ids(&get_json(&agent, "/v1/agent/services", ""), "").len(),
        3
    );
    // The Go client's encoding: `+` for spaces, `%3D` for `=`.
    let (status, _, body) = agent
        .request(
            "GET",
            "/v1/agent/services?filter=Service+%3D%3D+%22db%22",
            b"",
        )
        .unwrap();
    assert_eq!(status, 200);
    assert_eq!(ids(&serde_json::from_slice(&body).unwrap(), ""), ["db"]);
}

#[test]
fn each_endpoint_filters_its_own_elements() {
    let agent = start();
    register(&agent);
    put(
        &agent,
        "/v1/catalog/register",
        json!({"Node": "ext-1", "Address": "10.0.0.9", "NodeMeta": {"rack": "r1"},
               "Service": {"ID": "redis1", "Service": "redis", "Tags": ["cache"], "Port": 6379},
               "Check": {"CheckID": "redis-alive", "Name": "redis", "Status": "warning",
                         "ServiceID": "redis1"}}),
    );
    let catalog_services = get_json(&agent, "/v1/catalog/services", "ServiceTags contains v2");
    assert_eq!(catalog_services, json!({"web": ["v2"]}));
    let catalog_services = get_json(&agent, "/v1/catalog/services", "NodeMeta.rack == r1");
    assert_eq!(catalog_services, json!({"redis": ["cache"]}));

    let rows = get_json(
        &agent,
        "/v1/catalog/service/web",
        "ServiceMeta.env == staging",
    );
    assert_eq!(ids(&rows, "ServiceID"), ["web-2"]);
    let rows = get_json(
        &agent,
        "/v1/catalog/service/web",
        "ServicePort == 8080 and Node == \"filter-node\"",
    );
    assert_eq!(ids(&rows, "ServiceID"), ["web-1"]);
    // With ?tag=: both apply.
    let rows = get_json(
        &agent,
        "/v1/catalog/service/web?tag=v1",
        "ServicePort == 8081",
    );
    assert_eq!(rows, json!([]));

    let nodes = get_json(&agent, "/v1/catalog/nodes", "Meta[\"rack\"] == r1");
    assert_eq!(ids(&nodes, "Node"), ["ext-1"]);
    let nodes = get_json(&agent, "/v1/catalog/nodes", "rack not in Meta");
    assert_eq!(ids(&nodes, "Node"), [NODE]);

    let node = get_json(
        &agent,
        &format!("/v1/catalog/node/{NODE}"),
        "Service == web",
    );
    assert_eq!(node["Node"]["Node"], NODE);
    assert_eq!(ids(&node["Services"], ""), ["web-1", "web-2"]);
    let missing = get_json(&agent, "/v1/catalog/node/nope", "Service == web");
    assert_eq!(missing, Value::Null);

    let entries = get_json(
        &agent,
        "/v1/health/service/web",
        "Checks.Status == critical",
    );
    assert_eq!(entries.as_array().unwrap().len(), 1);
    assert_eq!(entries[0]["Service"]["ID"], "web-2");
    let entries = get_json(
        &agent,
        "/v1/health/service/web",
        "not (Checks.Status == critical) and Service.Meta.env == prod and Node.Node == \"filter-node\"",
    );
    assert_eq!(entries[0]["Service"]["ID"], "web-1");
    assert_eq!(entries.as_array().unwrap().len(), 1);
    // With ?passing: web-2 is critical, so nothing is left.
    let entries = get_json(
        &agent,
        "/v1/health/service/web?passing",
        "v2 in Service.Tags",
    );
    assert_eq!(entries, json!([]));

    let checks = get_json(&agent, "/v1/health/checks/web", "Status == passing");
    assert_eq!(ids(&checks, "CheckID"), ["service:web-1"]);
    let checks = get_json(
        &agent,
        &format!("/v1/health/node/{NODE}"),
        "ServiceID == \"\"",
    );
    assert_eq!(ids(&checks, "CheckID"), ["serfHealth"]);
    let checks = get_json(
        &agent,
        "/v1/health/state/any",
        "ServiceName == redis or Status == critical",
    );
    assert_eq!(ids(&checks, "CheckID"), ["redis-alive", "service:web-2"]);
    let checks = get_json(
        &agent,
        "/v1/health/state/critical",
        "ServiceTags contains v2",
    );
    assert_eq!(ids(&checks, "CheckID"), ["service:web-2"]);
    let checks = get_json(
        &agent,
        "/v1/health/checks/web",
        "Definition.TTL == 30000000000",
    );
    assert_eq!(ids(&checks, "CheckID"), ["service:web-1", "service:web-2"]);

    let checks = get_json(&agent, "/v1/agent/checks", "Status != passing");
    assert_eq!(ids(&checks, ""), ["service:web-2"]);

    let members = get_json(
        &agent,
        "/v1/agent/members",
        "Tags.role == consul and Status == 1",
    );
    assert_eq!(ids(&members, "Name"), [NODE]);
    assert_eq!(
        get_json(&agent, "/v1/agent/members", "Status == 3"),
        json!([])
    );
}

/// The error text after Consul's prefix, and the status.
fn error(agent: &Agent, path: &str, filter: &str) -> (u16, String) {
    let (status, body, _) = get(agent, path, filter);
    (status, body)
}

const PREFIX: &str = "Failed to create boolean expression evaluator: ";

#[test]
fn malformed_filters_and_unknown_selectors_are_consuls_500s() {
    let agent = start();
    let syntax = format!(
        "{PREFIX}1:4 (3): no match found, expected: \"!=\", \".\", \"==\", \"[\", [ \\t\\r\\n] or [a-zA-Z0-9_]"
    );
    // Every filterable endpoint, even with nothing to filter.
    for path in [
        "/v1/agent/services",
        "/v1/agent/checks",
        "/v1/agent/members",
        "/v1/catalog/services",
        "/v1/catalog/service/none",
        "/v1/catalog/nodes",
        "/v1/catalog/node/none",
        "/v1/health/service/none",
        "/v1/health/checks/none",
        "/v1/health/node/none",
        "/v1/health/state/any",
    ] {
        assert_eq!(error(&agent, path, "foo"), (500, syntax.clone()), "{path}");
    }
    let cases: &[(&str, &str, &str)] = &[
        ("/v1/health/service/none", "Service.Foo == 1", "Selector \"Service.Foo\" is not valid"),
        ("/v1/catalog/service/none", "Service == web", "Selector \"Service\" is not valid"),
        ("/v1/catalog/nodes", "Meta.rack.x == 1", "Selector \"Meta.rack.x\" is not valid"),
        ("/v1/agent/services", "Port matches 80", "Invalid match operator \"Matches\" for selector \"Port\""),
        ("/v1/agent/services", "Tags == v1", "Invalid match operator \"Equal\" for selector \"Tags\""),
        ("/v1/health/state/any", "Status is empty", "Invalid match operator \"Is Empty\" for selector \"Status\""),
        (
            "/v1/agent/services",
            "Port == abc",
            "Failed to coerce value \"abc\" for selector \"Port\": strconv.ParseInt: parsing \"abc\": invalid syntax",
        ),
        (
            "/v1/catalog/service/none",
            "ServiceName matches \"(\"",
            "Failed to compile regular expression \"(\": error parsing regexp: missing closing ): `(`",
        ),
        ("/v1/health/node/none", "(Status == passing", "1:19 (18): rule grouping: Unmatched parentheses"),
        ("/v1/health/node/none", "Status == \"passing", "1:19 (18): rule string: Unterminated string literal"),
        ("/v1/agent/services", "Meta[1] == x", "1:6 (5): rule index: Invalid index"),
        ("/v1/agent/services", "Port == 80x", "1:11 (10): rule number: Invalid number literal"),
    ];
    for (path, filter, want) in cases {
        assert_eq!(
            error(&agent, path, filter),
            (500, format!("{PREFIX}{want}")),
            "{path} {filter}"
        );
    }
    // Nesting: 32 levels of `not` and parentheses are served; thousands
    // are refused (500) instead of exhausting a worker's stack.
    let deep = format!("{}Service == db{}", "not (not (".repeat(8), "))".repeat(8));
    let (status, body, _) = get(&agent, "/v1/agent/services", &deep);
    assert_eq!((status, body.as_str()), (200, "{}"));
    let deeper = format!("/v1/agent/services?filter={}a==1", "(".repeat(6000));
    let (status, _, body) = agent.request("GET", &deeper, b"").unwrap();
    assert_eq!(status, 500);
    assert!(text(&body).contains("nests too deeply"), "{}", text(&body));
    assert_eq!(get(&agent, "/v1/agent/services", "").0, 200);

    // The answer is plain text, as Consul's.
    let (_, headers, _) = agent
        .request("GET", "/v1/agent/services?filter=foo", b"")
        .unwrap();
    assert!(headers
        .iter()
        .any(|(k, v)| k == "content-type" && v.starts_with("text/plain")));

    // /v1/agent/checks checks selectors only when it has a check to test,
    // and then without the prefix.
    assert_eq!(
        error(&agent, "/v1/agent/checks", "Nope == 1"),
        (200, "{}".to_string())
    );
    put(
        &agent,
        "/v1/agent/check/register",
        json!({"ID": "mem", "Name": "Memory", "TTL": "30s"}),
    );
    assert_eq!(
        error(&agent, "/v1/agent/checks", "Nope == 1"),
        (500, "Selector \"Nope\" is not valid".to_string())
    );
    assert_eq!(
        ids(&get_json(&agent, "/v1/agent/checks", "Name == Memory"), ""),
        ["mem"]
    );
}

#[test]
fn a_filtered_blocking_query_wakes_on_the_service_and_answers_filtered() {
    let agent = start();
    register(&agent);
    let filter = enc("Service.Tags contains v3");
    let (_, body, index) = get(&agent, "/v1/health/service/web", "Service.Tags contains v3");
    assert_eq!(body, "[]");
    let parked = agent.pending(
        "GET",
        &format!("/v1/health/service/web?index={index}&wait=30s&filter={filter}"),
    );
    put(
        &agent,
        "/v1/agent/service/register",
        json!({"ID": "web-3", "Name": "web", "Tags": ["v3"], "Port": 8083}),
    );
    let (status, headers, body) = parked.answer(Duration::from_secs(20));
    assert_eq!(status, 200);
    assert!(consul_index(&headers) > index);
    let entries: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(entries.as_array().unwrap().len(), 1, "{entries}");
    assert_eq!(entries[0]["Service"]["ID"], "web-3");

    // Two parked queries with different filters do not share an answer.
    let (_, _, index) = get(&agent, "/v1/catalog/service/web", "");
    let v1 = agent.pending(
        "GET",
        &format!(
            "/v1/catalog/service/web?index={index}&filter={}",
            enc("v1 in ServiceTags")
        ),
    );
    let v4 = agent.pending(
        "GET",
        &format!(
            "/v1/catalog/service/web?index={index}&filter={}",
            enc("v4 in ServiceTags")
        ),
    );
    put(
        &agent,
        "/v1/agent/service/register",
        json!({"ID": "web-4", "Name": "web", "Tags": ["v4"], "Port": 8084}),
    );
    let rows = |p: common::agent::Pending| -> Value {
        serde_json::from_slice(&p.answer(Duration::from_secs(20)).2).unwrap()
    };
    assert_eq!(ids(&rows(v1), "ServiceID"), ["web-1"]);
    assert_eq!(ids(&rows(v4), "ServiceID"), ["web-4"]);
}
