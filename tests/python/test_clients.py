"""Real Consul clients against the agent: python-consul 0.7 (Debian's
python3-consul) and py-consul (PyPI) run this same file; every call below is
the public API both libraries share, used the way applications use it."""

import threading
import time
import http.server
import socket

import consul
import pytest


def _version():
    return getattr(consul, "__version__", "0")


# ---------------------------------------------------------------- KV

def test_kv_put_get_delete(c, prefix):
    assert c.kv.put(prefix + "a", "hello") is True
    index, data = c.kv.get(prefix + "a")
    assert data["Value"] == b"hello"
    assert data["Key"] == prefix + "a"
    assert index >= data["ModifyIndex"] >= data["CreateIndex"] > 0
    assert c.kv.delete(prefix + "a") is True
    index, data = c.kv.get(prefix + "a")
    assert data is None
    assert index > 0


def test_kv_cas_and_flags(c, prefix):
    key = prefix + "cas"
    assert c.kv.put(key, "v1", cas=0) is True
    assert c.kv.put(key, "v2", cas=0) is False  # create-only: exists
    _, d = c.kv.get(key)
    assert c.kv.put(key, "v3", cas=d["ModifyIndex"] + 1000) is False
    assert c.kv.put(key, "v3", cas=d["ModifyIndex"], flags=42) is True
    _, d = c.kv.get(key)
    assert d["Value"] == b"v3" and d["Flags"] == 42


def test_kv_recurse_keys_separator(c, prefix):
    for k in ["x/1", "x/2", "y/1", "z"]:
        c.kv.put(prefix + k, k)
    _, items = c.kv.get(prefix, recurse=True)
    assert [i["Key"] for i in items] == [prefix + k for k in ["x/1", "x/2", "y/1", "z"]]
    _, keys = c.kv.get(prefix, keys=True)
    assert keys == [prefix + k for k in ["x/1", "x/2", "y/1", "z"]]
    _, keys = c.kv.get(prefix, keys=True, separator="/")
    assert keys == [prefix + "x/", prefix + "y/", prefix + "z"]
    assert c.kv.delete(prefix + "x/", recurse=True) is True
    _, keys = c.kv.get(prefix, keys=True)
    assert keys == [prefix + "y/1", prefix + "z"]


def test_kv_raw_value(c, prefix):
    c.kv.put(prefix + "raw", "plain text")
    _, body = c.kv.get(prefix + "raw", raw=True)
    assert body == b"plain text"


def test_kv_empty_value_is_none(c, prefix):
    c.kv.put(prefix + "empty", "")
    _, d = c.kv.get(prefix + "empty")
    assert d["Value"] is None


def test_locks_acquire_release(c, prefix):
    key = prefix + "leader"
    s1 = c.session.create(ttl=30, behavior="release")
    s2 = c.session.create(ttl=30, behavior="release")
    try:
        assert c.kv.put(key, "me", acquire=s1) is True
        assert c.kv.put(key, "me again", acquire=s1) is True  # holder re-acquires
        assert c.kv.put(key, "you", acquire=s2) is False
        _, d = c.kv.get(key)
        assert d["Session"] == s1 and d["LockIndex"] == 1 and d["Value"] == b"me again"
        assert c.kv.put(key, "bye", release=s2) is False
        assert c.kv.put(key, "bye", release=s1) is True
        _, d = c.kv.get(key)
        assert "Session" not in d or d["Session"] is None
    finally:
        c.session.destroy(s1)
        c.session.destroy(s2)


# ---------------------------------------------------------------- txn

@pytest.mark.skipif(not hasattr(consul.Consul, "Txn"), reason="this client has no txn API")
def test_txn_commit_and_rollback(c, prefix):
    import base64
    b64 = lambda s: base64.b64encode(s.encode()).decode()
    r = c.txn.put([
        {"KV": {"Verb": "set", "Key": prefix + "t1", "Value": b64("one")}},
        {"KV": {"Verb": "set", "Key": prefix + "t2", "Value": b64("two")}},
    ])
    assert len(r["Results"]) == 2
    _, d = c.kv.get(prefix + "t2")
    assert d["Value"] == b"two"
    with pytest.raises(Exception):
        c.txn.put([
            {"KV": {"Verb": "set", "Key": prefix + "t3", "Value": b64("three")}},
            {"KV": {"Verb": "cas", "Key": prefix + "t1", "Value": b64("x"), "Index": 1}},
        ])
    _, d = c.kv.get(prefix + "t3")
    assert d is None  # rolled back as a whole


# ---------------------------------------------------------------- sessions

def test_session_create_renew_destroy(c):
    sid = c.session.create(name="worker", ttl=15, lock_delay=0)
    _, info = c.session.info(sid)
    assert info["ID"] == sid and info["Name"] == "worker" and info["TTL"] == "15s"
    renewed = c.session.renew(sid)
    assert renewed["ID"] == sid
    _, sessions = c.session.list()
    assert sid in [s["ID"] for s in sessions]
    assert c.session.destroy(sid) is True
    _, info = c.session.info(sid)
    assert info is None


def test_session_renew_unknown_is_not_found(c):
    with pytest.raises(consul.NotFound):
        c.session.renew("00000000-0000-0000-0000-000000000000")


