#!/usr/bin/env python3
"""500 stalled request heads (from 127.20.x.y) while another client does GETs."""
import asyncio, socket, subprocess, sys, time

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0)); return s.getsockname()[1]

async def main():
    binary = sys.argv[1]; port = free_port()
    agent = subprocess.Popen([binary, "agent", "--dev", "--node", "n1", "--http-port", str(port),
        "--dns-port", str(free_port()), "--server-port", str(free_port()), "--log-level", "error"])
    try:
        await asyncio.sleep(2)
        assert agent.poll() is None
        closed_at = []
        t0 = time.monotonic()
        async def stall(i):
            r, w = await asyncio.open_connection("127.0.0.1", port,
                local_addr=(f"127.20.{i // 200}.{i % 200 + 1}", 0))
            w.write(b"GET /v1/status/leader HTTP/1.1\r\nHost: x\r\n")  # never ends
            await w.drain()
            data = await r.read()  # until the server closes
            closed_at.append((time.monotonic() - t0, data))
        stalls = [asyncio.create_task(stall(i)) for i in range(500)]
        await asyncio.sleep(0.5)
        lat, ok, fail = [], 0, 0
        while time.monotonic() - t0 < 15:
            t = time.monotonic()
            try:
                r, w = await asyncio.open_connection("127.0.0.1", port)
                w.write(b"GET /v1/kv/x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                data = await asyncio.wait_for(r.read(), 5)
                ok += data.startswith(b"HTTP/1.1 404"); w.close()
            except Exception:
                fail += 1
            lat.append(time.monotonic() - t)
            await asyncio.sleep(0.05)
        try:
            await asyncio.wait_for(asyncio.gather(*stalls, return_exceptions=True), 30)
        except asyncio.TimeoutError:
            print(f"after 45 s: {len(closed_at)} of 500 stalled connections closed")
            closed_at.append((float("nan"), b""))
        times = sorted(c[0] for c in closed_at)
        lat.sort()
        print(f"stalled: {len(times)} of 500 closed by the agent, first after {times[0]:.1f}s, "
              f"last after {times[-1]:.1f}s; any answered: {any(c[1] for c in closed_at)}")
        print(f"other client during the stall: {ok} GETs answered, {fail} failed, "
              f"latency median {lat[len(lat)//2]*1000:.1f} ms, max {lat[-1]*1000:.1f} ms")
    finally:
        agent.terminate(); agent.wait()

asyncio.run(main())
