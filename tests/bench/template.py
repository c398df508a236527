#!/usr/bin/env python3
"""The HAProxy template example under load: reloads, latency and CPU.

Runs the shipped example (config-examples/haproxy/, copied into a temp dir)
under `pilotfish run` against `pilotfish agent --dev`, with a real HAProxy
and HTTP backends served by a child process of this script (asyncio, one
listener per instance, each answering `<ID> <path>`, keep-alive honoured).
Three measurements, each in normal mode and in reload-free mode (the
example's `haproxy = { socket = ... }` line switched on):

1. Churn under load: `wrk -t2 -c20` on /web through HAProxy while CYCLES
   register/deregister cycles run (one instance stays registered throughout;
   three more come and go, the backends themselves stay up). Reported:
   wrk's requests, non-2xx, socket errors; HAProxy reloads (pilotfish's
   `templates: SIGUSR2 to job haproxy` lines, cross-checked against the
   master's own `Reloading HAProxy` lines) against installs (change batches)
   and Runtime API applications.
2. Registration -> routing latency, REGS fresh instances one after another.
   `web` holds exactly one instance, L(i-1); L(i) is registered and, from the
   moment the register PUT answers, the script sends pairs of requests to
   /web on fresh connections, 2 ms apart. HAProxy balances roundrobin and
   this script is its only client, so two consecutive requests reach both
   servers once L(i) is in: the first answer naming L(i) ends the
   measurement (resolution: one pair of requests plus 2 ms). Then L(i-1) is
   deregistered and the script waits until only L(i) answers (not timed).
3. CPU: SERVICES services (one instance each, tagged rest) all registered,
   then each re-registered with another port once per second for CPU_SECS
   seconds (spread evenly over the second). pilotfish's utime+stime from
   /proc/<pid>/stat over the window, as % of one core; its children (the
   `haproxy -c` checks it waited for) and the agent are shown apart.
   Baseline: a naive loop (this script, --naive) that on every change of
   /v1/catalog/services (a blocking query) re-fetches every rest service's
   /v1/health/service/<name>?passing and re-renders the whole file (no check,
   no reload); and the same loop polling once a second. The agent runs with
   --http-max-conns-per-client 0, so every query (504 here) may hold its own
   long-poll, except in the row "default limit": there the agent keeps
   Consul's 200 per address and pilotfish holds at most 128 queries open,
   asking the others again every few seconds.

Usage: tests/bench/template.py [path/to/pilotfish]   (default target/release)
Env:   CYCLES=20 REGS=60 SERVICES=500 CPU_SECS=30 WAIT_ON=100ms:1s
       ONLY=churn,latency,cpu (a comma list)  KEEP=1 (keep the temp dir)
Needs haproxy and wrk on PATH.
"""

import asyncio
import http.client
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
EXAMPLE = os.path.join(ROOT, "config-examples", "haproxy")

CYCLES = int(os.environ.get("CYCLES", "20"))
REGS = int(os.environ.get("REGS", "60"))
SERVICES = int(os.environ.get("SERVICES", "500"))
CPU_SECS = float(os.environ.get("CPU_SECS", "30"))
WAIT_ON = os.environ.get("WAIT_ON", "100ms:1s").split(":")
ONLY = set(os.environ.get("ONLY", "churn,latency,cpu").split(","))
TICK = os.sysconf("SC_CLK_TCK")
# Everything started, stopped on the way out even when a step fails.
STARTED = []


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait(what, f, limit=60.0, step=0.05):
    deadline = time.monotonic() + limit
    while True:
        v = f()
        if v:
            return v
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out: {what}")
        time.sleep(step)


def cpu_ticks(pid):
    """(self utime+stime, waited-for children cutime+cstime) in ticks."""
    with open(f"/proc/{pid}/stat") as f:
        rest = f.read().rsplit(")", 1)[1].split()
    # rest[0] is field 3 (state): utime is field 14.
    return int(rest[11]) + int(rest[12]), int(rest[13]) + int(rest[14])


# ---------------------------------------------------------------- backends (child process)

