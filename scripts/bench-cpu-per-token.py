#!/usr/bin/env python3
"""CPU per completion and per token of a gateway and a worker, measured (issue 20, docs/SCALING.md).

Runs `playground bench --paths fleet --phases max` twice — answers of --long tokens, then of
--short — samples the gateway's and the worker's CPU time (/proc/PID/stat) over a window in the
middle of each run, and fits cpu = a × completions + b × tokens per process through the two
points. Needs REDIS_URL. Loopback, 2 loops per process, the built-in model at zero pace.
"""
import argparse
import os
import re
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, ".build", "release", "playground")


def cpu(pid):
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


def pids(role):
    out = subprocess.run(["pgrep", "-f", f"release/playground {role} "], capture_output=True, text=True).stdout.split()
    return [int(x) for x in out]


def run(tokens, window, port):
    p = subprocess.Popen([BIN, "bench", "--paths", "fleet", "--phases", "max", "--duration", str(window + 5),
                          "--max-tokens", str(tokens), "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 30
        while time.time() < deadline and not (pids("gateway") and pids("worker")):
            time.sleep(0.2)
        time.sleep(3)  # the closed loop under way
        g, w = pids("gateway"), pids("worker")
        if not g or not w:
            sys.exit("the bench's gateway and worker did not start")
        c0 = {x: cpu(x) for x in g + w}
        time.sleep(window)
        c1 = {x: cpu(x) for x in g + w}
        out, _ = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            p.kill()
    m = re.search(r"ws closed loop .*?: (\d+) completions/s, (\d+) tokens/s", out)
    if not m:
        sys.exit("no figures in the bench's output:\n" + out)
    done, toks = int(m.group(1)) * window, int(m.group(2)) * window
    return done, toks, sum(c1[x] - c0[x] for x in g), sum(c1[x] - c0[x] for x in w)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--long", type=int, default=300, help="max_tokens of the first run (default 300)")
    ap.add_argument("--short", type=int, default=4, help="max_tokens of the second run (default 4)")
    ap.add_argument("--window", type=int, default=5, help="seconds of CPU sampled per run (default 5)")
    ap.add_argument("--port", type=int, default=18971, help="port of the bench's gateway (default 18971)")
    a = ap.parse_args()
    if not os.environ.get("REDIS_URL"):
        sys.exit("REDIS_URL is not set")
    points = []
    for tokens in (a.long, a.short):
        done, toks, g, w = run(tokens, a.window, a.port)
        points.append((done, toks, g, w))
        print(f"max_tokens {tokens}: {done / a.window:.0f} completions/s, {toks / a.window:.0f} tokens/s "
              f"({toks / max(done, 1):.1f} each); CPU s over {a.window} s: gateway {g:.2f}, worker {w:.2f}")
    (n1, t1, g1, w1), (n2, t2, g2, w2) = points
    det = n1 * t2 - n2 * t1
    for name, c1, c2 in (("gateway", g1, g2), ("worker", w1, w2)):
        per_completion = (c1 * t2 - c2 * t1) / det
        per_token = (n1 * c2 - n2 * c1) / det
        print(f"{name}: {per_completion * 1e6:.1f} µs per completion + {per_token * 1e6:.2f} µs per token")


if __name__ == "__main__":
    main()
