"""The operator and snapshot endpoints through the real client libraries'
own wrappers (py-consul has `operator` and `snapshot`; python-consul 0.7
only `operator.raft_config`, so the rest is skipped there), against the
session's `pilotfish agent --dev`: a lone server, with no gossip key.

A snapshot restore here puts back the state saved a moment before, so the
other tests sharing the agent see no difference.
"""

import gzip
import hashlib
import io
import json
import tarfile

import consul
import pytest


def has(c, part, method):
    return hasattr(getattr(c, part, None), method)


def test_raft_configuration_lists_the_lone_server(c):
    conf = c.operator.raft_config()
    assert len(conf["Servers"]) == 1
    server = conf["Servers"][0]
    assert server["Leader"] is True and server["Voter"] is True
    assert server["ProtocolVersion"] == "3"
    assert conf["Index"] >= 0


def test_autopilot_configuration_check_and_set(c):
    if not has(c, "operator", "update_autopilot_configuration"):
        pytest.skip("this client has no autopilot wrappers")
    conf = c.operator.autopilot_configuration()
    assert conf["LastContactThreshold"] == "200ms"
    assert conf["CleanupDeadServers"] is True
    index = conf["ModifyIndex"]
    assert index > 0
    # A stale cas: False, nothing changed.
    assert c.operator.update_autopilot_configuration(min_quorum=5, cas=index + 1000) is False
    assert c.operator.autopilot_configuration()["MinQuorum"] == conf["MinQuorum"]
    # The current one: True; omitted fields go back to Consul's defaults.
    assert c.operator.update_autopilot_configuration(
        min_quorum=1, server_stabilization_time="15s", cas=index
    ) is True
    now = c.operator.autopilot_configuration()
    assert now["MinQuorum"] == 1
    assert now["ServerStabilizationTime"] == "15s"
    assert now["CleanupDeadServers"] is True
    assert now["MaxTrailingLogs"] == 250
    assert now["ModifyIndex"] > index
    # Without cas: always applied.
    assert c.operator.update_autopilot_configuration(min_quorum=0) is True
    assert c.operator.autopilot_configuration()["MinQuorum"] == 0


def test_autopilot_health_of_the_lone_server(c):
    if not has(c, "operator", "autopilot_health"):
        pytest.skip("this client has no autopilot wrappers")
    health = c.operator.autopilot_health()
    assert health["Healthy"] is True
    assert health["FailureTolerance"] == 0
    (server,) = health["Servers"]
    assert server["Leader"] is True and server["Voter"] is True
    assert server["SerfStatus"] == "alive"
    assert server["LastIndex"] > 0 and server["LastTerm"] > 0
    assert server["LastContact"] == "0s"
    assert server["ID"] == c.operator.raft_config()["Servers"][0]["ID"]


def test_raft_peer_removal_and_transfer_errors(c):
    if not has(c, "operator", "raft_remove_peer"):
        pytest.skip("this client has no raft peer wrappers")
    with pytest.raises(consul.ConsulException) as e:
        c.operator.raft_remove_peer(address="1.2.3.4:5678")
    assert 'address "1.2.3.4:5678" was not found in the Raft configuration' in str(e.value)
    # A lone server has nobody to hand leadership to.
    with pytest.raises(consul.ConsulException) as e:
        c.operator.raft_transfer_leader()
    assert "no other voter" in str(e.value)


def test_keyring_without_a_gossip_key_is_consuls_error(c):
    if not has(c, "operator", "keyring_list"):
        pytest.skip("this client has no keyring wrappers")
    with pytest.raises(consul.ConsulException) as e:
        c.operator.keyring_list()
    text = str(e.value)
    assert text.startswith("500 4 errors occurred:"), text
    assert "dc1 (LAN) error: 0/1 nodes reported success" in text
    assert "Keyring is empty (encryption not enabled)" in text
    with pytest.raises(consul.ConsulException) as e:
        c.operator.keyring_install("cGlsb3RmaXNoLXRlc3QtY2x1c3Rlci1rZXktMzJieXQ=")
    assert "No keyring to modify (encryption not enabled)" in str(e.value)


def test_usage_counts_the_catalog(c):
    if not has(c, "operator", "usage"):
        pytest.skip("this client has no usage wrapper")
    c.agent.service.register("pytest-usage", service_id="pytest-usage-1", port=8080)
    try:
        usage = c.operator.usage()
        dc = usage["Usage"]["dc1"]
        assert dc["Services"] >= 1 and dc["ServiceInstances"] >= 1
        assert dc["ConnectServiceInstances"]["connect-proxy"] == 0
        assert usage["KnownLeader"] is True
        assert usage["Index"] > 0
    finally:
        c.agent.service.deregister("pytest-usage-1")


def members_of(archive):
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as t:
        return [(m.name, m.mode, t.extractfile(m).read()) for m in t.getmembers()]


def test_snapshot_save_is_consuls_archive_and_restores(c, prefix):
    if not hasattr(c, "snapshot"):
        pytest.skip("this client has no snapshot wrapper")
    c.kv.put(prefix + "k", "saved")
    archive = c.snapshot.save()
    assert archive[:2] == b"\x1f\x8b"
    members = members_of(archive)
    assert [(n, m) for n, m, _ in members] == [
        ("meta.json", 0o600),
        ("state.bin", 0o600),
        ("SHA256SUMS", 0o600),
    ]
    files = {n: data for n, _, data in members}
    meta = json.loads(files["meta.json"])
    assert meta["Version"] == 1 and meta["Size"] == len(files["state.bin"])
    assert meta["ID"].startswith("%d-%d-" % (meta["Term"], meta["Index"]))
    sums = files["SHA256SUMS"].decode()
    for name in ("meta.json", "state.bin"):
        line = "%s  %s" % (hashlib.sha256(files[name]).hexdigest(), name)
        assert line in sums.splitlines()

    c.kv.put(prefix + "k", "changed")
    assert c.snapshot.restore(archive) is True
    assert c.kv.get(prefix + "k")[1]["Value"] == b"saved"

    # One flipped byte: refused (Consul's 500), nothing changed.
    c.kv.put(prefix + "k", "after")
    damaged = bytearray(archive)
    damaged[len(damaged) // 2] ^= 0x01
    with pytest.raises(consul.ConsulException) as e:
        c.snapshot.restore(bytes(damaged))
    assert "failed to decompress snapshot" in str(e.value)
    assert c.kv.get(prefix + "k")[1]["Value"] == b"after"
    # state.bin edited after hashing: the integrity check names it.
    edited = io.BytesIO()
    with tarfile.open(fileobj=edited, mode="w:gz") as t:
        for name, _, data in members:
            if name == "state.bin":
                data = data.replace(b'"format":1', b'"format":2', 1)
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o600
            t.addfile(info, io.BytesIO(data))
    with pytest.raises(consul.ConsulException) as e:
        c.snapshot.restore(edited.getvalue())
    assert 'hash check failed for "state.bin"' in str(e.value)
    assert c.kv.get(prefix + "k")[1]["Value"] == b"after"
    assert gzip.decompress(archive)  # a plain gzip stream, as Consul's
