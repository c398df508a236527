#!/usr/bin/env python3
"""Memory and write stall of a raft snapshot of 100,000 keys.

Starts `pilotfish agent --server --data-dir DIR` alone on free loopback
ports, loads KEYS keys with small values (`PUT /v1/txn`, 64 sets a txn),
lets it settle and records its RSS. Then it writes filler until the agent
takes a raft snapshot: values of FILLER_KIB overwriting one key (the log
grows, the state hardly does) when the agent takes snapshots by log size
(`--raft-snapshot-threshold-bytes`), or one small write an entry for a
build that snapshots every 8192 entries. Meanwhile VmRSS is sampled from
/proc/<pid>/status every few ms (and VmHWM, reset through clear_refs when
allowed, catches what falls between samples), and a second client keeps
writing one small key, timing each write.

Prints RSS before, peak during, their ratio (goal: at most 1.3), the
snapshot's size and build time and how long writes were held back (from the
agent's log line, for builds that write it; the slowest write seen by the
client says the same from outside). Then the same RSS figures for
`GET /v1/snapshot` (Consul's save API), read to the end.

Usage: tests/bench/snapshot_rss.py [path/to/pilotfish]   (default: target/release)
Env:   KEYS=100000  FILLER_KIB=256  THRESHOLD=<bytes, passed on when supported>
"""

import http.client
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

from blocking import free_port, status_kib  # this directory's blocking-query bench

KEYS = int(os.environ.get("KEYS", "100000"))
FILLER_KIB = int(os.environ.get("FILLER_KIB", "256"))
THRESHOLD = os.environ.get("THRESHOLD")
BATCH = 64
MIB = 1024 * 1024


