#!/usr/bin/env python3
"""10,000 concurrent blocking queries against `pilotfish agent --dev`.

Each of WAITERS HTTP/1.1 connections blocks on its own KV key
(`GET /v1/kv/bench/<i>?index=<its ModifyIndex>&wait=5m`). The script prints
the agent's RSS before and with every waiter parked, then writes one key and
reports how long its waiter took to answer and how many other waiters
answered (must be 0: a write wakes only the queries whose index moved).

The waiters connect from many loopback addresses, PER_SOURCE each
(127.10.x.y), as many clients would: the agent allows one client address
200 connections (`--http-max-conns-per-client`).

Usage: tests/bench/blocking.py [path/to/pilotfish]   (default: target/release)
Env:   WAITERS=10000  CONNECT_BATCH=500  PER_SOURCE=100
Needs `ulimit -n` above WAITERS + a few hundred for this script.
"""

import asyncio
import json
import os
import random
import socket
import subprocess
import sys
import time

WAITERS = int(os.environ.get("WAITERS", "10000"))
BATCH = int(os.environ.get("CONNECT_BATCH", "500"))
PER_SOURCE = int(os.environ.get("PER_SOURCE", "100"))


def source(i):
    """The loopback address waiter i connects from."""
    n = i // PER_SOURCE
    return (f"127.10.{n // 250}.{n % 250 + 1}", 0)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def status_kib(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


async def read_response(reader):
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return status, headers, body


async def call(reader, writer, method, path, body=b""):
    writer.write(
        f"{method} {path} HTTP/1.1\r\nHost: bench\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    await writer.drain()
    return await read_response(reader)


async def main():
    binary = sys.argv[1] if len(sys.argv) > 1 else "target/release/pilotfish"
    port = free_port()
    agent = subprocess.Popen(
        [binary, "agent", "--dev", "--node", "bench", "--http-port", str(port),
         "--dns-port", str(free_port()), "--server-port", str(free_port()), "--log-level", "warn"],
    )
    try:
        for _ in range(200):
            try:
                r, w = await asyncio.open_connection("127.0.0.1", port)
                break
            except OSError:
                await asyncio.sleep(0.05)
        else:
            sys.exit("agent did not start")
        # Create the keys, 64 per txn.
        for start in range(0, WAITERS, 64):
            ops = [{"KV": {"Verb": "set", "Key": f"bench/{i}", "Value": "dg=="}}
                   for i in range(start, min(start + 64, WAITERS))]
            st, _, body = await call(r, w, "PUT", "/v1/txn", json.dumps(ops).encode())
            assert st == 200, body
        idle = status_kib(agent.pid, "VmRSS")

        answered = []
        parked = []

        async def waiter(i):
            reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=source(i))
            st, h, _ = await call(reader, writer, "GET", f"/v1/kv/bench/{i}")
            index = int(h["x-consul-index"])
            writer.write(
                f"GET /v1/kv/bench/{i}?index={index}&wait=5m HTTP/1.1\r\nHost: bench\r\n\r\n".encode()
            )
            await writer.drain()
            parked.append(i)
            st, h, _ = await read_response(reader)
            answered.append((i, time.monotonic(), int(h["x-consul-index"]) > index))
            writer.close()

        t0 = time.monotonic()
        tasks = []
        for start in range(0, WAITERS, BATCH):
            batch = [asyncio.create_task(waiter(i)) for i in range(start, min(start + BATCH, WAITERS))]
            tasks += batch
            while len(parked) < min(start + BATCH, WAITERS):
                await asyncio.sleep(0.01)
        connect_s = time.monotonic() - t0
        await asyncio.sleep(2)  # let the last requests reach their handlers
        rss = status_kib(agent.pid, "VmRSS")
        hwm = status_kib(agent.pid, "VmHWM")
        fds = len(os.listdir(f"/proc/{agent.pid}/fd"))

        target = random.randrange(WAITERS)
        # The setup connection sat idle longer than the agent keeps an idle
        # keep-alive connection: write on a new one.
        w.close()
        r, w = await asyncio.open_connection("127.0.0.1", port)
        t1 = time.monotonic()
        st, _, _ = await call(r, w, "PUT", f"/v1/kv/bench/{target}", b"changed")
        assert st == 200
        while not answered:
            await asyncio.sleep(0.001)
        woke_s = answered[0][1] - t1
        await asyncio.sleep(1)
        others = [a for a in answered if a[0] != target]

        print(f"waiters:            {WAITERS} (connected and parked in {connect_s:.1f}s)")
        print(f"agent fds:          {fds}")
        print(f"RSS idle (keys in): {idle / 1024:.1f} MiB")
        print(f"RSS with waiters:   {rss / 1024:.1f} MiB (peak {hwm / 1024:.1f} MiB)")
        print(f"per waiter:         {(rss - idle) / WAITERS:.1f} KiB")
        print(f"one write woke:     waiter {answered[0][0]} (target {target}) in {woke_s * 1000:.1f} ms, "
              f"index moved: {answered[0][2]}")
        print(f"other waiters woken within 1s: {len(others)}")
        t2 = time.monotonic()
        agent.terminate()
        code = agent.wait()
        print(f"SIGTERM to exit:    {(time.monotonic() - t2) * 1000:.0f} ms with the waiters parked (status {code})")
        for t in tasks:
            t.cancel()
        ok = answered[0][0] == target and not others and code == 0
        sys.exit(0 if ok else 1)
    finally:
        if agent.poll() is None:
            agent.terminate()
            agent.wait()


if __name__ == "__main__":
    asyncio.run(main())
