"""User events through the real client libraries' `event.fire` and
`event.list` (python-consul 0.7 and py-consul): the fire answer's shape,
the list's index (Consul's uuidToUint64 of the last event's ID), filters
applied by the receiving agent, blocking on the event index, and Consul's
errors."""

import threading
import time
import uuid

import consul
import pytest


def id_to_index(event_id):
    """Consul's uuidToUint64 (the Go client's Event.IDToIndex)."""
    lower = int(event_id[0:8] + event_id[9:13] + event_id[14:18], 16)
    upper = int(event_id[19:23] + event_id[24:36], 16)
    return lower ^ upper


def payload(event):
    p = event["Payload"]
    return p.decode() if isinstance(p, bytes) else p


def unique(name):
    return "%s-%s" % (name, uuid.uuid4().hex[:8])


def test_fire_answers_consuls_shape_and_list_shows_it(c):
    name = unique("deploy")
    fired = c.event.fire(name, "v1.2.3")
    assert sorted(fired) == sorted(
        ["ID", "Name", "Payload", "NodeFilter", "ServiceFilter", "TagFilter", "Version", "LTime"])
    assert fired["Name"] == name
    assert fired["Version"] == 1
    assert fired["LTime"] == 0
    index, events = c.event.list(name=name)
    assert [e["ID"] for e in events] == [fired["ID"]]
    assert payload(events[0]) == "v1.2.3"
    assert int(index) == id_to_index(fired["ID"])
    # Another name is not listed under this one; the unfiltered list has both.
    other = c.event.fire(unique("other"))
    assert other["Payload"] is None
    _, events = c.event.list(name=name)
    assert [e["ID"] for e in events] == [fired["ID"]]
    index, events = c.event.list()
    assert [e["ID"] for e in events][-2:] == [fired["ID"], other["ID"]]
    assert int(index) == id_to_index(other["ID"])


def test_an_empty_list_has_index_1(c):
    index, events = c.event.list(name=unique("nothing"))
    assert events == []
    assert int(index) == 1


def test_filters_are_applied_by_the_receiving_agent(c):
    """The node filter against the agent's name; the service filter against
    its service IDs (Consul scans its local services by ID), the tag filter
    against that service's tags."""
    node = c.agent.self()["Config"]["NodeName"]
    sid = unique("evsvc")
    c.agent.service.register("evsvc", service_id=sid, tags=["blue", "v1"])
    try:
        kept = [
            c.event.fire(unique("node"), node="^%s$" % node),
            c.event.fire(unique("svc"), service="^%s$" % sid),
            c.event.fire(unique("tag"), service="^evsvc-", tag="^v1$"),
        ]
        dropped = [
            c.event.fire(unique("node"), node="^%s-else$" % node),
            c.event.fire(unique("svc"), service="^no-such-service$"),
            c.event.fire(unique("tag"), service="^evsvc-", tag="^v2$"),
        ]
        _, events = c.event.list()
        listed = {e["ID"] for e in events}
        for e in kept:
            assert e["ID"] in listed, e
        for e in dropped:
            assert e["ID"] not in listed, e
    finally:
        c.agent.service.deregister(sid)


def test_a_blocking_list_wakes_for_a_new_event(c):
    name = unique("wake")
    index, events = c.event.list(name=name)
    assert events == []
    result = {}

    def block():
        started = time.time()
        result["answer"] = c.event.list(name=name, index=index, wait="30s")
        result["took"] = time.time() - started

    t = threading.Thread(target=block)
    t.start()
    time.sleep(0.5)
    assert t.is_alive(), "the list did not block"
    fired = c.event.fire(name, "now")
    t.join(40)
    new_index, events = result["answer"]
    assert [e["ID"] for e in events] == [fired["ID"]]
    assert int(new_index) == id_to_index(fired["ID"])
    assert result["took"] < 30


def test_bad_events_get_consuls_errors(c):
    with pytest.raises(consul.ConsulException, match="Cannot provide tag filter without service filter"):
        c.event.fire(unique("x"), tag="v1")
    with pytest.raises(consul.ConsulException, match="Invalid node filter"):
        c.event.fire(unique("x"), node="[a")
    with pytest.raises(consul.ConsulException, match="exceeds configured limit of 512 bytes"):
        c.event.fire(unique("x"), "p" * 600)
