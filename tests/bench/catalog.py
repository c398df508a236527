#!/usr/bin/env python3
"""How the catalog scales: 1k, 10k, 30k service instances (issue 13, item 4).

One `pilotfish agent` (default `--server --data-dir` under BENCH_DIR, so every
registration is fsynced as in production; STORAGE=dev runs `--dev`, in
memory, the mode of issue 13's table: 15.4k registrations/s at 1k) is
filled in steps to each of SIZES instances: 1,000 service names (svc-0000
.. svc-0999) over 100 nodes (node-00 .. node-99), each instance one
`PUT /v1/catalog/register` of a node, its address, one service with two tags
and one passing service check. svc-0000 has exactly 10 instances at every
size; the other instances go round-robin to svc-0001 .. svc-0999 (at 1k,
990 instances: svc-0991 .. svc-0999 have none yet).

At each size the script measures, in this order:

  registrations/s  BATCH (2,000) more instances registered over CONNS (64)
                   keep-alive connections while the catalog holds SIZE ..
                   SIZE + BATCH, from the first request sent to the last
                   answer; then deregistered (untimed) so every size starts
                   from exactly SIZE. The load generator's own CPU share is
                   printed: near 100 % of one core means the figure is
                   client-bound (a floor, not the server's ceiling).
  health p50/p99   GET /v1/health/service/svc-0000 (10 instances),
                   HEALTH_REQS (2,000) sequential requests, one connection.
  services p50/p99 GET /v1/catalog/services, SERVICES_REQS (200) likewise.
  wake-up          WAITERS (1,000) connections, each blocked on
                   GET /v1/health/service/svc-0000?index=N&wait=5m, held by
                   tests/bench/waiters.rs (native, a thread a connection,
                   built here with `rustc -O`: Python's asyncio spent about
                   120 us of CPU reading each 13 KB answer, so on two cores
                   the load generator, not the server, set the figure; the
                   agent runs with --http-max-conns-per-client 0, as all
                   waiters come from 127.0.0.1); after PARK_WAIT (2 s) one
                   separate process registers an 11th instance. Reported:
                   p50/p99/max from the waiters' go (just before that
                   registration is sent, so a little early) to each waiter
                   having read its whole answer, the registration's own
                   latency, the agent's CPU (all threads,
                   /proc/<pid>/task/*/schedstat) from just before the
                   registration to the last answer read, and the waiters'
                   own CPU. Every answer must hold the new instance. The instance is
                   then deregistered. Before the first size, one such
                   wake-up goes untimed (WARMUP=1; WARMUP=0 times the very
                   first), for each system: the first wake-up of a fresh
                   process also pays for growing its thread pools and heap.

etcd 3.4 side by side (/usr/bin/etcd, Debian package etcd-server, installed
with apt-get when missing and run as root): one member on loopback ports,
its data dir under BENCH_DIR. At each size it holds the same number of keys
(catalog/<service>/<instance id> = that instance's registration JSON, put in
transactions of 128). WAITERS watch streams over its JSON gateway
(`POST /v3/watch`, a prefix watch on catalog/svc-0000/, the analogue of
watching one service) are created (each acknowledged, `"created":true`),
then one process puts catalog/svc-0000/wake-<size>. The same three figures;
note that each etcd watcher receives only the new key, each pilotfish waiter
the whole 11-instance list.

Times are CLOCK_MONOTONIC, shared by this script and its helper process.
The table ends with the growth factor from the first size to the last.
Exits non-zero if any request failed, a waiter or watcher missed the new
instance or answered early, or a server died.

Usage: tests/bench/catalog.py path/to/pilotfish
Env:   SIZES=1000,10000,30000  BATCH=2000  CONNS=64  HEALTH_REQS=2000
       SERVICES_REQS=200  WAITERS=1000  PARK_WAIT=2  WARMUP=1
       STORAGE=data-dir|dev  BENCH_DIR=/var/tmp  ETCD=/usr/bin/etcd (ETCD=
       skips etcd)
Raises its soft `ulimit -n` to the hard one, which must exceed WAITERS + CONNS
+ a few hundred.
"""