def serve(ids):
    """--serve ID...: one listener per ID; prints `ID PORT` per line, then serves."""

    async def handle(reader, writer, ident):
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                low = head.lower()
                first = head.split(b"\r\n", 1)[0].split(b" ")
                path = first[1] if len(first) > 1 else b"?"
                m = re.search(rb"content-length:\s*(\d+)", low)
                if m and int(m.group(1)):
                    await reader.readexactly(int(m.group(1)))
                http10 = first[-1].startswith(b"HTTP/1.0")
                close = b"connection: close" in low or (http10 and b"keep-alive" not in low)
                body = ident + b" " + path + b"\n"
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n%s\r\n%s"
                    % (len(body), b"Connection: close\r\n" if close else b"", body)
                )
                await writer.drain()
                if close:
                    break
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass
        finally:
            writer.close()

    async def main():
        servers = []
        for ident in ids:
            s = await asyncio.start_server(
                lambda r, w, i=ident.encode(): handle(r, w, i), "127.0.0.1", 0, backlog=1024
            )
            servers.append(s)
            print(ident, s.sockets[0].getsockname()[1], flush=True)
        print("ready", flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())


class Backends:
    def __init__(self, ids):
        self.proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--serve", *ids],
            stdout=subprocess.PIPE, text=True,
        )
        STARTED.append(self.stop)
        self.port = {}
        for line in self.proc.stdout:
            if line.strip() == "ready":
                break
            ident, port = line.split()
            self.port[ident] = int(port)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


# ---------------------------------------------------------------- naive baseline (child process)

def naive(addr, out, mode):
    """--naive ADDR OUT block|poll: re-fetch everything, re-render the whole file."""

    conn = http.client.HTTPConnection(addr, timeout=600)

    def get(path):
        conn.request("GET", path)
        r = conn.getresponse()
        return json.loads(r.read()), int(r.getheader("X-Consul-Index", "0"))

    index = 0
    while True:
        if mode == "block":
            services, new = get(f"/v1/catalog/services?index={index}&wait=5m")
            if new == index:
                continue
            index = new
        else:
            services, _ = get("/v1/catalog/services")
        lines = ["global", "    maxconn 4096", "", "frontend http-in", "    bind *:80"]
        backends = []
        for name in sorted(services):
            if "rest" not in services[name]:
                continue
            safe = re.sub(r"[^A-Za-z0-9_-]", "_", name)
            lines += [f"    acl is_{safe} path -i /{name}",
                      f"    acl is_{safe} path_beg -i /{name}/",
                      f"    use_backend be_{safe} if is_{safe}"]
            rows, _ = get(f"/v1/health/service/{name}?passing&tag=rest")
            backends += ["", f"backend be_{safe}", "    balance roundrobin"]
            for r in rows:
                s = r["Service"]
                a = s["Address"] or r["Node"]["Address"]
                backends.append(f"    server {re.sub(r'[^A-Za-z0-9_-]', '_', s['ID'])} {a}:{s['Port']} check inter 2s")
        text = "\n".join(lines + backends) + "\n"
        try:
            with open(out) as f:
                same = f.read() == text
        except FileNotFoundError:
            same = False
        if not same:
            tmp = out + ".tmp"
            with open(tmp, "w") as f:
                f.write(text)
            os.replace(tmp, out)
        if mode == "poll":
            time.sleep(1)


# ---------------------------------------------------------------- agent and pilotfish

