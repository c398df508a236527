"""Coordinates and the agent's runtime endpoints through the real client
library (py-consul's `coordinate`, `catalog(near=)`, `health(near=)`,
`agent.metrics/reload/token`).

Coordinates need RTTs between two agents, so this module starts its own
pair (unless CONSUL_HTTP_ADDR points at an existing agent): a server and a
client agent joined to it on loopback, syncing their coordinates every
~200 ms (Consul: every 15 s) so the test does not wait for Consul's cadence.
"""

import os
import subprocess
import tempfile
import time

import pytest

from conftest import REPO, free_port, wait_http

KEY = "cGlsb3RmaXNoLXRlc3QtY2x1c3Rlci1rZXktMzJieXQ="
FAST = ["--sync-coordinate-interval-min", "200ms", "--coordinate-update-period", "300ms"]


def eventually(what, f, limit=60.0):
    end = time.time() + limit
    last = None
    while time.time() < end:
        try:
            got = f()
            if got:
                return got
        except Exception as e:  # noqa: BLE001 - retried, reported at the end
            last = e
        time.sleep(0.2)
    raise AssertionError("%s: not within %ss (last: %r)" % (what, limit, last))


@pytest.fixture(scope="module")
def pair():
    """(server port, client port, server node, client node)."""
    if os.environ.get("CONSUL_HTTP_ADDR"):
        pytest.skip("needs two agents of its own")
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(REPO, "target"))
    binary = os.environ.get("PILOTFISH_BIN", os.path.join(target, "debug", "pilotfish"))
    tmp = tempfile.TemporaryDirectory()
    procs = []
    s_http, s_srv = free_port(), free_port()
    c_http, c_srv = free_port(), free_port()
    common = ["--client", "127.0.0.1", "--bind", "127.0.0.1", "--encrypt", KEY] + FAST
    procs.append(subprocess.Popen(
        [binary, "agent", "--server", "--bootstrap-expect", "1", "--node", "coord-server",
         "--data-dir", os.path.join(tmp.name, "s"), "--http-port", str(s_http),
         "--dns-port", str(free_port()), "--server-port", str(s_srv)] + common,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    procs.append(subprocess.Popen(
        [binary, "agent", "--node", "coord-client", "--data-dir", os.path.join(tmp.name, "c"),
         "--http-port", str(c_http), "--dns-port", str(free_port()), "--server-port", str(c_srv),
         "--retry-join", "127.0.0.1:%d" % s_srv] + common,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    try:
        wait_http("http://127.0.0.1:%d" % s_http)
        wait_http("http://127.0.0.1:%d" % c_http)
        yield s_http, c_http, "coord-server", "coord-client"
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        tmp.cleanup()


def client(port):
    import consul
    return consul.Consul(host="127.0.0.1", port=port)


def test_coordinates_of_both_agents_from_their_rtts(pair):
    s_port, c_port, server, agent = pair
    s = client(s_port)

    def both():
        _, rows = s.coordinate.nodes()
        by_node = {r["Node"]: r for r in rows}
        if set(by_node) != {server, agent}:
            return None
        for r in rows:
            vec = r["Coord"]["Vec"]
            if len(vec) != 8 or not any(vec) or r["Coord"]["Error"] >= 1.5:
                return None
        return by_node

    by_node = eventually("both agents with learned coordinates", both)
    for r in by_node.values():
        assert r["Segment"] == ""
        assert set(r["Coord"]) == {"Vec", "Error", "Adjustment", "Height"}
    # The client agent answers the same replicated coordinates.
    c = client(c_port)
    _, rows = c.coordinate.nodes(consistency="stale")
    assert {r["Node"] for r in rows} == {server, agent}
    if hasattr(c.coordinate, "node"):
        _, mine = c.coordinate.node(agent)
        assert [r["Node"] for r in mine] == [agent]

    dcs = s.coordinate.datacenters()
    assert [d["Datacenter"] for d in dcs] == ["dc1"]
    assert dcs[0]["AreaID"] == "wan"
    assert [e["Node"] for e in dcs[0]["Coordinates"]] == [server]


def test_near_sorts_catalog_and_health(pair):
    s_port, _, server, agent = pair
    s = client(s_port)
    eventually("coordinates for both", lambda: len(s.coordinate.nodes()[1]) == 2)
    # A far node with a coordinate of its own, set through the update API.
    s.catalog.register("far-away", "10.1.2.3", service={"Service": "web", "Port": 80})
    s.catalog.register(server, "127.0.0.1", service={"Service": "web", "Port": 81})
    far = {"Node": "far-away", "Segment": "",
           "Coord": {"Vec": [2.0, 0, 0, 0, 0, 0, 0, 0], "Error": 0.2, "Adjustment": 0, "Height": 1e-5}}
    import json
    import urllib.request
    req = urllib.request.Request("http://127.0.0.1:%d/v1/coordinate/update" % s_port,
                                 data=json.dumps(far).encode(), method="PUT")
    with urllib.request.urlopen(req) as r:
        assert r.status == 200 and r.read() == b""
    eventually("far-away's coordinate applied",
               lambda: any(r["Node"] == "far-away" for r in s.coordinate.nodes()[1]))

    _, nodes = s.catalog.nodes(near="far-away")
    assert nodes[0]["Node"] == "far-away"
    _, nodes = s.catalog.nodes(near="_agent")
    assert nodes[0]["Node"] != "far-away" and nodes[-1]["Node"] == "far-away"
    _, plain = s.catalog.nodes()
    assert [n["Node"] for n in plain] == sorted(n["Node"] for n in plain)
    _, entries = s.health.service("web", near="far-away")
    assert [e["Node"]["Node"] for e in entries] == ["far-away", server]
    _, entries = s.health.service("web", near=server)
    assert [e["Node"]["Node"] for e in entries] == [server, "far-away"]


def test_agent_metrics_reload_and_tokens(c):
    if not hasattr(c.agent, "metrics"):
        pytest.skip("this client library does not wrap /v1/agent/metrics")
    c.kv.put("pytest/metrics", "x")
    m = c.agent.metrics()
    assert set(m) >= {"Timestamp", "Gauges", "Points", "Counters", "Samples"}
    assert m["Timestamp"].endswith(" +0000 UTC")
    names = {g["Name"] for g in m["Gauges"]} | {s["Name"] for s in m["Samples"]}
    assert "consul.api.http" in names or "consul.runtime.sys_bytes" in names
    for s in m["Samples"]:
        assert isinstance(s["Labels"], dict) and s["Min"] <= s["Mean"] <= s["Max"]
    # Without a Prometheus retention time: Consul's empty 200.
    assert c.agent.metrics(format_prometheus=True) in ("", b"")
    assert c.agent.reload() is True
    import consul
    with pytest.raises(consul.ACLDisabled):
        c.agent.token.set_default("abc")
