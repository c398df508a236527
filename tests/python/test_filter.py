"""`?filter=` through the real clients: py-consul's `filter_expr` arguments
(agent services and checks, catalog services/service/nodes/node, health
service/checks/node/state), and raw requests for what python-consul 0.7
cannot send. Services are named `flt-*` so the rest of the suite, which
shares the agent, is not affected.
"""

import inspect
import json
import urllib.error
import urllib.parse
import urllib.request

import pytest

PREFIX = "Failed to create boolean expression evaluator: "


def has_filter(method):
    return "filter_expr" in inspect.signature(method).parameters


@pytest.fixture
def fc(c):
    """The client, when it sends `filter` (py-consul)."""
    if not has_filter(c.agent.services):
        pytest.skip("this client has no filter_expr arguments")
    return c


@pytest.fixture(scope="module")
def services(agent):
    """flt-web-1 (v1, env=prod, passing), flt-web-2 (v2, critical), flt-db."""
    import consul

    host, port = agent
    c = consul.Consul(host=host, port=port)
    c.agent.service.register("flt-web", service_id="flt-web-1", port=8080, tags=["v1", "primary"],
                             check=consul.Check.ttl("30s"))
    c.agent.service.register("flt-web", service_id="flt-web-2", port=8081, tags=["v2"],
                             check=consul.Check.ttl("30s"))
    c.agent.service.register("flt-db", port=5432)
    c.agent.check.ttl_pass("service:flt-web-1")
    c.agent.check.ttl_fail("service:flt-web-2")
    # Meta through the raw API: python-consul 0.7's register has no meta.
    body = json.dumps({"ID": "flt-web-1", "Name": "flt-web", "Tags": ["v1", "primary"],
                       "Port": 8080, "Meta": {"env": "prod"}, "Check": {"TTL": "30s"}})
    raw(agent, "PUT", "/v1/agent/service/register", body.encode())
    c.agent.check.ttl_pass("service:flt-web-1")
    yield
    for sid in ["flt-web-1", "flt-web-2", "flt-db"]:
        c.agent.service.deregister(sid)


def raw(agent, method, path, body=None):
    host, port = agent
    req = urllib.request.Request("http://%s:%d%s" % (host, port, path), data=body, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def raw_filter(agent, path, expr):
    sep = "&" if "?" in path else "?"
    return raw(agent, "GET", path + sep + urllib.parse.urlencode({"filter": expr}))


def test_agent_services_and_checks(fc, services):
    got = fc.agent.services(filter_expr='Service == "flt-web" and v1 in Tags')
    assert sorted(got) == ["flt-web-1"]
    got = fc.agent.services(filter_expr="Service matches `^flt-` and Tags is empty")
    assert sorted(got) == ["flt-db"]
    got = fc.agent.services(filter_expr="Meta.env == prod and Port == 8080")
    assert sorted(got) == ["flt-web-1"]
    got = fc.agent.checks(filter_expr='ServiceName == "flt-web" and Status == critical')
    assert sorted(got) == ["service:flt-web-2"]


def test_catalog(fc, services):
    _, got = fc.catalog.services(filter_expr='ServiceName contains "flt-" and v2 in ServiceTags')
    assert got == {"flt-web": ["v2"]}
    _, rows = fc.catalog.service("flt-web", filter_expr="ServicePort == 8081")
    assert [r["ServiceID"] for r in rows] == ["flt-web-2"]
    _, rows = fc.catalog.service("flt-web", tag="v1", filter_expr="ServicePort == 8081")
    assert rows == []
    _, nodes = fc.catalog.nodes(filter_expr='Node == "pytest-node"')
    assert [n["Node"] for n in nodes] == ["pytest-node"]
    _, node = fc.catalog.node("pytest-node", filter_expr='Service == "flt-db"')
    assert list(node["Services"]) == ["flt-db"]


def test_health(fc, services):
    _, entries = fc.health.service("flt-web", filter_expr="Checks.Status == critical")
    assert [e["Service"]["ID"] for e in entries] == ["flt-web-2"]
    _, entries = fc.health.service("flt-web", passing=True, filter_expr="Service.Meta.env == prod")
    assert [e["Service"]["ID"] for e in entries] == ["flt-web-1"]
    _, checks = fc.health.checks("flt-web", filter_expr="Status == passing")
    assert [c["CheckID"] for c in checks] == ["service:flt-web-1"]
    _, checks = fc.health.state("critical", filter_expr='ServiceName == "flt-web"')
    assert [c["CheckID"] for c in checks] == ["service:flt-web-2"]
    _, checks = fc.health.node("pytest-node", filter_expr='ServiceID == "flt-web-1"')
    assert [c["CheckID"] for c in checks] == ["service:flt-web-1"]


def test_a_filtered_blocking_query(fc, services):
    index, entries = fc.health.service("flt-web", filter_expr='"v3" in Service.Tags')
    assert entries == []
    fc.agent.service.register("flt-web", service_id="flt-web-3", port=8083, tags=["v3"])
    try:
        index2, entries = fc.health.service("flt-web", index=index, wait="10s",
                                            filter_expr='"v3" in Service.Tags')
        assert int(index2) > int(index)
        assert [e["Service"]["ID"] for e in entries] == ["flt-web-3"]
    finally:
        fc.agent.service.deregister("flt-web-3")


def test_errors_through_the_client(fc, services):
    import consul

    with pytest.raises(consul.ConsulException) as e:
        fc.health.service("flt-web", filter_expr="Service.Foo == 1")
    assert str(e.value) == '500 %sSelector "Service.Foo" is not valid' % PREFIX
    with pytest.raises(consul.ConsulException) as e:
        fc.agent.services(filter_expr="foo")
    assert str(e.value) == (
        '500 %s1:4 (3): no match found, expected: "!=", ".", "==", "[", [ \\t\\r\\n] or [a-zA-Z0-9_]'
        % PREFIX)


def test_raw_requests(agent, services):
    # Any client, python-consul 0.7 included: the query as the Go client
    # encodes it (spaces as `+`).
    status, body = raw(agent, "GET", "/v1/agent/services?filter=Service+%3D%3D+%22flt-db%22")
    assert status == 200 and sorted(json.loads(body)) == ["flt-db"]
    status, body = raw_filter(agent, "/v1/catalog/service/flt-web", "ServiceTags is not empty and not (v1 in ServiceTags)")
    assert status == 200 and [r["ServiceID"] for r in json.loads(body)] == ["flt-web-2"]
    cases = [
        ("/v1/health/state/any", "(Status == passing", "1:19 (18): rule grouping: Unmatched parentheses"),
        ("/v1/catalog/nodes", "Meta.rack.x == 1", 'Selector "Meta.rack.x" is not valid'),
        ("/v1/agent/services", "Port matches 80", 'Invalid match operator "Matches" for selector "Port"'),
        ("/v1/health/service/none", "Service.Port == abc",
         'Failed to coerce value "abc" for selector "Service.Port": '
         'strconv.ParseInt: parsing "abc": invalid syntax'),
    ]
    for path, expr, want in cases:
        assert raw_filter(agent, path, expr) == (500, PREFIX + want), (path, expr)