def reset_peak(pid):
    """Reset VmHWM to the current RSS (Linux 4.0+, needs ptrace rights)."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class Sampler(threading.Thread):
    """VmRSS every few ms until stopped: the highest value seen."""

    def __init__(self, pid):
        super().__init__(daemon=True)
        self.pid, self.peak, self.samples = pid, 0, 0
        self.done = threading.Event()

    def run(self):
        while not self.done.is_set():
            self.peak = max(self.peak, status_kib(self.pid, "VmRSS"))
            self.samples += 1
            time.sleep(0.002)

    def stop(self, hwm_reset):
        self.done.set()
        self.join()
        if hwm_reset:
            self.peak = max(self.peak, status_kib(self.pid, "VmHWM"))
        return self.peak


class Prober(threading.Thread):
    """Writes one small key back to back on its own connection, timing each."""

    def __init__(self, port):
        super().__init__(daemon=True)
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        self.latencies = []
        self.done = threading.Event()

    def run(self):
        n = 0
        while not self.done.is_set():
            t = time.monotonic()
            status, body = call(self.conn, "PUT", "/v1/kv/probe", str(n).encode())
            assert status == 200, body
            self.latencies.append(time.monotonic() - t)
            n += 1

    def stop(self):
        self.done.set()
        self.join()
        return self.latencies


def call(conn, method, path, body=None):
    conn.request(method, path, body=body)
    r = conn.getresponse()
    return r.status, r.read()


def snapshot_mark(data_dir):
    """Identifies the raft snapshot file in place (None: there is none)."""
    try:
        st = os.stat(os.path.join(data_dir, "raft-snapshot"))
        return (st.st_ino, st.st_mtime_ns)
    except FileNotFoundError:
        return None


def mib(kib):
    return f"{kib / 1024:.1f} MiB"


def main():
    binary = sys.argv[1] if len(sys.argv) > 1 else "target/release/pilotfish"
    by_size = "--raft-snapshot-threshold-bytes" in subprocess.run(
        [binary, "agent", "--help"], capture_output=True, text=True
    ).stdout
    work = tempfile.mkdtemp(prefix="snapshot-rss-")
    data_dir = os.path.join(work, "data")
    log_path = os.path.join(work, "agent.log")
    port = free_port()
    args = [binary, "agent", "--server", "--data-dir", data_dir, "--node", "bench",
            "--bind", "127.0.0.1", "--client", "127.0.0.1", "--http-port", str(port),
            "--dns-port", str(free_port()), "--server-port", str(free_port()),
            "--log-level", "info"]
    if by_size and THRESHOLD:
        args += ["--raft-snapshot-threshold-bytes", THRESHOLD]
    log = open(log_path, "w")
    agent = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
    try:
        run(agent, port, data_dir, log_path, by_size)
    finally:
        agent.send_signal(signal.SIGTERM)
        try:
            agent.wait(10)
        except subprocess.TimeoutExpired:
            agent.kill()
            agent.wait()
        log.close()
        shutil.rmtree(work, ignore_errors=True)


def run(agent, port, data_dir, log_path, by_size):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    for _ in range(400):
        try:
            if call(conn, "PUT", "/v1/kv/ready", b"1")[0] == 200:
                break
        except OSError:
            conn.close()
        time.sleep(0.05)
    else:
        sys.exit(f"the agent did not take a write:\n{open(log_path).read()[-3000:]}")

    t = time.monotonic()
    for start in range(0, KEYS, BATCH):
        ops = [{"KV": {"Verb": "set", "Key": f"bench/{i:06d}", "Value": "dmFsdWU="}}
               for i in range(start, min(start + BATCH, KEYS))]
        status, body = call(conn, "PUT", "/v1/txn", json.dumps(ops).encode())
        assert status == 200, body
    loaded = time.monotonic() - t
    if snapshot_mark(data_dir) is not None:
        print("note: a snapshot was taken while loading; the figures are of the next one")
    time.sleep(2)
    before = status_kib(agent.pid, "VmRSS")
    mark = snapshot_mark(data_dir)
    print(f"{binary_name()}: {KEYS} keys loaded in {loaded:.1f} s, RSS {mib(before)}")

    # Filler until the snapshot file is replaced, RSS sampled throughout.
    hwm = reset_peak(agent.pid)
    sampler = Sampler(agent.pid)
    sampler.start()
    prober = Prober(port)
    prober.start()
    filler = (b"f" * (FILLER_KIB * 1024)) if by_size else b"f"
    writes = 0
    t = time.monotonic()
    while snapshot_mark(data_dir) == mark:
        status, body = call(conn, "PUT", "/v1/kv/filler", filler)
        assert status == 200, body
        writes += 1
        if time.monotonic() - t > 600:
            sys.exit("no snapshot after 10 minutes of filler")
    time.sleep(0.5)  # the purge and whatever follows the rename
    latencies = prober.stop()
    peak = sampler.stop(hwm)
    kind = f"{FILLER_KIB} KiB" if by_size else "small"
    print(f"filler: {writes} {kind} writes until the snapshot ({time.monotonic() - t:.1f} s)")
    built = None
    for line in open(log_path, errors="replace"):
        m = re.search(r"raft snapshot at index (\d+) built: (\d+) bytes in (\d+) ms, "
                      r"writes held back (\d+) ms", line)
        if m:
            built = m
    if built:
        index, size, ms, held = built.groups()
        print(f"raft snapshot at index {index}: {int(size) / MIB:.1f} MiB, built in {ms} ms, "
              f"writes held back {held} ms")
    else:
        size = os.path.getsize(os.path.join(data_dir, "raft-snapshot"))
        print(f"raft snapshot: {size / MIB:.1f} MiB (this build does not log its build time)")
    print(f"RSS before {mib(before)}, peak during {mib(peak)}, ratio {peak / before:.2f} "
          f"(goal <= 1.3; {sampler.samples} samples{', VmHWM' if hwm else ''})")
    if latencies:
        print(f"probe writes meanwhile: {len(latencies)}, median "
              f"{statistics.median(latencies) * 1000:.1f} ms, slowest "
              f"{max(latencies) * 1000:.0f} ms")

    # GET /v1/snapshot, read to the end.
    time.sleep(1)
    before = status_kib(agent.pid, "VmRSS")
    hwm = reset_peak(agent.pid)
    sampler = Sampler(agent.pid)
    sampler.start()
    t = time.monotonic()
    conn.request("GET", "/v1/snapshot")
    r = conn.getresponse()
    size = 0
    while chunk := r.read(1 << 20):
        size += len(chunk)
    took = time.monotonic() - t
    assert r.status == 200, r.status
    time.sleep(0.3)
    peak = sampler.stop(hwm)
    print(f"GET /v1/snapshot: {size / MIB:.1f} MiB in {took * 1000:.0f} ms; RSS before "
          f"{mib(before)}, peak during {mib(peak)}, ratio {peak / before:.2f}")


def binary_name():
    return sys.argv[1] if len(sys.argv) > 1 else "target/release/pilotfish"


if __name__ == "__main__":
    main()