import asyncio
import base64
import json
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time

SIZES = [int(s) for s in os.environ.get("SIZES", "1000,10000,30000").split(",")]
BATCH = int(os.environ.get("BATCH", "2000"))
CONNS = int(os.environ.get("CONNS", "64"))
HEALTH_REQS = int(os.environ.get("HEALTH_REQS", "2000"))
SERVICES_REQS = int(os.environ.get("SERVICES_REQS", "200"))
WAITERS = int(os.environ.get("WAITERS", "1000"))
PARK_WAIT = float(os.environ.get("PARK_WAIT", "2"))
WARMUP = os.environ.get("WARMUP", "1") == "1"
STORAGE = os.environ.get("STORAGE", "data-dir")
BENCH_DIR = os.environ.get("BENCH_DIR", "/var/tmp")
ETCD = os.environ.get("ETCD", "/usr/bin/etcd")

SERVICES = 1000
NODES = 100
WATCHED = "svc-0000"
WATCHED_INSTANCES = 10
ETCD_TXN_OPS = 128  # etcd's default --max-txn-ops
HERE = os.path.dirname(os.path.abspath(__file__))


def now():
    return time.clock_gettime(time.CLOCK_MONOTONIC)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def b64(s):
    return base64.b64encode(s.encode()).decode()


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p / 100 * len(xs)))]


# ---------------------------------------------------------------- HTTP/1.1


