#!/usr/bin/env python3
"""How fast the autopilot pattern reacts, against `pilotfish agent --dev`.

1. Health failure → out of rotation: a service job `web` whose health check
   (`test -f FILE`, every INTERVAL) starts failing when the file is removed.
   Measured from the removal to the instance leaving
   `/v1/health/service/web?passing`, and to `dig web.service.consul` no
   longer answering it. The check runs once per interval, so the bound to
   meet is one interval + 100 ms (ContainerPilot waits for the TTL to run out:
   up to TTL + interval).
2. Watch latency: REGS registrations of instances of `backend`, one at a
   time; each must start the `each = "changed"` job of a watch on `backend`.
   Measured from sending the registration to the job's process starting
   (it writes its start time first thing).

Usage: tests/bench/autopilot.py [path/to/pilotfish]   (default target/release)
Env:   INTERVAL=1s  ROUNDS=10  REGS=50
"""

import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

INTERVAL = os.environ.get("INTERVAL", "1s")
ROUNDS = int(os.environ.get("ROUNDS", "10"))
REGS = int(os.environ.get("REGS", "50"))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def call(port, method, path, body=None):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body, method=method)
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.read()


def passing(port, name):
    return json.loads(call(port, "GET", f"/v1/health/service/{name}?passing"))


def dig(dns, name):
    out = subprocess.run(
        ["dig", "+short", "+tries=1", "+time=1", "-p", str(dns), "@127.0.0.1", name],
        capture_output=True, text=True,
    )
    return out.stdout.strip()


def wait(what, f, limit=30.0, step=0.002):
    start = time.monotonic()
    while not f():
        if time.monotonic() - start > limit:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(step)
    return time.monotonic() - start


def interval_seconds():
    if INTERVAL.endswith("ms"):
        return float(INTERVAL[:-2]) / 1000
    return float(INTERVAL.rstrip("s"))


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def main():
    binary = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else "target/release/pilotfish")
    http, dns, server = free_port(), free_port(), free_port()
    tmp = tempfile.mkdtemp(prefix="pf-autopilot-")
    agent = subprocess.Popen(
        [binary, "agent", "--dev", "--node", "bench", "--http-port", str(http),
         "--dns-port", str(dns), "--server-port", str(server), "--log-level", "warn"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    healthy = os.path.join(tmp, "healthy")
    changed = os.path.join(tmp, "changed")
    config = f"""
[consul]
address = "127.0.0.1:{http}"
[control]
socket = "{tmp}/pf.sock"
[logging]
level = "warn"

[[jobs]]
name = "web"
exec = ["sleep", "100000"]
port = 8080
interfaces = ["static:127.0.0.1"]
health = {{ exec = ["test", "-f", "{healthy}"], interval = "{INTERVAL}", ttl = "60s" }}

[[watches]]
name = "backend"

[[jobs]]
name = "on-change"
exec = ["sh", "-c", "date +%s.%N >> {changed}"]
when = {{ source = "watch.backend", each = "changed" }}
"""
    path = os.path.join(tmp, "pilotfish.toml")
    with open(path, "w") as f:
        f.write(config)
    open(healthy, "w").close()
    try:
        wait("the agent", lambda: _answers(http))
        sup = subprocess.Popen([binary, "run", "--config", path],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            run_rounds(http, dns, healthy)
            run_watch(http, changed)
        finally:
            sup.terminate()
            sup.wait(timeout=30)
    finally:
        agent.terminate()
        agent.wait(timeout=30)


def _answers(port):
    try:
        call(port, "GET", "/v1/status/leader")
        return True
    except OSError:
        return False


def run_rounds(http, dns, healthy):
    http_ms, dns_ms = [], []
    for _ in range(ROUNDS):
        open(healthy, "w").close()
        wait("web passing", lambda: len(passing(http, "web")) == 1)
        wait("web in DNS", lambda: dig(dns, "web.service.consul") != "")
        # Fail at a random point of the check's interval.
        time.sleep(random.random() * interval_seconds())
        t0 = time.monotonic()
        os.remove(healthy)
        t_http = t_dns = None
        while t_http is None or t_dns is None:
            now = time.monotonic()
            if t_http is None and not passing(http, "web"):
                t_http = now - t0
            if t_dns is None and dig(dns, "web.service.consul") == "":
                t_dns = time.monotonic() - t0
            if now - t0 > 30:
                raise SystemExit("web never left rotation")
        http_ms.append(t_http * 1000)
        dns_ms.append(t_dns * 1000)
    print(f"health check interval:      {INTERVAL} ({ROUNDS} rounds, failure at a random point of it)")
    for name, xs in (("leave ?passing", http_ms), ("leave DNS", dns_ms)):
        print(f"{name + ':':<27} median {statistics.median(xs):.0f} ms, max {max(xs):.0f} ms")


def run_watch(http, changed):
    base = 0
    if os.path.exists(changed):
        base = len(open(changed).read().split())
    lat = []
    for i in range(REGS):
        body = json.dumps({"ID": f"b{i}", "Name": "backend", "Address": "127.0.0.9",
                           "Port": 6000 + i, "Check": {"TTL": "600s", "Status": "passing"}}).encode()
        t0 = time.time()
        call(http, "PUT", "/v1/agent/service/register", body)
        want = base + i + 1
        wait(f"changed job {i}", lambda: os.path.exists(changed)
             and len(open(changed).read().split()) >= want, limit=10, step=0.001)
        started = float(open(changed).read().split()[want - 1])
        lat.append((started - t0) * 1000)
        time.sleep(0.1)
    print(f"watch: registration → changed job started ({REGS} registrations): "
          f"p50 {pct(lat, 50):.1f} ms, p99 {pct(lat, 99):.1f} ms, max {max(lat):.1f} ms")


if __name__ == "__main__":
    main()