class Agent:
    def __init__(self, binary, tmp, args=()):
        self.port = free_port()
        self.addr = f"127.0.0.1:{self.port}"
        self.log = open(os.path.join(tmp, f"agent-{self.port}.log"), "w")
        self.proc = subprocess.Popen(
            [binary, "agent", "--dev", "--client", "127.0.0.1", "--http-port", str(self.port),
             "--dns-port", str(free_port()), "--server-port", str(free_port()), *args],
            stdout=self.log, stderr=subprocess.STDOUT,
        )
        STARTED.append(self.stop)
        wait("the agent answers", lambda: self.ok("/v1/status/leader"))
        self.conn = None

    def ok(self, path):
        try:
            with urllib.request.urlopen(f"http://{self.addr}{path}", timeout=2):
                return True
        except OSError:
            return False

    def put(self, path, body=b""):
        """PUT on one keep-alive connection (reconnects when it dropped)."""
        for attempt in (1, 2):
            try:
                if self.conn is None:
                    self.conn = http.client.HTTPConnection(self.addr, timeout=30)
                self.conn.request("PUT", path, body=body)
                r = self.conn.getresponse()
                r.read()
                if r.status != 200:
                    raise SystemExit(f"PUT {path}: HTTP {r.status}")
                return
            except (http.client.HTTPException, OSError):
                self.conn = None
                if attempt == 2:
                    raise

    def register(self, ident, port, name="web"):
        self.put("/v1/agent/service/register", json.dumps(
            {"ID": ident, "Name": name, "Tags": ["rest"], "Address": "127.0.0.1", "Port": port}
        ).encode())

    def deregister(self, ident):
        self.put(f"/v1/agent/service/deregister/{ident}")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.log.close()


class Stack:
    """pilotfish running the example (HAProxy under it) in its own dir."""

    def __init__(self, binary, agent, tmp, name, wait_min, wait_max, reload_free):
        self.binary = binary
        self.dir = os.path.join(tmp, name)
        os.makedirs(self.dir)
        shutil.copy(os.path.join(EXAMPLE, "haproxy.cfg.hbs"), self.dir)
        with open(os.path.join(EXAMPLE, "haproxy.toml")) as f:
            config = f.read()
        if reload_free:
            line = '# haproxy = { socket = "${HAPROXY_RUN:-/run/haproxy}/admin.sock" }'
            assert line in config, "the example's reload-free line moved; update the bench"
            config = config.replace(line, line[2:])
        self.socket = os.path.join(self.dir, "pf.sock")
        config += f'\n[control]\nsocket = "{self.socket}"\n'
        path = os.path.join(self.dir, "haproxy.toml")
        with open(path, "w") as f:
            f.write(config)
        self.cfg = os.path.join(self.dir, "haproxy.cfg")
        self.bind = f"127.0.0.1:{free_port()}"
        env = dict(os.environ, CONSUL_HTTP_ADDR=agent.addr, HAPROXY_CONFIG=self.cfg,
                   HAPROXY_RUN=self.dir, HAPROXY_BIND=self.bind,
                   TEMPLATE_WAIT_MIN=wait_min, TEMPLATE_WAIT_MAX=wait_max)
        self.logpath = os.path.join(self.dir, "pilotfish.log")
        self.log = open(self.logpath, "w")
        self.proc = subprocess.Popen([binary, "run", "-c", path], env=env, stdout=self.log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        STARTED.append(self.stop)
        wait("HAProxy answers", lambda: self.get("/") is not None)

    def get(self, path, timeout=5):
        """One GET through HAProxy on a fresh connection: body or None."""
        try:
            host, port = self.bind.split(":")
            c = http.client.HTTPConnection(host, int(port), timeout=timeout)
            c.request("GET", path, headers={"Connection": "close"})
            r = c.getresponse()
            body = r.read().decode()
            c.close()
            return (r.status, body)
        except (OSError, http.client.HTTPException):
            return None

    def status(self):
        out = subprocess.run([self.binary, "status", "--json", "--socket", self.socket],
                             capture_output=True, text=True)
        if out.returncode != 0:
            return None
        return json.loads(out.stdout)["templates"][0]

    def counts(self):
        """(SIGUSR2s sent, HAProxy master reloads, Runtime API applications)."""
        with open(self.logpath, errors="replace") as f:
            log = f.read()
        return (log.count("templates: SIGUSR2 to job haproxy"),
                log.count("Reloading HAProxy"),
                log.count("applied the server changes, no reload"))

    def lost_signals(self):
        """SIGUSR2s the master never acted on: no `Reloading HAProxy` line
        before the next SIGUSR2 (or the end of the log)."""
        lost, pending = 0, False
        with open(self.logpath, errors="replace") as f:
            for line in f:
                if "templates: SIGUSR2 to job haproxy" in line:
                    lost += pending
                    pending = True
                elif "Reloading HAProxy" in line:
                    pending = False
        return lost + pending

    def settled(self, quiet=1.5):
        """Wait until installs stop moving for `quiet` seconds; the status."""
        last, since = None, time.monotonic()
        while True:
            s = self.status()
            key = s and (s["installs"], s["renders"])
            if key != last:
                last, since = key, time.monotonic()
            elif time.monotonic() - since > quiet:
                return s
            time.sleep(0.1)

    def stop(self):
        if self.proc.returncode is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=20)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.log.close()