def request_bytes(method, path, body=b""):
    return (
        f"{method} {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


class Responses:
    """Splits a byte stream into HTTP/1.1 responses (Content-Length or chunked)."""

    def __init__(self):
        self.buf = bytearray()
        self.head = None  # (status, headers, body start) of the response being read

    def feed(self, data):
        self.buf += data
        out = []
        while True:
            if self.head is None:
                end = self.buf.find(b"\r\n\r\n")
                if end < 0:
                    return out
                lines = self.buf[:end].decode("latin-1").split("\r\n")
                headers = {}
                for line in lines[1:]:
                    k, _, v = line.partition(":")
                    headers[k.strip().lower()] = v.strip()
                self.head = (int(lines[0].split()[1]), headers, end + 4)
            status, headers, start = self.head
            if headers.get("transfer-encoding", "").lower() == "chunked":
                body, used = self.dechunk(start)
                if body is None:
                    return out
            else:
                used = start + int(headers.get("content-length", "0"))
                if len(self.buf) < used:
                    return out
                body = bytes(self.buf[start:used])
            del self.buf[:used]
            self.head = None
            out.append((status, headers, body))

    def dechunk(self, pos):
        body = bytearray()
        while True:
            eol = self.buf.find(b"\r\n", pos)
            if eol < 0:
                return None, 0
            size = int(self.buf[pos:eol].split(b";")[0], 16)
            if len(self.buf) < eol + 2 + size + 2:
                return None, 0
            body += self.buf[eol + 2:eol + 2 + size]
            pos = eol + 2 + size + 2
            if size == 0:
                return bytes(body), pos


class Conn:
    """One blocking keep-alive connection, for sequential requests."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=60)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.responses = Responses()

    def call(self, method, path, body=b""):
        self.sock.sendall(request_bytes(method, path, body))
        while True:
            data = self.sock.recv(1 << 20)
            if not data:
                raise ConnectionError(f"{method} {path}: connection closed")
            got = self.responses.feed(data)
            if got:
                return got[0]

    def json(self, method, path, body=b""):
        status, headers, data = self.call(method, path, body)
        if status != 200:
            raise RuntimeError(f"{method} {path}: {status} {data[:200]!r}")
        return headers, json.loads(data)

    def close(self):
        self.sock.close()


class Pool(asyncio.Protocol):
    """One of the keep-alive connections that work through a shared request list."""

    def __init__(self, requests, ok, failures, done):
        self.requests = requests
        self.ok = ok
        self.failures = failures
        self.done = done
        self.responses = Responses()

    def connection_made(self, transport):
        self.transport = transport
        self.send_next()

    def send_next(self):
        req = next(self.requests, None)
        if req is None:
            self.transport.close()
            self.done.set_result(None)
        else:
            self.transport.write(req)

    def data_received(self, data):
        for status, _, body in self.responses.feed(data):
            if not self.ok(status, body):
                self.failures.append(f"{status} {body[:200]!r}")
            self.send_next()

    def connection_lost(self, exc):
        if not self.done.done():
            self.failures.append(f"connection lost: {exc}")
            self.done.set_result(None)


def answered_true(status, body):
    return status == 200 and body.strip() == b"true"


async def drive(port, requests, ok=answered_true):
    """Send every request over CONNS connections; (seconds, own CPU seconds, failures).

    ok(status, body) tells a good answer from a failure."""
    loop = asyncio.get_running_loop()
    it = iter(requests)
    failures = []
    dones = [loop.create_future() for _ in range(min(CONNS, len(requests)))]
    cpu0, t0 = time.process_time(), now()
    for d in dones:
        await loop.create_connection(lambda d=d: Pool(it, ok, failures, d), "127.0.0.1", port)
    await asyncio.gather(*dones)
    return now() - t0, time.process_time() - cpu0, failures


# ---------------------------------------------------------------- the catalog


def instance(j):
    """(service, instance id, node) of instance j: svc-0000 holds 0..9."""
    if j < WATCHED_INSTANCES:
        return WATCHED, f"{WATCHED}-{j}", f"node-{j:02}"
    svc = f"svc-{1 + (j - WATCHED_INSTANCES) % (SERVICES - 1):04}"
    return svc, f"{svc}-{j}", f"node-{j % NODES:02}"


def registration(svc, sid, node, port=8080):
    n = int(node[5:])
    return json.dumps({
        "Node": node,
        "Address": f"10.0.{n // 250}.{n % 250 + 1}",
        "Service": {"ID": sid, "Service": svc, "Tags": ["v1", f"zone-{n % 3}"], "Port": port},
        "Check": {"CheckID": f"service:{sid}", "Name": f"{svc} alive", "Status": "passing",
                  "ServiceID": sid},
    }).encode()


def register_request(svc, sid, node):
    return request_bytes("PUT", "/v1/catalog/register", registration(svc, sid, node))


def deregister_request(sid, node):
    body = json.dumps({"Node": node, "ServiceID": sid}).encode()
    return request_bytes("PUT", "/v1/catalog/deregister", body)


def etcd_txn_ok(status, body):
    return status == 200 and b'"succeeded":true' in body


def etcd_txn(pairs):
    ops = [{"request_put": {"key": b64(k), "value": b64(v)}} for k, v in pairs]
    return request_bytes("POST", "/v3/kv/txn", json.dumps({"success": ops}).encode())


# ---------------------------------------------------------------- CPU


def cpu_mark(pid):
    """(ns on CPU summed over the live threads, their ids, utime+stime ticks)."""
    ns, tids = 0, set()
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                ns += int(f.read().split()[0])
            tids.add(tid)
        except (FileNotFoundError, ProcessLookupError):
            pass
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return ns, tids, int(fields[11]) + int(fields[12])


def cpu_ms(before, after):
    """CPU between two marks: schedstat (ns) unless a thread exited in between
    (its time left the sum), then the 10 ms ticks of /proc/<pid>/stat."""
    if before[1] <= after[1] and after[0] > 0:
        return (after[0] - before[0]) / 1e6
    return (after[2] - before[2]) * 1000 / os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------- one write, timed apart


def trigger_main():
    """`catalog.py --trigger`: connect, say ready, on "go" send one request; print the times.

    A process of its own, so that reading a thousand answers in the main
    process cannot delay the moment the write is sent or its answer read.
    """
    spec = json.loads(sys.stdin.readline())
    conn = Conn(spec["port"])
    print("ready", flush=True)
    sys.stdin.readline()
    t0 = now()
    status, _, body = conn.call(spec["method"], spec["path"], spec["body"].encode())
    t1 = now()
    print(json.dumps({"t0": t0, "t1": t1, "status": status, "body": body.decode()[:300]}), flush=True)


async def triggered(port, method, path, body, before_go):
    """Run one write in a trigger process; before_go() runs just before it is sent."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, os.path.abspath(__file__), "--trigger",
        stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    spec = {"port": port, "method": method, "path": path, "body": body.decode()}
    proc.stdin.write(json.dumps(spec).encode() + b"\n")
    await proc.stdin.drain()
    if (await proc.stdout.readline()).strip() != b"ready":
        raise RuntimeError("trigger process did not connect")
    before_go()
    proc.stdin.write(b"go\n")
    await proc.stdin.drain()
    result = json.loads(await proc.stdout.readline())
    await proc.wait()
    return result


# ---------------------------------------------------------------- wake-ups


def build_waiters(tmp):
    """tests/bench/waiters.rs, built with the toolchain's rustc."""
    out = os.path.join(tmp, "waiters")
    subprocess.run(["rustc", "-O", "--edition", "2021", os.path.join(HERE, "waiters.rs"),
                    "-o", out], check=True)
    return out


async def wake_up(waiters_bin, port, pid, request, ready, done, expect, write):
    """WAITERS parked by the waiters tool, then write(before_go); the figures.

    ready: what marks a waiter parked ("" = its request sent); done: "http"
    (a whole response) or the text that marks its event; expect: what every
    answer must hold. Returns (figures, problems).
    """
    with tempfile.NamedTemporaryFile(prefix="wake-", delete=False) as f:
        f.write(request)
    proc = await asyncio.create_subprocess_exec(
        waiters_bin, f"127.0.0.1:{port}", str(WAITERS), f.name, ready, done, expect,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), 90)
        if line.strip() != b"parked":
            raise RuntimeError(f"waiters: {line!r}")
        await asyncio.sleep(PARK_WAIT)
        marks = {}

        def go():
            marks["cpu"] = cpu_mark(pid)
            proc.stdin.write(b"go\n")

        result = await write(go)
        got = json.loads(await asyncio.wait_for(proc.stdout.readline(), 120))
        after = cpu_mark(pid)
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()
        os.unlink(f.name)
    times = got["ms"]
    figures = {"p50": None, "p99": None, "max": None, "cpu": cpu_ms(marks["cpu"], after),
               "client_cpu": got["cpu_ms"], "write": (result["t1"] - result["t0"]) * 1000}
    if times:
        figures.update(p50=pct(times, 50), p99=pct(times, 99), max=max(times))
    problems = []
    if got["early"]:
        problems.append(f"{got['early']} answered before the write")
    if got["unanswered"] or got["failures"]:
        problems.append(f"{got['unanswered']} unanswered, failures: {got['failures']}")
    if got["lacking"]:
        problems.append(f"{got['lacking']} of {WAITERS} answers lack the write")
    return result, figures, problems


