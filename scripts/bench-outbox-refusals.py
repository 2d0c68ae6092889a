#!/usr/bin/env python3
"""What a preset write refused at the outbox's bound costs a node, and what one user hammering such
writes does to everyone else (issue 15 item 5).

A node with its own PostgreSQL and Redis; one user has 200 cached presets of 30 KB; PostgreSQL is
stopped; the user's outbox is filled to its bound; then the user sends refused writes back to back
while another thread times /healthz and another user's completions. Prints medians and p99s.

    scripts/bench-outbox-refusals.py [--binary PATH] [--writes N]

Loopback only, bounded in count and time; stops what it started.
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))


def free_port():
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def call(url, method="GET", key=None, body=None, timeout=30):
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    req = urllib.request.Request(url, method=method, headers=headers, data=json.dumps(body).encode() if body is not None else None)
    t0 = time.perf_counter()
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            call.last = r.read()
            status = r.status
    except urllib.error.HTTPError as e:
        call.last = e.read()
        status = e.code
    return status, (time.perf_counter() - t0) * 1000


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p))]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--binary", default=os.path.join(ROOT, ".build", "release", "playground"))
    ap.add_argument("--writes", type=int, default=300, help="refused writes to time")
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="bench-outbox-", dir="/tmp")
    pg_port, redis_port = free_port(), free_port()
    started = []
    node = None
    try:
        db = subprocess.run([os.path.join(ROOT, "scripts", "pg.sh"), "start", work + "/pg", str(pg_port), "--fast"],
                            capture_output=True, text=True, check=True).stdout.strip()
        started.append(("pg", work + "/pg", pg_port))
        redis = subprocess.run([os.path.join(ROOT, "scripts", "redis.sh"), "start", work + "/redis", str(redis_port), "--ephemeral"],
                               capture_output=True, text=True, check=True).stdout.strip()
        started.append(("redis", work + "/redis", redis_port))
        env = dict(os.environ, DATABASE_URL=db, REDIS_URL=redis)
        subprocess.run([args.binary, "migrate"], env=env, check=True, capture_output=True)
        keys = [subprocess.run([args.binary, "admin", "keys", "create", "--user", u], env=env, capture_output=True, text=True,
                               check=True).stdout.strip() for u in ("hammer", "bystander")]
        has_flag = "--outbox-max-writes" in subprocess.run([args.binary, "serve", "--help"], capture_output=True, text=True).stdout
        flags = ["--outbox-max-writes", "50"] if has_flag else []
        node = subprocess.Popen([args.binary, "serve", "--host", "127.0.0.1", "--port", "0", "--log-level", "error",
                                 "--rate-limit-rpm", "0", "--max-concurrent", "0", "--model-ttft-ms", "20", "--model-token-ms", "2",
                                 "--model-jitter", "0", *flags], env=env, stdout=subprocess.PIPE, text=True)
        url = node.stdout.readline().split()[-1]
        hammer, bystander = keys
        for i in range(200):
            status, _ = call(url + "/v1/presets", "POST", hammer, {"name": f"seed {i}", "prompt": "p" * 30000})
            assert status == 201, status
        call(url + "/v1/presets", "GET", bystander)
        subprocess.run([os.path.join(ROOT, "scripts", "pg.sh"), "stop", work + "/pg"], check=True, capture_output=True)
        started = [s for s in started if s[0] != "pg"]
        filled = 0
        while True:  # the outbox's bound: 50 writes with the flag, the old fixed 10,000 without
            status, _ = call(url + "/v1/presets", "POST", hammer, {"name": f"q{filled}", "prompt": "x"})
            if status != 202:
                print(f"  the outbox refused write {filled + 1}: {status} {call.last[:160]!r}")
                break
            filled += 1
        quiet_health = [call(url + "/healthz")[1] for _ in range(200)]
        quiet_completion = [call(url + "/v1/completions", "POST", bystander, {"prompt": "The sea", "max_tokens": 8})[1] for _ in range(30)]
        stop = threading.Event()
        refused = []

        def hammering():
            for i in range(args.writes):
                status, ms = call(url + "/v1/presets", "POST", hammer, {"name": f"over {i}", "prompt": "z" * 1000})
                assert status == 503, status
                refused.append(ms)
            stop.set()
        health, completion = [], []
        t = threading.Thread(target=hammering)
        t.start()
        while not stop.is_set():
            health.append(call(url + "/healthz")[1])
            completion.append(call(url + "/v1/completions", "POST", bystander, {"prompt": "The sea", "max_tokens": 8})[1])
        t.join()
        print(f"binary {args.binary}: outbox filled with {filled} writes; {len(refused)} refused writes")
        print(f"  refused write      median {statistics.median(refused):7.2f} ms   p99 {pct(refused, 0.99):7.2f} ms")
        print(f"  /healthz  quiet    median {statistics.median(quiet_health):7.2f} ms   during: median {statistics.median(health):7.2f} ms"
              f"   p99 {pct(health, 0.99):7.2f} ms")
        print(f"  other user's completion (8 tokens) quiet median {statistics.median(quiet_completion):7.2f} ms"
              f"   during: median {statistics.median(completion):7.2f} ms   p99 {pct(completion, 0.99):7.2f} ms")
    finally:
        if node:
            node.terminate()
            node.wait(10)
        for kind, d, port in started:
            subprocess.run([os.path.join(ROOT, "scripts", f"{kind}.sh"), "stop", d], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