def web_ids(stack, pairs=2):
    ids = set()
    for _ in range(pairs):
        r = stack.get("/web")
        if r and r[0] == 200:
            ids.add(r[1].split()[0])
    return ids


MODES = [("normal", False), ("reload-free", True)]


def note_mode(reload_free, reloads, api):
    if reload_free and api == 0:
        return "  (reload-free NOT active: no Runtime API applications in the log)"
    return ""


# ---------------------------------------------------------------- 1. churn under load

IDLE_CLOSE = "    option idle-close-on-response"


def churn(binary, tmp, rows):
    variants = [("normal", False, ""), ("normal+icor", False, IDLE_CLOSE),
                ("reload-free", True, "")]
    for label, rf, extra in variants:
        agent = Agent(binary, tmp)
        if extra:
            agent.put("/v1/kv/service/haproxy/defaults-extra", extra.encode())
        ids = ["c0", "c1", "c2", "c3"]
        be = Backends(ids)
        agent.register("c0", be.port["c0"])
        stack = Stack(binary, agent, tmp, f"churn-{label}", "0s", "0s", rf)
        wait("c0 routed", lambda: web_ids(stack) == {"c0"})
        before = stack.settled()
        r0 = stack.counts()
        secs = CYCLES * 1.0 + 6
        wrk_cmd = ["wrk", "-t2", "-c20", f"-d{int(secs)}s", f"http://{stack.bind}/web"]
        print("$", " ".join(wrk_cmd), flush=True)
        w = subprocess.Popen(wrk_cmd, stdout=subprocess.PIPE, text=True)
        time.sleep(2)
        for i in range(CYCLES):
            k = ids[1 + i % 3]
            agent.register(k, be.port[k])
            time.sleep(0.5)
            agent.deregister(k)
            time.sleep(0.5)
        out, _ = w.communicate()
        after = stack.settled()
        r1 = stack.counts()
        reqs = int(re.search(r"(\d+) requests in", out).group(1))
        non2xx = int((re.search(r"Non-2xx or 3xx responses: (\d+)", out) or [0, 0])[1])
        m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
        errs = tuple(int(x) for x in m.groups()) if m else (0, 0, 0, 0)
        installs = after["installs"] - before["installs"]
        sig, master, api = (b - a for a, b in zip(r0, r1))
        # After the churn only c0 is registered: does HAProxy route only to it?
        final = web_ids(stack, 4)
        rows.append((label, reqs, non2xx, errs, installs, sig, master, api,
                     stack.lost_signals(), final == {"c0"}))
        print(out, flush=True)
        stack.stop()
        be.stop()
        agent.stop()
    print("\n== churn under load: wrk -t2 -c20 on /web, "
          f"{CYCLES} register/deregister cycles (c0 always in, c1..c3 come and go, 0.5 s apart), wait off")
    print(f"{'mode':12} {'requests':>9} {'non-2xx':>8} {'sock err c/r/w/t':>17} {'failed':>7} "
          f"{'installs':>8} {'SIGUSR2':>8} {'master':>7} {'lost':>5} {'runtime':>8} {'final ok':>9}")
    for label, reqs, non2xx, errs, installs, sig, master, api, lost, final in rows:
        failed = non2xx + sum(errs)
        print(f"{label:12} {reqs:9} {non2xx:8} {'/'.join(map(str, errs)):>17} {failed:7} "
              f"{installs:8} {sig:8} {master:7} {lost:5} {api:8} {str(final):>9}"
              + note_mode(label == "reload-free", sig, api))
    print("installs = change batches; SIGUSR2 = signals pilotfish sent; master = `Reloading HAProxy` "
          "lines from HAProxy's master;\nlost = SIGUSR2s the master never acted on; "
          "final ok = after the churn /web reaches only c0, as the catalog says;\n"
          f"normal+icor = normal with `{IDLE_CLOSE.strip()}` in KV service/haproxy/defaults-extra")