async def pilotfish_wake(waiters_bin, port, pid, tag, failures):
    conn = Conn(port)
    headers, _ = conn.json("GET", f"/v1/health/service/{WATCHED}")
    conn.close()
    index = int(headers["x-consul-index"])
    path = f"/v1/health/service/{WATCHED}?index={index}&wait=5m"
    sid, node = f"{WATCHED}-wake-{tag}", "node-50"
    write, figures, problems = await wake_up(
        waiters_bin, port, pid, request_bytes("GET", path), "", "http", f'"ID":"{sid}"',
        lambda go: triggered(port, "PUT", "/v1/catalog/register",
                             registration(WATCHED, sid, node), go))
    if write["status"] != 200 or write["body"] != "true":
        failures.append(f"pilotfish {tag}: the wake-up registration answered "
                        f"{write['status']} {write['body']}")
    failures.extend(f"pilotfish {tag}: {p}" for p in problems)
    conn = Conn(port)
    conn.json("PUT", "/v1/catalog/deregister",
              json.dumps({"Node": node, "ServiceID": sid}).encode())
    conn.close()
    return figures


async def etcd_wake(waiters_bin, port, pid, tag, failures):
    prefix = f"catalog/{WATCHED}/"
    range_end = prefix[:-1] + chr(ord(prefix[-1]) + 1)
    body = json.dumps({"create_request": {"key": b64(prefix), "range_end": b64(range_end)}})
    key = f"{prefix}wake-{tag}"
    needle = b64(key)
    put = json.dumps({"key": b64(key), "value": b64(
        registration(WATCHED, f"{WATCHED}-wake-{tag}", "node-50").decode())}).encode()
    write, figures, problems = await wake_up(
        waiters_bin, port, pid, request_bytes("POST", "/v3/watch", body.encode()),
        '"created":true', needle, needle,
        lambda go: triggered(port, "POST", "/v3/kv/put", put, go))
    if write["status"] != 200:
        failures.append(f"etcd {tag}: the put answered {write['status']} {write['body']}")
    failures.extend(f"etcd {tag}: {p}" for p in problems)
    conn = Conn(port)
    conn.json("POST", "/v3/kv/deleterange", json.dumps({"key": b64(key)}).encode())
    conn.close()
    return figures


