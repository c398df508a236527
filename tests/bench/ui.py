#!/usr/bin/python3
"""The web UI: time to first render of the services page with 500 services
registered, in headless Chromium; with --screenshots DIR, also the PNGs of
docs/ui/ (services, one service, KV, cluster) from a small demo catalog.

    tests/bench/ui.py target/debug/pilotfish [--screenshots docs/ui]

Needs Debian's chromium, chromium-driver and python3-selenium (tests/run.sh
installs them). Prints numbers; asserts nothing about them.
"""

import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
import urllib.request

from selenium import webdriver
from selenium.webdriver.chrome.service import Service


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def put(base, path, body=None):
    data = None if body is None else (body if isinstance(body, bytes) else
                                      (body.encode() if isinstance(body, str) else json.dumps(body).encode()))
    req = urllib.request.Request(base + path, data=data, method="PUT")
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.read()


def start(binary, node):
    port = free_port()
    base = "http://127.0.0.1:%d" % port
    proc = subprocess.Popen(
        [binary, "agent", "--dev", "--client", "127.0.0.1", "--node", node,
         "--http-port", str(port), "--dns-port", str(free_port()),
         "--server-port", str(free_port())],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_leader(base, peers=1, limit=20)
    return proc, base


def wait_for_leader(base, peers, limit):
    """Until `base` knows a leader and `peers` raft peers."""
    end = time.time() + limit
    while time.time() < end:
        try:
            with urllib.request.urlopen(base + "/v1/status/peers", timeout=1) as r:
                known = len(json.loads(r.read()))
            with urllib.request.urlopen(base + "/v1/status/leader", timeout=1) as r:
                if known >= peers and json.loads(r.read()):
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError("%s: no leader with %d peers within %ds" % (base, peers, limit))


def browser(width=1280, height=800):
    opts = webdriver.ChromeOptions()
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              "--window-size=%d,%d" % (width, height), "--hide-scrollbars"):
        opts.add_argument(a)
    return webdriver.Chrome(options=opts, service=Service(shutil.which("chromedriver")))


def demo(base):
    svc = [
        ("web", "web-1", ["http", "v2.4.1", "primary"], {"version": "2.4.1", "team": "storefront"}, 8080, "passing", "HTTP GET http://10.0.0.5:8080/health: 200 OK"),
        ("web", "web-2", ["http", "v2.4.1"], {"version": "2.4.1", "team": "storefront"}, 8081, "passing", "HTTP GET http://10.0.0.5:8081/health: 200 OK"),
        ("web", "web-3", ["http", "v2.4.0", "canary"], {"version": "2.4.0", "team": "storefront"}, 8082, "critical", "HTTP GET http://10.0.0.5:8082/health: 503 Service Unavailable\nupstream db timed out after 2s"),
        ("postgres", "pg-primary", ["primary"], {"pg_version": "15.5"}, 5432, "passing", "accepting connections"),
        ("postgres", "pg-replica", ["replica"], {"pg_version": "15.5"}, 5433, "warning", "replication lag 4.2s"),
        ("redis", "redis-1", ["cache"], {}, 6379, "passing", "PONG"),
        ("haproxy", "haproxy", ["lb", "edge"], {"config": "/etc/haproxy/haproxy.cfg"}, 80, "passing", "ok"),
        ("worker", "worker-1", ["queue"], {}, 9000, "passing", ""),
        ("worker", "worker-2", ["queue"], {}, 9001, "passing", ""),
    ]
    for name, sid, tags, meta, port, status, output in svc:
        put(base, "/v1/agent/service/register", {
            "Name": name, "ID": sid, "Tags": tags, "Meta": meta, "Port": port,
            "Address": "10.0.0.5", "Check": {"CheckID": sid + "-health", "Name": name + " health", "TTL": "1h"}})
        verb = {"passing": "pass", "warning": "warn", "critical": "fail"}[status]
        put(base, "/v1/agent/check/%s/%s-health?note=%s" % (verb, sid, urllib.request.quote(output)))
    for key, value in [("config/web/max_connections", "512"), ("config/web/feature_flags", '{"new_checkout": true}'),
                       ("config/postgres/shared_buffers", "4GB"), ("config/haproxy/maxconn", "20000"),
                       ("config/banner", "Welcome to the shop"), ("locks/leader", "")]:
        put(base, "/v1/kv/" + key, value)
    put(base, "/v1/session/create", {"Name": "web-leader-election", "TTL": "30s"})


KEY = "cGlsb3RmaXNoLXRlc3QtY2x1c3Rlci1rZXktMzJieXQ="


