#!/usr/bin/env python3
"""RSS of an agent before/after 10 registrations with 100k Meta keys each."""
import json, socket, subprocess, sys, time, http.client

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0)); return s.getsockname()[1]

def rss(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"): return int(line.split()[1]) / 1024
binary = sys.argv[1]
port = free_port()
agent = subprocess.Popen([binary, "agent", "--dev", "--node", "n1", "--http-port", str(port),
    "--dns-port", str(free_port()), "--server-port", str(free_port()), "--log-level", "error"])
try:
    for _ in range(200):
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=120); c.request("GET", "/v1/status/leader")
            if c.getresponse().read() not in (b'""', b''): break
        except OSError: pass
        time.sleep(0.1)
    time.sleep(1)
    assert agent.poll() is None, "the agent exited (port taken?)"
    before = rss(agent.pid)
    statuses = []
    for i in range(int(sys.argv[2]) if len(sys.argv) > 2 else 10):
        meta = {f"k{j}": "v" for j in range(int(sys.argv[3]) if len(sys.argv) > 3 else 100_000)}
        body = json.dumps({"Name": f"svc{i}", "ID": f"svc{i}", "Meta": meta}).encode()
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        c.request("PUT", "/v1/agent/service/register", body=body)
        r = c.getresponse(); statuses.append((r.status, r.read()[:80].decode()))
    after = rss(agent.pid)
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    c.request("GET", "/v1/catalog/service/svc0"); r = c.getresponse(); rows = len(json.loads(r.read()))
    after_read = rss(agent.pid)
    print(f"body size per registration: {len(body)/1024:.0f} KiB")
    print(f"statuses: {sorted(set(s[0] for s in statuses))} first: {statuses[0]}")
    print(f"RSS before: {before:.1f} MiB, after 10 registrations: {after:.1f} MiB, after a catalog read ({rows} rows): {after_read:.1f} MiB")
finally:
    agent.terminate(); agent.wait()