# ---------------------------------------------------------------- servers


def wait_http(port, path, proc, name, ok=lambda body: True):
    deadline = now() + 30
    while now() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited at start with status {proc.returncode}")
        try:
            conn = Conn(port)
            status, _, body = conn.call("GET", path)
            conn.close()
            if status == 200 and ok(body):
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{name} did not answer GET {path} within 30 s")


def start_pilotfish(binary, tmp):
    port = free_port()
    storage = ["--dev"] if STORAGE == "dev" else [
        "--server", "--data-dir", os.path.join(tmp, "pilotfish"), "--bind", "127.0.0.1"]
    proc = subprocess.Popen(
        [binary, "agent", *storage, "--node", "bench", "--http-port", str(port),
         "--dns-port", str(free_port()), "--server-port", str(free_port()),
         "--http-max-conns-per-client", "0", "--log-level", "warn"])
    wait_http(port, "/v1/status/leader", proc, "pilotfish", lambda b: b.strip() != b'""')
    return proc, port


def ensure_etcd():
    if os.path.exists(ETCD):
        return
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise RuntimeError(f"no etcd at {ETCD} (run as root to install etcd-server, or ETCD=)")
    print("# installing etcd-server", file=sys.stderr)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-q"], env=env, stdout=subprocess.DEVNULL)
    subprocess.run(["apt-get", "install", "-y", "-q", "etcd-server"], env=env,
                   stdout=subprocess.DEVNULL, check=True)


def start_etcd(tmp):
    ensure_etcd()
    port, peer = free_port(), free_port()
    log = open(os.path.join(tmp, "etcd.log"), "w")
    proc = subprocess.Popen(
        [ETCD, "--name", "bench", "--data-dir", os.path.join(tmp, "etcd"),
         "--listen-client-urls", f"http://127.0.0.1:{port}",
         "--advertise-client-urls", f"http://127.0.0.1:{port}",
         "--listen-peer-urls", f"http://127.0.0.1:{peer}",
         "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
         "--initial-cluster", f"bench=http://127.0.0.1:{peer}",
         "--initial-cluster-state", "new", "--log-level", "error"],
        stdout=log, stderr=log)
    wait_http(port, "/health", proc, "etcd")
    version = subprocess.run([ETCD, "--version"], capture_output=True, text=True).stdout.split()
    return proc, port, version[2] if len(version) > 2 else "?"


# ---------------------------------------------------------------- the run


def failed(failures, what, errs):
    if errs:
        failures.append(f"{what}: {len(errs)} requests failed, the first: {errs[0]}")


def fmt_k(n):
    return f"{n // 1000}k" if n % 1000 == 0 else str(n)


