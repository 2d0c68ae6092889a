#!/usr/bin/env python3
"""The model proxy's overhead, same run: streamed completions sent straight to a model-server
(zero pace) against the same requests through gateway → Redis → worker (model proxy) →
model-server. Prints TTFT p50/p99 and completions/s for both and the ratio, then the worker's
memory per open upstream stream (streams held open on a model-server that does not answer yet).

  REDIS_URL=redis://… scripts/bench-proxy.py [--requests N] [--concurrency C] [--streams S] [--runs R]
"""
import argparse
import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import uuid

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
BIN = os.path.join(ROOT, ".build", "release", "playground")


def start(*args, env=None):
    p = subprocess.Popen([BIN, *args, "--host", "127.0.0.1", "--port", "0", "--log-level", "error"], stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, text=True, env=env or os.environ)
    line = p.stdout.readline()
    m = re.match(r"listening on http://([\d.]+):(\d+)", line or "")
    if not m:
        p.kill()
        sys.exit(f"bench-proxy: {args[0]} did not start: {line!r}")
    return p, int(m.group(2))


async def one(port, model, max_tokens):
    body = json.dumps({"model": model, "prompt": "The sea was calm in the morning, and", "max_tokens": max_tokens, "stream": True,
                       "seed": 2}).encode()
    t0 = time.perf_counter()
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(b"POST /v1/completions HTTP/1.1\r\nHost: b\r\nContent-Type: application/json\r\nConnection: close\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    ttft = None
    buf = b""
    while True:
        chunk = await r.read(65536)
        if not chunk:
            break
        buf += chunk
        if ttft is None and b'"text":"' in buf and re.search(rb'"text":"[^"]', buf):
            ttft = time.perf_counter() - t0
        if b"data: [DONE]" in buf:
            break
    w.close()
    if ttft is None or b'"error"' in buf:
        raise RuntimeError(buf[-300:])
    return ttft, time.perf_counter() - t0


async def measure(port, model, requests, concurrency, max_tokens):
    ttfts, errors = [], 0
    queue = list(range(requests))

    async def worker():
        nonlocal errors
        while queue:
            queue.pop()
            try:
                t, _ = await one(port, model, max_tokens)
                ttfts.append(t)
            except Exception:  # noqa: BLE001 — counted
                errors += 1
    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    secs = time.perf_counter() - t0
    ttfts.sort()
    return ttfts[len(ttfts) // 2] * 1000, ttfts[int(len(ttfts) * 0.99) - 1] * 1000, len(ttfts) / secs, errors


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


async def hold_streams(port, model, n):
    conns = []
    body = json.dumps({"model": model, "prompt": "The sea", "max_tokens": 4, "stream": True}).encode()
    for i in range(n):
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(b"POST /v1/completions HTTP/1.1\r\nHost: b\r\nContent-Type: application/json\r\nConnection: close\r\n"
                b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        conns.append((r, w))
        if i % 100 == 99:
            await asyncio.sleep(0.05)
    return conns


def main():
    global BIN
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--streams", type=int, default=1000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--bin", default=BIN, help="the playground binary (default: .build/release/playground)")
    a = ap.parse_args()
    BIN = os.path.abspath(a.bin)
    if not os.access(BIN, os.X_OK):
        ap.error(f"--bin {BIN}: not an executable")
    if not os.environ.get("REDIS_URL"):
        sys.exit("bench-proxy: set REDIS_URL (the fleet path needs Redis)")
    procs = []
    try:
        region, rport = start("model-server", "--model-ttft-ms", "0", "--model-token-ms", "0")
        slow, sport = start("model-server", "--model-ttft-ms", "600000", "--model-token-ms", "0")
        procs += [region, slow]
        fd, models = tempfile.mkstemp(suffix=".json")
        with os.fdopen(fd, "w") as f:
            json.dump({"upstreams": [{"name": "region", "base_url": f"http://127.0.0.1:{rport}/v1", "model": "builtin", "max_in_flight": 4096},
                                     {"name": "slow", "base_url": f"http://127.0.0.1:{sport}/v1", "model": "builtin", "max_in_flight": 4096,
                                      "first_token_timeout_ms": 600000, "stream_timeout_ms": 600000}],
                       "aliases": {"m": [["region"]], "slow": [["slow"]]}, "hedge_fraction": 0}, f)
        fleet = "bp" + uuid.uuid4().hex[:8]
        common = ["--fleet", fleet, "--models", models, "--auth", "off", "--rate-limit-rpm", "0", "--max-concurrent", "0"]
        worker, wport = start("worker", *common, "--slots", "8192", "--max-queue", "8192")
        gateway, gport = start("gateway", *common, "--max-queue", "8192")
        procs += [worker, gateway]
        time.sleep(0.5)
        print(f"streamed completions, {a.max_tokens} tokens, {a.requests} requests, {a.concurrency} at once, new connection each; ms")
        print("run  direct TTFT p50/p99   /s      proxy TTFT p50/p99    /s     added p50/p99   throughput ×")
        asyncio.run(measure(rport, "builtin", 200, a.concurrency, a.max_tokens))   # warm-up
        asyncio.run(measure(gport, "m", 200, a.concurrency, a.max_tokens))
        for run in range(a.runs):
            d50, d99, drate, derr = asyncio.run(measure(rport, "builtin", a.requests, a.concurrency, a.max_tokens))
            p50, p99, prate, perr = asyncio.run(measure(gport, "m", a.requests, a.concurrency, a.max_tokens))
            print(f"{run + 1:>3}  {d50:6.2f} / {d99:6.2f}  {drate:7.0f}   {p50:6.2f} / {p99:6.2f}  {prate:7.0f}   "
                  f"{p50 - d50:+6.2f} / {p99 - d99:+6.2f}   ×{prate / drate:.2f}   errors {derr}/{perr}")

        async def memory():
            before = rss_kib(worker.pid)
            conns = await hold_streams(gport, "slow", a.streams)
            await asyncio.sleep(2)
            after = rss_kib(worker.pid)
            for _, w in conns:
                w.close()
            await asyncio.sleep(1)
            return before, after, rss_kib(worker.pid)
        before, after, released = asyncio.run(memory())
        print(f"worker memory: {before} KiB idle, {after} KiB with {a.streams} open upstream streams "
              f"→ {(after - before) * 1024 / a.streams / 1024:.1f} KiB per stream (each: a job, a client connection pool entry, "
              f"an SSE parser); {released} KiB after they closed")
    finally:
        for p in reversed(procs):
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()


if __name__ == "__main__":
    main()
