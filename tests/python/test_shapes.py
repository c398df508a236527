"""Service shapes through the real client libraries: weights, tagged
addresses and meta registered and read back through the agent, catalog and
health endpoints, and the servers' own `consul` service found through the
catalog and health APIs. Runs under python-consul 0.7 and py-consul (see
run.sh); python-consul's agent registration has no weights or meta, so it
registers those through the catalog only.
"""

import inspect

import pytest


def agent_register_params(c):
    return inspect.signature(c.agent.service.register).parameters


def test_consul_service_is_in_the_catalog(c):
    _, services = c.catalog.services()
    assert "consul" in services
    assert services["consul"] == []
    _, nodes = c.catalog.service("consul")
    assert len(nodes) == 1
    row = nodes[0]
    assert row["ServiceID"] == "consul"
    assert row["ServiceName"] == "consul"
    assert row["ServiceTags"] == []
    assert row["ServiceAddress"] == ""
    assert row["ServicePort"] > 0
    assert row["ServiceWeights"] == {"Passing": 1, "Warning": 1}
    assert row["ServiceMeta"]["raft_version"] == "3"
    assert row["Address"] == row["TaggedAddresses"]["lan"]
    _, entries = c.health.service("consul", passing=True)
    assert len(entries) == 1
    entry = entries[0]
    assert entry["Service"]["ID"] == "consul"
    assert entry["Node"]["Node"] == row["Node"]
    assert [ch["CheckID"] for ch in entry["Checks"]] == ["serfHealth"]
    assert entry["Checks"][0]["Status"] == "passing"
    # The agent's own view leaves it out, as Consul's does.
    assert "consul" not in c.agent.services()


def test_node_tagged_addresses(c):
    _, nodes = c.catalog.nodes()
    me = c.agent.self()["Config"]["NodeName"]
    node = [n for n in nodes if n["Node"] == me][0]
    addr = node["Address"]
    assert node["TaggedAddresses"] == {
        "lan": addr, "lan_ipv4": addr, "wan": addr, "wan_ipv4": addr,
    }


def test_agent_registration_round_trips_weights_tagged_addresses_meta(c):
    params = agent_register_params(c)
    if "weights" not in params:
        pytest.skip("python-consul 0.7 registers no weights or meta through the agent")
    assert c.agent.service.register(
        "shaped", service_id="shaped-1", address="10.20.30.40", port=8080,
        tags=["v2"], meta={"env": "prod", "build": "42"},
        weights={"Passing": 7, "Warning": 3},
        tagged_addresses={"wan": {"address": "203.0.113.5", "port": 80}},
    )
    try:
        svc = c.agent.services()["shaped-1"]
        assert svc["Meta"] == {"env": "prod", "build": "42"}
        assert svc["Weights"] == {"Passing": 7, "Warning": 3}
        assert svc["TaggedAddresses"] == {
            "wan": {"Address": "203.0.113.5", "Port": 80},
            "lan_ipv4": {"Address": "10.20.30.40", "Port": 8080},
            "wan_ipv4": {"Address": "10.20.30.40", "Port": 8080},
        }
        _, rows = c.catalog.service("shaped")
        assert len(rows) == 1
        assert rows[0]["ServiceWeights"] == {"Passing": 7, "Warning": 3}
        assert rows[0]["ServiceMeta"] == {"env": "prod", "build": "42"}
        assert rows[0]["ServiceTaggedAddresses"]["wan"] == {"Address": "203.0.113.5", "Port": 80}
        assert rows[0]["ServiceKind"] == ""
        assert rows[0]["ServiceProxy"] == {"Mode": "", "MeshGateway": {}, "Expose": {}}
        assert rows[0]["ServiceConnect"] == {}
        _, entries = c.health.service("shaped")
        s = entries[0]["Service"]
        assert s["Weights"] == {"Passing": 7, "Warning": 3}
        assert s["TaggedAddresses"]["wan_ipv4"] == {"Address": "10.20.30.40", "Port": 8080}
        assert s["Meta"]["build"] == "42"
        assert s["Proxy"] == {"Mode": "", "MeshGateway": {}, "Expose": {}}
        assert s["Connect"] == {}
        assert s["PeerName"] == ""
        assert "Kind" not in s
    finally:
        c.agent.service.deregister("shaped-1")


def test_agent_registration_defaults_weights(c):
    assert c.agent.service.register("plain", port=9000)
    try:
        svc = c.agent.services()["plain"]
        assert svc["Weights"] == {"Passing": 1, "Warning": 1}
        assert "TaggedAddresses" not in svc
        assert "Proxy" not in svc and "Connect" not in svc
    finally:
        c.agent.service.deregister("plain")


def test_catalog_registration_round_trips_weights_tagged_addresses_meta(c):
    service = {
        "Service": "ext-db", "ID": "ext-db-1", "Port": 5432, "Address": "10.9.8.7",
        "Tags": ["primary"], "Meta": {"version": "15"},
        "Weights": {"Passing": 5, "Warning": 1},
        "TaggedAddresses": {"lan": {"Address": "10.9.8.7", "Port": 5432}},
    }
    assert c.catalog.register("ext-node", "10.9.8.7", service=service)
    try:
        _, rows = c.catalog.service("ext-db")
        assert len(rows) == 1
        row = rows[0]
        assert row["ServiceWeights"] == {"Passing": 5, "Warning": 1}
        assert row["ServiceMeta"] == {"version": "15"}
        # The catalog adds no tagged addresses of its own.
        assert row["ServiceTaggedAddresses"] == {"lan": {"Address": "10.9.8.7", "Port": 5432}}
        assert row["ServiceLocality"] is None
        assert row["ServiceSocketPath"] == ""
        _, entries = c.health.service("ext-db", tag="primary")
        assert entries[0]["Service"]["Weights"] == {"Passing": 5, "Warning": 1}
        assert entries[0]["Node"]["Node"] == "ext-node"
    finally:
        c.catalog.deregister("ext-node")