# ---------------------------------------------------------------- 2. registration -> routing latency

def latency(binary, tmp, rows):
    variants = [("wait off", "0s", "0s", False),
                (f"wait {WAIT_ON[0]}/{WAIT_ON[1]}", WAIT_ON[0], WAIT_ON[1], False),
                ("reload-free, wait off", "0s", "0s", True)]
    for label, wmin, wmax, rf in variants:
        agent = Agent(binary, tmp)
        ids = [f"l{i}" for i in range(REGS + 1)]
        be = Backends(ids)
        agent.register("l0", be.port["l0"])
        stack = Stack(binary, agent, tmp, "lat-" + re.sub(r"\W+", "-", label), wmin, wmax, rf)
        wait("l0 routed", lambda: web_ids(stack) == {"l0"})
        r0 = stack.counts()
        samples = []
        for i in range(1, REGS + 1):
            new, old = f"l{i}", f"l{i - 1}"
            agent.register(new, be.port[new])
            t0 = time.monotonic()
            while True:
                if new in web_ids(stack):
                    break
                if time.monotonic() - t0 > 60:
                    raise SystemExit(f"{label}: {new} never routed")
                time.sleep(0.002)
            samples.append((time.monotonic() - t0) * 1000)
            agent.deregister(old)
            wait(f"{old} out", lambda: web_ids(stack, 3) == {new}, step=0.01)
        r1 = stack.counts()
        sig, master, api = (b - a for a, b in zip(r0, r1))
        samples.sort()
        p = lambda q: samples[min(len(samples) - 1, int(q * len(samples)))]
        rows.append((label, len(samples), p(0.5), p(0.99), samples[-1], sig, api))
        stack.stop()
        be.stop()
        agent.stop()
    print(f"\n== registration -> first request through HAProxy reaching the new instance "
          f"({REGS} fresh instances, 2-request polls 2 ms apart)")
    print(f"{'variant':24} {'n':>4} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'SIGUSR2':>8} {'runtime':>8}")
    for label, n, p50, p99, mx, sig, api in rows:
        print(f"{label:24} {n:4} {p50:8.1f} {p99:8.1f} {mx:8.1f} {sig:8} {api:8}"
              + note_mode(label.startswith("reload-free"), sig, api))


# ---------------------------------------------------------------- 3. CPU with 500 services changing

def churn_services(agent, stop, base, done):
    """Re-register every service once a second with the other port; done[0] counts."""
    flip = 0
    names = [f"svc{i:03}" for i in range(SERVICES)]
    while not stop.is_set():
        flip ^= 1
        start = time.monotonic()
        for i, n in enumerate(names):
            if stop.is_set():
                return
            agent.register(n, base + 2 * i + flip, name=n)
            done[0] += 1
            pause = start + (i + 1) / len(names) - time.monotonic()
            if pause > 0:
                time.sleep(pause)


