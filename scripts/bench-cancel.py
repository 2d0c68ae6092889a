#!/usr/bin/env python3
"""Cancel latency through the fleet: a gateway and a worker (one slot) on Redis, one user limited
to one generation at a time. Each round: a stream is running; the client sends Cancel and at once
asks for the next completion (again and again while refused for concurrency). Printed:
  cancel → done   the client sees finish_reason "cancelled"
  cancel → lease  the next completion is admitted (the lease was released)
  cancel → slot   the next completion's first token (the worker stopped the old generation, its
                  only slot was free, it claimed and started the next)
Usage: scripts/bench-cancel.py [--rounds N]   (needs REDIS_URL and a release build)
"""
import argparse
import asyncio
import json
import os
import re
import statistics
import subprocess
import sys
import time
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, ".build", "release", "playground")


def start(role, port, fleet, *flags):
    p = subprocess.Popen([BIN, role, "--host", "127.0.0.1", "--port", str(port), "--fleet", fleet, "--log-level", "error",
                          "--auth", "off", *flags] if role == "gateway" else
                         [BIN, role, "--host", "127.0.0.1", "--port", str(port), "--fleet", fleet, "--log-level", os.environ.get("BENCH_LOG", "error"), *flags],
                         stdout=subprocess.PIPE, text=True, env=dict(os.environ, PLAYGROUND_DIE_WITH_PARENT=str(os.getpid())))
    line = p.stdout.readline()
    m = re.match(r"listening on http://[\d.]+:(\d+)", line or "")
    if not m:
        p.kill()
        sys.exit(f"bench-cancel: {role} did not start: {line!r}")
    return p, int(m.group(1))


def pct(values, q):
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


async def run(port, rounds):
    import websockets
    done_ms, lease_ms, slot_ms, refusals = [], [], [], 0
    async with websockets.connect(f"ws://127.0.0.1:{port}/v1/ws", max_size=None) as ws:
        seq = 0

        async def ask():
            nonlocal seq
            seq += 1
            await ws.send(json.dumps({"id": seq, "method": "POST", "path": "/v1/completions",
                                      "body": {"prompt": "The sea", "max_tokens": 1000, "seed": 5}}))
            return seq

        current = await ask()
        rid = None
        while rid is None:  # the first stream: accepted, then a token
            m = json.loads(await ws.recv())
            if m["id"] == current and m["type"] == "accepted":
                rid = m["request_id"]
            elif m["type"] == "error":
                sys.exit(f"bench-cancel: {m}")
        while True:
            m = json.loads(await ws.recv())
            if m["id"] == current and m["type"] == "delta":
                break
        for _ in range(rounds):
            t0 = time.perf_counter()
            await ws.send(json.dumps({"id": f"c{seq}", "method": "POST", "path": f"/v1/completions/{rid}/cancel"}))
            nxt = await ask()
            t_done = t_lease = t_slot = None
            next_rid = None
            while t_done is None or t_slot is None:
                m = json.loads(await ws.recv())
                now = time.perf_counter()
                if m["id"] == current and m["type"] == "done":
                    assert m["finish_reason"] == "cancelled", m
                    t_done = now
                elif m["id"] == nxt and m["type"] == "error":
                    assert m["error"]["code"] == "concurrent_generations_limit_exceeded", m
                    refusals += 1
                    nxt = await ask()  # the lease is not free yet: ask again at once
                elif m["id"] == nxt and m["type"] == "accepted":
                    t_lease, next_rid = now, m["request_id"]
                elif m["id"] == nxt and m["type"] == "delta" and t_slot is None:
                    t_slot = now
            done_ms.append((t_done - t0) * 1000)
            lease_ms.append((t_lease - t0) * 1000)
            slot_ms.append((t_slot - t0) * 1000)
            current, rid = nxt, next_rid
    return done_ms, lease_ms, slot_ms, refusals


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=300)
    args = ap.parse_args()
    if not os.environ.get("REDIS_URL"):
        sys.exit("bench-cancel: set REDIS_URL")
    fleet = "cancel-" + uuid.uuid4().hex[:8]
    pace = ["--model-ttft-ms", "0", "--model-token-ms", "20", "--model-jitter", "0"]
    worker, _ = start("worker", 0, fleet, "--slots", "1", *pace)
    gateway, port = start("gateway", 0, fleet, "--rate-limit-rpm", "100000", "--max-concurrent", "1", *pace)
    try:
        done_ms, lease_ms, slot_ms, refusals = asyncio.run(run(port, args.rounds))
    finally:
        for p in (gateway, worker):
            p.terminate()
            p.wait(15)
    print(f"bench-cancel: {args.rounds} cancels through a gateway and a one-slot worker on Redis; "
          f"{refusals} next-completion attempts refused while the lease was held")
    for name, v in (("cancel → done", done_ms), ("cancel → lease free", lease_ms), ("cancel → worker slot reused", slot_ms)):
        print(f"  {name}: p50 {statistics.median(v):.2f} ms, p99 {pct(v, 0.99):.2f} ms, max {max(v):.2f} ms")


if __name__ == "__main__":
    main()
