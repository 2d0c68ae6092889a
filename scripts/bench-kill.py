#!/usr/bin/env python3
"""How long a streaming client waits to hear that its worker died. A gateway and a one-slot worker
on Redis (one fleet); each round a completion streams over the WebSocket envelope (20 ms per token,
long enough never to end by itself); after a few tokens and a random wait (so the kill falls
anywhere between the gateway's periodic deadline checks) the worker is killed with SIGKILL, and the
time from the kill to the client's `error` event (expected `generation_interrupted`) or the
stream's end is taken. Then a new worker is started; the next round's first token shows it is up
(that wait is printed too). Printed: p50/p90/p99/max of kill → error, and the codes seen; exits 1
if any code was not `generation_interrupted`.

  REDIS_URL=redis://127.0.0.1:6395/0 scripts/bench-kill.py [--bin PATH] [--rounds N]
      [--tokens-before-kill K] [--kill-spread-ms MS] [--round-timeout S]
  (scripts/redis.sh start /tmp/benchredis 6395 --ephemeral starts a Redis)
"""
import argparse
import asyncio
import collections
import json
import os
import random
import shutil
import signal
import sys
import time
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
from benchnodes import BenchError, Nodes, add_node_args, parse_node_args  # noqa: E402
PACE = ["--model-ttft-ms", "0", "--model-token-ms", "20", "--model-jitter", "0"]
LIMITS = ["--rate-limit-rpm", "1000000", "--max-concurrent", "1000"]
# 2,000 tokens at 20 ms: 40 s. With negative penalties and this seed the built-in model writes all
# 2,000 (most seeds do; a few end within 30 tokens).
BODY = {"prompt": "The sea", "max_tokens": 2000, "presence_penalty": -2, "frequency_penalty": -2, "seed": 2}






def pct(values, q):
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


async def run(nodes, port, rounds, before_kill, spread_ms, round_timeout):
    import websockets
    kill_ms, up_ms, codes, early = [], [], collections.Counter(), 0
    worker, t_started = nodes.start("worker", "--slots", "1", *PACE)[0], time.perf_counter()
    seq = 0
    async with websockets.connect(f"ws://127.0.0.1:{port}/v1/ws", max_size=None) as ws:

        async def recv(deadline):
            left = deadline - time.perf_counter()
            if left <= 0:
                raise asyncio.TimeoutError
            return json.loads(await asyncio.wait_for(ws.recv(), left))

        while len(kill_ms) + codes["timeout"] < rounds:
            seq += 1
            await ws.send(json.dumps({"id": seq, "method": "POST", "path": "/v1/completions",
                                      "body": BODY}))
            # A few tokens (the generation runs on the worker), then tokens for a random while.
            deadline, tokens, rid, kill_at = time.perf_counter() + round_timeout, 0, None, None
            ended = False
            while not ended:
                if tokens >= before_kill and kill_at is None:
                    kill_at = time.perf_counter() + random.uniform(0, spread_ms) / 1000
                try:
                    m = await recv(kill_at or deadline)
                except asyncio.TimeoutError:
                    if kill_at is None:
                        raise BenchError(f"no {before_kill} tokens within {round_timeout} s")
                    break  # time to kill
                if m.get("id") != seq:
                    continue
                if m["type"] == "accepted":
                    rid = m["request_id"]
                elif m["type"] == "delta":
                    tokens += 1
                    if tokens == 1 and t_started is not None:
                        up_ms.append((time.perf_counter() - t_started) * 1000)
                        t_started = None
                elif m["type"] in ("done", "error"):
                    ended = True
            if ended:  # ended (or failed) before the kill: not a round
                early += 1
                if early > rounds:
                    raise BenchError(f"streams keep ending before the kill: {m}")
                continue
            t0 = time.perf_counter()
            os.kill(worker.pid, signal.SIGKILL)
            worker.wait()
            deadline = t0 + round_timeout
            try:
                while True:
                    m = await recv(deadline)
                    if m.get("id") == seq and m["type"] in ("error", "done"):
                        break
                kill_ms.append((time.perf_counter() - t0) * 1000)
                codes[m["error"]["code"] if m["type"] == "error" else f"done:{m['finish_reason']}"] += 1
            except asyncio.TimeoutError:
                codes["timeout"] += 1
                if rid:
                    await ws.send(json.dumps({"id": f"c{seq}", "method": "POST",
                                              "path": f"/v1/completions/{rid}/cancel"}))
            if len(kill_ms) + codes["timeout"] < rounds:
                worker, t_started = nodes.start("worker", "--slots", "1", *PACE)[0], time.perf_counter()
            print(f"\r  round {len(kill_ms) + codes['timeout']}/{rounds}", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    return kill_ms, up_ms, codes, early


def positive(text):
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive integer")
    return int(text)


def spread(text):
    if not text.isdigit() or int(text) > 10000:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer from 0 to 10000")
    return int(text)


def main():
    ap = argparse.ArgumentParser(description="Kill -9 of a worker mid-stream: how long until its client hears.",
                                 allow_abbrev=False, formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__)
    add_node_args(ap)
    ap.add_argument("--rounds", type=positive, default=100, help="workers killed (default: 100)")
    ap.add_argument("--tokens-before-kill", type=positive, default=3, help="tokens received before the kill (default: 3)")
    ap.add_argument("--kill-spread-ms", type=spread, default=500,
                    help="after those tokens, a random wait of 0 to MS before the kill (default: 500; 0: at once)")
    ap.add_argument("--round-timeout", type=positive, default=30,
                    help="seconds to wait for the tokens, then for the error (default: 30)")
    args, binary = parse_node_args(ap)

    nodes = Nodes(binary, args.redis_url, "--fleet", "kill-" + uuid.uuid4().hex[:8], logprefix="bench-kill-")
    try:
        _, port = nodes.start("gateway", "--auth", "off", *LIMITS, *PACE)
        kill_ms, up_ms, codes, early = asyncio.run(run(nodes, port, args.rounds, args.tokens_before_kill,
                                                       args.kill_spread_ms, args.round_timeout))
    except BenchError as e:
        sys.exit(f"bench-kill: {e}")
    except KeyboardInterrupt:
        sys.exit("bench-kill: interrupted")
    finally:
        nodes.stop_all()
    shutil.rmtree(nodes.logdir, ignore_errors=True)  # the nodes' logs are kept only when something failed
    print(f"bench-kill: {args.rounds} workers killed (SIGKILL) after {args.tokens_before_kill} tokens "
          f"and 0-{args.kill_spread_ms} ms of a stream "
          f"through a gateway and a one-slot worker on Redis"
          + (f"; {early} streams ended before the kill and were not counted" if early else ""))
    if kill_ms:
        print(f"  kill → client hears: p50 {pct(kill_ms, 0.5):.0f} ms, p90 {pct(kill_ms, 0.9):.0f} ms, "
              f"p99 {pct(kill_ms, 0.99):.0f} ms, max {max(kill_ms):.0f} ms (min {min(kill_ms):.0f} ms)")
    if up_ms:
        print(f"  worker started → its first token ({len(up_ms)} workers): p50 {pct(up_ms, 0.5):.0f} ms, "
              f"max {max(up_ms):.0f} ms")
    print("  codes: " + ", ".join(f"{c} {n}" for c, n in codes.most_common()))
    if set(codes) - {"generation_interrupted"}:
        sys.exit(1)


if __name__ == "__main__":
    main()