def cpu(binary, tmp, rows):
    base = 30000
    # No per-client connection limit on the agent: every one of the 500+
    # queries holds its own long-poll. The last pilotfish row keeps the
    # agent's default limit (200 per address, as Consul's): pilotfish then
    # holds at most 128 open and rotates the rest with short waits.
    unlimited = ["--http-max-conns-per-client", "0"]
    variants = [("pilotfish, wait off", "0s", "0s", unlimited),
                (f"pilotfish, wait {WAIT_ON[0]}/{WAIT_ON[1]}", WAIT_ON[0], WAIT_ON[1], unlimited),
                ("pilotfish, wait off, default limit", "0s", "0s", []),
                ("naive loop, blocking query", "block", None, unlimited),
                ("naive loop, 1 s poll", "poll", None, unlimited)]
    for label, a, b, agent_args in variants:
        agent = Agent(binary, tmp, agent_args)
        for i in range(SERVICES):
            agent.register(f"svc{i:03}", base + 2 * i, name=f"svc{i:03}")
        stack = None
        if b is not None:
            stack = Stack(binary, agent, tmp, "cpu-" + re.sub(r"\W+", "-", label), a, b, False)
            wait("every service rendered", lambda: open(stack.cfg).read().count("\nbackend ") >= SERVICES,
                 limit=120)
            stack.settled()
            pid = stack.proc.pid
        else:
            out = os.path.join(tmp, f"naive-{a}.cfg")
            proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--naive",
                                     agent.addr, out, a])
            STARTED.append(lambda p=proc: (p.poll() is None and p.kill(), p.wait()))
            wait("the naive loop rendered", lambda: os.path.exists(out), limit=120)
            pid = proc.pid
        stop = threading.Event()
        done = [0]
        t = threading.Thread(target=churn_services, args=(agent, stop, base, done))
        t.start()
        time.sleep(2)  # warm up: the churn is running
        c0 = stack and stack.counts()
        s0 = stack and stack.status()
        (p0, k0), (ag0, _), w0, d0 = cpu_ticks(pid), cpu_ticks(agent.proc.pid), time.monotonic(), done[0]
        time.sleep(CPU_SECS)
        (p1, k1), (ag1, _), w1, d1 = cpu_ticks(pid), cpu_ticks(agent.proc.pid), time.monotonic(), done[0]
        c1 = stack and stack.counts()
        s1 = stack and stack.status()
        stop.set()
        t.join()
        span = w1 - w0
        pct = lambda d: 100.0 * d / TICK / span
        if stack:
            installs = s1["installs"] - s0["installs"]
            sig = c1[0] - c0[0]
            stack.stop()
        else:
            installs = sig = None
            proc.kill()
            proc.wait()
        rows.append((label, pct(p1 - p0), pct(k1 - k0), pct(ag1 - ag0), installs, sig, (d1 - d0) / span))
        agent.stop()
    print(f"\n== CPU: {SERVICES} services (one instance each, tagged rest), each re-registered with "
          f"another port once per second, {CPU_SECS:.0f} s window; % of one core")
    print(f"{'who':34} {'self %':>7} {'children %':>11} {'agent %':>8} {'installs':>9} {'SIGUSR2':>8} {'changes/s':>10}")
    for label, me, kids, ag, installs, sig, rate in rows:
        fmt = lambda v: "-" if v is None else str(v)
        print(f"{label:34} {me:7.1f} {kids:11.1f} {ag:8.1f} {fmt(installs):>9} {fmt(sig):>8} {rate:10.0f}")
    print("children % = the `haproxy -c` checks pilotfish waited for; the naive loop runs no check or reload")


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--serve":
        return serve(sys.argv[2:])
    if len(sys.argv) > 1 and sys.argv[1] == "--naive":
        return naive(*sys.argv[2:5])
    binary = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else
                             os.path.join(ROOT, "target", "release", "pilotfish"))
    for tool in ("haproxy", "wrk"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} is not on PATH")
    print(f"pilotfish: {binary}\n{subprocess.run(['haproxy', '-v'], capture_output=True, text=True).stdout.splitlines()[0]}")
    tmp = tempfile.mkdtemp(prefix="pf-template-bench-")
    tables = []
    try:
        for name, f in (("churn", churn), ("latency", latency), ("cpu", cpu)):
            if name in ONLY:
                rows = []
                f(binary, tmp, rows)
                tables.append(name)
    finally:
        for stop in reversed(STARTED):
            stop()
        if os.environ.get("KEEP"):
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
