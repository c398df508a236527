"""Fixtures for the real-client suite.

By default each test session starts `pilotfish agent --dev` on free loopback
ports. Set CONSUL_HTTP_ADDR=host:port to run the same suite against any
Consul-compatible agent instead (a real Consul, for comparison).
"""

import os
import socket
import subprocess
import time
import urllib.request

import pytest

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(base, deadline=20.0):
    end = time.time() + deadline
    while time.time() < end:
        try:
            with urllib.request.urlopen(base + "/v1/status/leader", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("agent at %s did not answer within %ss" % (base, deadline))


@pytest.fixture(scope="session")
def agent():
    """(host, port) of a running agent."""
    addr = os.environ.get("CONSUL_HTTP_ADDR")
    if addr:
        addr = addr.split("://")[-1]
        host, port = addr.rsplit(":", 1)
        yield host, int(port)
        return
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(REPO, "target"))
    binary = os.environ.get("PILOTFISH_BIN", os.path.join(target, "debug", "pilotfish"))
    http, dns = free_port(), free_port()
    proc = subprocess.Popen(
        [binary, "agent", "--dev", "--client", "127.0.0.1", "--node", "pytest-node",
         "--http-port", str(http), "--dns-port", str(dns), "--server-port", str(free_port()),
         "--enable-script-checks"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    try:
        wait_http("http://127.0.0.1:%d" % http)
        yield "127.0.0.1", http
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture
def c(agent):
    import consul
    host, port = agent
    return consul.Consul(host=host, port=port)


@pytest.fixture
def prefix(request):
    """A KV prefix unique to the test, so tests never see each other's keys."""
    return "pytest/%s/" % request.node.name