async def measure_size(size, loaded, pf_port, pf_pid, etcd, waiters, failures, log):
    """One column of the table; the catalog holds `loaded` instances on entry."""
    row = {}
    # Fill to size (informational rate: the catalog grows during it).
    reqs = [register_request(*instance(j)) for j in range(loaded, size)]
    secs, _, errs = await drive(pf_port, reqs)
    failed(failures, f"pilotfish fill to {size}", errs)
    row["fill"] = (size - loaded) / secs if secs else 0

    # BATCH more, timed, then removed again.
    batch = [(f"svc-{1 + k % (SERVICES - 1):04}", f"batch-{size}-{k}", f"node-{k % NODES:02}")
             for k in range(BATCH)]
    server0 = cpu_mark(pf_pid)
    secs, client_cpu, errs = await drive(pf_port, [register_request(*b) for b in batch])
    server1 = cpu_mark(pf_pid)
    failed(failures, f"pilotfish batch at {size}", errs)
    row["regs"] = BATCH / secs
    row["reg_cpu_us"] = cpu_ms(server0, server1) * 1000 / BATCH
    row["client_share"] = client_cpu / secs
    _, _, errs = await drive(pf_port, [deregister_request(sid, node) for _, sid, node in batch])
    failed(failures, f"pilotfish deregistration at {size}", errs)

    conn = Conn(pf_port)
    _, services = conn.json("GET", "/v1/catalog/services")
    expect = 1 + min(SERVICES - 1, size - WATCHED_INSTANCES)
    have = sum(1 for s in services if s.startswith("svc-"))
    if have != expect:
        failures.append(f"pilotfish {size}: catalog lists {have} svc-* services, not {expect}")
    _, entries = conn.json("GET", f"/v1/health/service/{WATCHED}")
    if len(entries) != WATCHED_INSTANCES:
        failures.append(f"pilotfish {size}: {WATCHED} has {len(entries)} instances, "
                        f"not {WATCHED_INSTANCES}")
    for name, path, n in [("health", f"/v1/health/service/{WATCHED}", HEALTH_REQS),
                          ("services", "/v1/catalog/services", SERVICES_REQS)]:
        times = []
        for _ in range(n):
            t0 = now()
            status, _, _ = conn.call("GET", path)
            times.append((now() - t0) * 1000)
            if status != 200:
                failures.append(f"pilotfish {size}: GET {path} answered {status}")
                break
        row[name] = (pct(times, 50), pct(times, 99))
    conn.close()
    log(f"{fmt_k(size)}: fill {row['fill']:.0f}/s, batch {row['regs']:.0f}/s "
        f"(load generator {row['client_share']:.0%} of a core), "
        f"health p50 {row['health'][0]:.2f} ms, services p50 {row['services'][0]:.2f} ms")

    if WARMUP and not loaded:
        await pilotfish_wake(waiters, pf_port, pf_pid, "warm-up", failures)
    row["wake"] = await pilotfish_wake(waiters, pf_port, pf_pid, size, failures)
    log(f"{fmt_k(size)}: pilotfish wake {row['wake']}")

    if etcd:
        etcd_port, etcd_pid = etcd
        pairs = []
        for j in range(loaded, size):
            svc, sid, node = instance(j)
            pairs.append((f"catalog/{svc}/{sid}", registration(svc, sid, node).decode()))
        txns = [etcd_txn(pairs[i:i + ETCD_TXN_OPS]) for i in range(0, len(pairs), ETCD_TXN_OPS)]
        _, _, errs = await drive(etcd_port, txns, etcd_txn_ok)
        failed(failures, f"etcd load to {size}", errs)
        if WARMUP and not loaded:
            await etcd_wake(waiters, etcd_port, etcd_pid, "warm-up", failures)
        row["etcd"] = await etcd_wake(waiters, etcd_port, etcd_pid, size, failures)
        log(f"{fmt_k(size)}: etcd wake {row['etcd']}")
    return row