def three_servers(binary, tmp):
    """Servers node-1..3 on 127.0.0.61-63 (the same ports), joined."""
    ports = [free_port() for _ in range(3)]
    ips = ["127.0.0.6%d" % i for i in (1, 2, 3)]
    procs = []
    for i, ip in enumerate(ips):
        procs.append(subprocess.Popen(
            [binary, "agent", "--server", "--bootstrap-expect", "3", "--node", "node-%d" % (i + 1),
             "--data-dir", os.path.join(tmp, str(i)), "--bind", ip, "--client", ip,
             "--http-port", str(ports[0]), "--dns-port", str(ports[1]),
             "--server-port", str(ports[2]), "--encrypt", KEY]
            + sum((["--retry-join", j] for j in ips), []),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    base = "http://%s:%d" % (ips[0], ports[0])
    wait_for_leader(base, peers=3, limit=60)
    return procs, base


def screenshots(binary, out):
    import tempfile
    os.makedirs(out, exist_ok=True)
    tmp = tempfile.mkdtemp()
    procs, base = three_servers(binary, tmp)
    d = browser()
    try:
        demo(base)
        # One server down: the cluster page shows it failed.
        procs[2].kill()
        procs[2].wait()
        end = time.time() + 30
        while time.time() < end:
            with urllib.request.urlopen(base + "/v1/agent/members") as r:
                if any(m["Status"] == 4 for m in json.loads(r.read())):
                    break
            time.sleep(0.2)
        for name, path in [("services", "/ui/services"), ("service", "/ui/services/web"),
                           ("kv", "/ui/kv/config/"), ("kv-edit", "/ui/kv/config/web/feature_flags"),
                           ("cluster", "/ui/cluster"), ("nodes", "/ui/nodes")]:
            d.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
                "width": 1280, "height": 600, "deviceScaleFactor": 1, "mobile": False})
            d.get(base + path)
            time.sleep(0.3)
            height = d.execute_script("return document.documentElement.scrollHeight")
            d.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
                "width": 1280, "height": max(600, min(height, 1300)), "deviceScaleFactor": 1,
                "mobile": False})
            time.sleep(0.2)
            d.save_screenshot(os.path.join(out, name + ".png"))
            print("wrote", os.path.join(out, name + ".png"))
    finally:
        d.quit()
        for p in procs:
            p.terminate()
            p.wait()
        shutil.rmtree(tmp, ignore_errors=True)


def first_render(binary, services=500, runs=7):
    proc, base = start(binary, "bench-node")
    d = browser()
    try:
        for i in range(services):
            put(base, "/v1/agent/service/register", {
                "Name": "svc-%03d" % i, "ID": "svc-%03d" % i, "Tags": ["t%d" % (i % 7), "bench"],
                "Port": 10000 + i, "Check": {"CheckID": "c-%03d" % i, "TTL": "1h"}})
            if i % 5 == 0:
                put(base, "/v1/agent/check/pass/c-%03d" % i)
        server, fcp, loaded = [], [], []
        for _ in range(runs):
            t0 = time.perf_counter()
            with urllib.request.urlopen(base + "/ui/services") as r:
                body = r.read()
            server.append((time.perf_counter() - t0) * 1000)
            d.get("about:blank")
            d.get(base + "/ui/services")
            time.sleep(0.2)  # paint entries are recorded after the frame
            nav = d.execute_script(
                "var n = performance.getEntriesByType('navigation')[0];"
                "var p = performance.getEntriesByType('paint').filter("
                "  function (e) { return e.name === 'first-contentful-paint'; })[0];"
                "return [n.domContentLoadedEventEnd, p ? p.startTime : null, n.loadEventEnd];")
            fcp.append(nav[1] if nav[1] is not None else nav[0])
            loaded.append(nav[2])
        rows = d.execute_script("return document.querySelectorAll('tr[data-search]').length")
        print("services page, %d services (%d rows, %d KiB of HTML), median of %d:" % (
            services, rows, len(body) // 1024, runs))
        print("  server answer (GET /ui/services): %.0f ms" % statistics.median(server))
        print("  first contentful paint (or DOMContentLoaded): %.0f ms" % statistics.median(fcp))
        print("  load event end:                  %.0f ms" % statistics.median(loaded))
    finally:
        d.quit()
        proc.terminate()
        proc.wait()


if __name__ == "__main__":
    binary = sys.argv[1] if len(sys.argv) > 1 else "target/debug/pilotfish"
    if "--screenshots" in sys.argv:
        screenshots(binary, sys.argv[sys.argv.index("--screenshots") + 1])
    first_render(binary)