def test_session_ttl_out_of_range_is_refused(c):
    with pytest.raises(Exception) as e:
        c.session.create(ttl=5)
    assert "Invalid Session TTL" in str(e.value)


def test_session_ttl_expiry_deletes_keys(c, prefix):
    key = prefix + "ephemeral"
    sid = c.session.create(ttl=10, behavior="delete", lock_delay=0)
    assert c.kv.put(key, "x", acquire=sid) is True
    # Consul honours TTL x2 before invalidating: gone within ~20 s, not before 10.
    time.sleep(9)
    assert c.kv.get(key)[1] is not None
    deadline = time.time() + 25
    while time.time() < deadline and c.kv.get(key)[1] is not None:
        time.sleep(0.5)
    assert c.kv.get(key)[1] is None
    _, info = c.session.info(sid)
    assert info is None


# ---------------------------------------------------------------- agent, health, catalog

def test_service_with_ttl_check(c):
    c.agent.service.register("web", service_id="web-1", port=8080, tags=["v1"],
                             check=consul.Check.ttl("10s"))
    try:
        _, nodes = c.health.service("web", passing=True)
        assert nodes == []  # TTL checks start critical
        c.agent.check.ttl_pass("service:web-1")
        _, nodes = c.health.service("web", passing=True)
        assert [n["Service"]["ID"] for n in nodes] == ["web-1"]
        assert nodes[0]["Service"]["Port"] == 8080 and nodes[0]["Service"]["Tags"] == ["v1"]
        _, services = c.catalog.services()
        assert services["web"] == ["v1"]
        assert "web-1" in c.agent.services()
        c.agent.check.ttl_fail("service:web-1", notes="broken")
        _, nodes = c.health.service("web", passing=True)
        assert nodes == []
        _, nodes = c.health.service("web")
        assert nodes[0]["Checks"][-1]["Status"] == "critical"
    finally:
        c.agent.service.deregister("web-1")
    _, nodes = c.health.service("web")
    assert nodes == []


class _Ok(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):
        pass


def _wait_status(c, check_id, status, deadline=15):
    end = time.time() + deadline
    while time.time() < end:
        checks = c.agent.checks()
        if check_id in checks and checks[check_id]["Status"] == status:
            return
        time.sleep(0.2)
    raise AssertionError("%s never became %s: %s" % (check_id, status, c.agent.checks().get(check_id)))


def test_http_check_follows_the_endpoint(c):
    srv = http.server.HTTPServer(("127.0.0.1", 0), _Ok)
    port = srv.server_address[1]
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    c.agent.service.register("api", service_id="api-1", port=port,
                             check=consul.Check.http("http://127.0.0.1:%d/health" % port, "1s"))
    try:
        _wait_status(c, "service:api-1", "passing")
        srv.shutdown()
        srv.server_close()
        _wait_status(c, "service:api-1", "critical")
    finally:
        c.agent.service.deregister("api-1")


def test_tcp_check(c):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    port = listener.getsockname()[1]
    c.agent.service.register("db", service_id="db-1", port=port,
                             check=consul.Check.tcp("127.0.0.1", port, "1s"))
    try:
        _wait_status(c, "service:db-1", "passing")
        listener.close()
        _wait_status(c, "service:db-1", "critical")
    finally:
        c.agent.service.deregister("db-1")


def test_catalog_nodes_include_the_agent(c):
    _, nodes = c.catalog.nodes()
    assert len(nodes) >= 1
    assert all("Node" in n and "Address" in n for n in nodes)


# ---------------------------------------------------------------- blocking queries

def test_blocking_query_returns_on_change(c, prefix):
    key = prefix + "watched"
    c.kv.put(key, "old")
    index, _ = c.kv.get(key)
    result = {}

    def watch():
        result["index"], result["data"] = c.kv.get(key, index=index, wait="30s")

    t = threading.Thread(target=watch)
    start = time.time()
    t.start()
    time.sleep(0.5)
    assert t.is_alive(), "a blocking query must wait for a change"
    c.kv.put(key, "new")
    t.join(10)
    assert not t.is_alive()
    assert time.time() - start < 10
    assert result["data"]["Value"] == b"new"
    assert result["index"] > index


def test_blocking_query_times_out_without_change(c, prefix):
    key = prefix + "quiet"
    c.kv.put(key, "v")
    index, _ = c.kv.get(key)
    start = time.time()
    new_index, data = c.kv.get(key, index=index, wait="1s")
    elapsed = time.time() - start
    assert 0.9 <= elapsed < 5
    assert new_index == index and data["Value"] == b"v"


def test_blocking_health_query_ignores_other_services(c):
    c.agent.service.register("alpha", service_id="alpha-1", port=1, check=consul.Check.ttl("30s"))
    c.agent.service.register("beta", service_id="beta-1", port=2, check=consul.Check.ttl("30s"))
    try:
        index, _ = c.health.service("alpha")
        result = {}

        def watch():
            result["index"], _ = c.health.service("alpha", index=index, wait="2s")

        t = threading.Thread(target=watch)
        start = time.time()
        t.start()
        c.agent.check.ttl_pass("service:beta-1")  # another service: no wake-up
        t.join(10)
        assert time.time() - start >= 1.8
        assert result["index"] == index
    finally:
        c.agent.service.deregister("alpha-1")
        c.agent.service.deregister("beta-1")