def print_table(rows, title, etcd_version, storage):
    sizes = list(rows)
    head = f"{'':58}" + "".join(f"{fmt_k(s):>10}" for s in sizes) + f"{'growth':>10}"
    print(f"\n{title}")
    print(head)
    print("-" * len(head))

    def line(label, get, fmt):
        vals = [get(rows[s]) for s in sizes]
        cells = "".join(f"{'-' if v is None else format(v, fmt):>10}" for v in vals)
        first, last = vals[0], vals[-1]
        growth = "-"
        if first and last is not None:
            growth = f"{last / first:.1f}x" if last >= first else f"{last / first:.2f}x"
        print(f"{label:58}{cells}{growth:>10}")

    line("registrations/s (BATCH more, CONNS connections)", lambda r: r["regs"], ".0f")
    line("  agent CPU per registration, us", lambda r: r["reg_cpu_us"], ".0f")
    line("  load generator, share of one core", lambda r: r["client_share"], ".2f")
    line("  fill rate of the step, /s (catalog growing)", lambda r: r["fill"], ".0f")
    line("GET /v1/health/service/<10 instances> p50 ms", lambda r: r["health"][0], ".2f")
    line("  p99 ms", lambda r: r["health"][1], ".2f")
    line("GET /v1/catalog/services p50 ms", lambda r: r["services"][0], ".2f")
    line("  p99 ms", lambda r: r["services"][1], ".2f")
    def wake_lines(key, labels):
        """labels: the p99 row's, the CPU row's, the write's."""
        line(labels[0], lambda r: r[key]["p99"], ".0f")
        for figure in ["p50", "max"]:
            line(f"  {figure} ms", lambda r: r[key][figure], ".0f")
        line(labels[1], lambda r: r[key]["cpu"], ".0f")
        line(labels[2], lambda r: r[key]["write"], ".0f")
        line("  load generator CPU over the wake-up ms", lambda r: r[key]["client_cpu"], ".0f")

    wake_lines("wake", [f"{WAITERS} blocked, one registration: p99 until answered ms",
                        "agent CPU for that wake-up ms",
                        "the triggering registration's latency ms"])
    if etcd_version:
        wake_lines("etcd", [f"etcd {etcd_version}: {WAITERS} watchers, one put: p99 ms",
                            "etcd CPU for that wake-up ms", "the put's latency ms"])
    print(f"(pilotfish {storage}; BATCH={BATCH} CONNS={CONNS} WAITERS={WAITERS}; "
          f"growth = last size / first size)")


async def main(binary):
    os.makedirs(BENCH_DIR, exist_ok=True)
    tmp = tempfile.mkdtemp(dir=BENCH_DIR, prefix="pf-catalog-bench.")
    procs = []
    failures = []

    def log(msg):
        print(f"# {msg}", file=sys.stderr, flush=True)

    try:
        waiters = build_waiters(tmp)
        pf, pf_port = start_pilotfish(binary, tmp)
        procs.append(pf)
        etcd, etcd_version = None, None
        if ETCD:
            etcd_proc, etcd_port, etcd_version = start_etcd(tmp)
            procs.append(etcd_proc)
            etcd = (etcd_port, etcd_proc.pid)
        version = subprocess.run([binary, "--version"], capture_output=True, text=True)
        storage = ("--dev (in memory)" if STORAGE == "dev"
                   else f"--data-dir {tmp}/pilotfish (fsynced)")
        log(f"{version.stdout.strip()}, {storage}; etcd {etcd_version or 'skipped'}; "
            f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
        rows = {}
        loaded = 0
        for size in SIZES:
            rows[size] = await measure_size(size, loaded, pf_port, pf.pid, etcd, waiters,
                                            failures, log)
            loaded = size
            for p in procs:
                if p.poll() is not None:
                    raise RuntimeError(f"{p.args[0]} exited with status {p.returncode}")
        print_table(rows, f"Catalog of {SERVICES} services on {NODES} nodes",
                    etcd_version, storage)
    finally:
        for p in procs:
            p.kill()
            p.wait()
        shutil.rmtree(tmp, ignore_errors=True)
    for f in failures:
        print(f"FAILED: {f}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--trigger"]:
        trigger_main()
    elif len(sys.argv) != 2:
        sys.exit(__doc__)
    elif STORAGE not in ("data-dir", "dev"):
        sys.exit(f"STORAGE={STORAGE}: say data-dir or dev")
    else:
        resource.setrlimit(resource.RLIMIT_NOFILE, (resource.getrlimit(resource.RLIMIT_NOFILE)[1],) * 2)
        sys.exit(asyncio.run(main(sys.argv[1])))
