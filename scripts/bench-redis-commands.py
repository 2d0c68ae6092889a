#!/usr/bin/env python3
"""Redis commands per completion: how many commands one completion costs on Redis, for
  fleet   a `gateway` and a `worker` process (one fleet), completions sent to the gateway;
  serve   one `serve` node with Redis (gateway and worker in one process).
Each path runs at each `--tokens` value: a warm-up of 20 completions (not counted), then
`--completions` completions over one WebSocket (`--concurrency` at a time), then an idle period
with the nodes running and no completions. The built-in model runs at zero pace with negative
penalties and a seed that reaches max_tokens (probed first), so completions run their full length.

Two counts per completion (pub/sub PUBLISH and commands inside MULTI are commands like any other):
  sent          commands the nodes sent to Redis (MONITOR, lines not marked "lua"): pipelined
                commands count one each, an EVALSHA counts one however much its script does
  incl_scripts  commands Redis ran, including every redis.call inside Lua scripts
                (INFO commandstats; INFO stats total_commands_processed counts the same way:
                it includes script-internal calls, checked at start and printed)
The two are cross-checked (MONITOR's client + script lines against commandstats; a note is
printed if they differ). Background commands (heartbeats, reclaim timers, the workers' blocking
XREADGROUP, ...) are measured over the idle period (at least --idle-seconds and the batch's
duration), scaled to the batch's duration and subtracted; their rate is printed. The nodes get no DATABASE_URL and run
with `--auth off`. Use a Redis of your own: any other client's commands are counted too.

  REDIS_URL=redis://127.0.0.1:6395/0 scripts/bench-redis-commands.py [--bin PATH] [--paths fleet,serve]
      [--tokens 16,256] [--completions N] [--concurrency C] [--idle-seconds S] [--top K]
  (scripts/redis.sh start /tmp/benchredis 6395 --ephemeral starts such a Redis)
"""
import argparse
import asyncio
import hashlib
import json
import os
import re
import shutil
import socket
import sys
import threading
import time
import urllib.parse
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
from benchnodes import BenchError, Nodes, add_node_args, parse_node_args  # noqa: E402
WARMUP = 20
PACE = ["--model-ttft-ms", "0", "--model-token-ms", "0", "--model-jitter", "0"]
LIMITS = ["--rate-limit-rpm", "1000000", "--max-concurrent", "1000"]
# Negative penalties favour words already written over the end of text: the built-in model then
# runs to max_tokens for most seeds (a probe picks one that does).
BODY = {"prompt": "The sea", "presence_penalty": -2, "frequency_penalty": -2}
OURS = {"info": 1, "echo": 1}  # our own commands inside each measured window (see snapshot())




# --- a minimal Redis client (RESP2), enough for INFO, ECHO, EVAL and MONITOR ---------------------

def redis_connect(url):
    u = urllib.parse.urlparse(url)
    if u.scheme != "redis":
        raise BenchError(f"unsupported Redis URL {url!r} (redis://[:password@]host:port[/db])")
    sock = socket.create_connection((u.hostname or "127.0.0.1", u.port or 6379), timeout=30)
    f = sock.makefile("rwb")
    db = (u.path or "/0").lstrip("/") or "0"
    if u.password:
        command(f, "AUTH", urllib.parse.unquote(u.password))
    command(f, "SELECT", db)
    return sock, f


def encode(*args):
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        b = a if isinstance(a, bytes) else str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(b), b))
    return b"".join(out)


def read_reply(f):
    line = f.readline()
    if not line:
        raise BenchError("Redis closed the connection")
    kind, rest = line[:1], line[1:-2]
    if kind == b"+":
        return rest.decode()
    if kind == b"-":
        raise BenchError(f"Redis: {rest.decode()}")
    if kind == b":":
        return int(rest)
    if kind == b"$":
        n = int(rest)
        return None if n < 0 else f.read(n + 2)[:-2].decode()
    if kind == b"*":
        n = int(rest)
        return None if n < 0 else [read_reply(f) for _ in range(n)]
    raise BenchError(f"unexpected Redis reply {line!r}")


def command(f, *args):
    f.write(encode(*args))
    f.flush()
    return read_reply(f)


def parse_info(text):
    """INFO text → (total_commands_processed, {command: calls})."""
    total, calls = None, {}
    for line in text.splitlines():
        if line.startswith("total_commands_processed:"):
            total = int(line.split(":", 1)[1])
        elif line.startswith("cmdstat_"):
            name, fields = line[len("cmdstat_"):].split(":", 1)
            calls[name] = int(re.search(r"calls=(\d+)", fields).group(1))
    return total, calls


class Monitor(threading.Thread):
    """Reads MONITOR and counts, per window between two markers (ECHO from the control connection),
    the commands clients sent and the commands scripts ran, by name. The control connection's own
    commands are left out."""

    def __init__(self, url, ignore_addr):
        super().__init__(daemon=True)
        self.sock, self.f = redis_connect(url)
        self.sock.settimeout(None)
        self.ignore = ignore_addr
        self.cond = threading.Condition()
        self.windows = {}  # marker → (sent {name: n}, in_scripts {name: n}, evalsha {sha: n})
        self.error = None
        if command(self.f, "MONITOR") != "OK":
            raise BenchError("MONITOR refused")

    def run(self):
        sent, lua, shas = {}, {}, {}
        try:
            while True:
                line = self.f.readline()
                if not line:
                    return
                # +1796488035.671357 [0 127.0.0.1:55080] "evalsha" "0cd1…" "0"   ([0 lua] inside scripts)
                text = line.decode("utf-8", "replace")
                m = re.match(r"\+\S+ \[\d+ ([^\]]+)\] \"([^\"]*)\"(?: \"([^\"]*)\")?", text)
                if not m:
                    continue
                source, name, first_arg = m.group(1), m.group(2).lower(), m.group(3)
                if source == self.ignore:
                    if name == "echo" and first_arg and first_arg.startswith("bench-mark-"):
                        with self.cond:
                            self.windows[first_arg] = (sent, lua, shas)
                            self.cond.notify_all()
                        sent, lua, shas = {}, {}, {}
                    continue
                counts = lua if source == "lua" else sent
                counts[name] = counts.get(name, 0) + 1
                if name == "evalsha" and first_arg:
                    shas[first_arg] = shas.get(first_arg, 0) + 1
        except Exception as e:  # noqa: BLE001 — reported by window()
            self.error = e
            with self.cond:
                self.cond.notify_all()

    def window(self, marker, timeout=60):
        """The counts from the previous marker up to `marker` (waits for MONITOR to catch up)."""
        with self.cond:
            if not self.cond.wait_for(lambda: marker in self.windows or self.error, timeout):
                raise BenchError("MONITOR fell behind")
            if self.error:
                raise BenchError(f"MONITOR failed: {self.error}")
            return self.windows.pop(marker)

    def close(self):
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


class Counter:
    """Snapshots of INFO (stats + commandstats) and MONITOR windows on one Redis."""

    def __init__(self, url):
        self.sock, self.f = redis_connect(url)
        self.addr = re.search(r"addr=(\S+)", command(self.f, "CLIENT", "INFO")).group(1)
        self.monitor = Monitor(url, self.addr)
        self.monitor.start()
        self.marks = 0

    def snapshot(self):
        """ECHO a marker and read INFO in one write: Redis runs both back to back, so the MONITOR
        window between two markers is the interval between the two INFO readings. Between two
        snapshots, our INFO and the next ECHO are counted by Redis too (OURS)."""
        self.marks += 1
        marker = f"bench-mark-{self.marks}"
        self.f.write(encode("ECHO", marker) + encode("INFO", "stats", "commandstats"))
        self.f.flush()
        read_reply(self.f)
        total, calls = parse_info(read_reply(self.f))
        return {"marker": marker, "total": total, "calls": calls, "t": time.perf_counter()}

    def delta(self, a, b):
        """What ran between snapshots a and b, our own commands left out."""
        self.monitor.windows.pop(a["marker"], None)  # what ran before a: not ours to count
        sent, lua, shas = self.monitor.window(b["marker"])
        calls = {k: v - a["calls"].get(k, 0) - OURS.get(k, 0) for k, v in b["calls"].items()}
        calls = {k: v for k, v in calls.items() if v}
        return {"seconds": b["t"] - a["t"], "total": b["total"] - a["total"] - sum(OURS.values()),
                "calls": calls, "sent": sent, "lua": lua, "scripts": shas}

    def close(self):
        self.monitor.close()
        self.sock.close()


def scripts_counted_in_total(counter):
    """Runs EVAL with three redis.call inside and returns how much total_commands_processed moved
    for it (4: the EVAL and its three calls; 1: the EVAL only)."""
    script = "redis.call('set', KEYS[1], '1'); redis.call('get', KEYS[1]); redis.call('del', KEYS[1]); return 1"
    a = counter.snapshot()
    command(counter.f, "EVAL", script, 1, f"bench-redis-commands:{uuid.uuid4().hex}")
    b = counter.snapshot()
    counter.monitor.window(b["marker"])
    return b["total"] - a["total"] - sum(OURS.values())


def script_names():
    """SHA1 → script name for the Lua scripts the nodes load (lua/*.lua: they start with cwd ROOT)."""
    names = {}
    lua_dir = os.path.join(ROOT, "lua")
    for f in sorted(os.listdir(lua_dir)):
        if f.endswith(".lua"):
            with open(os.path.join(lua_dir, f), "rb") as fh:
                names[hashlib.sha1(fh.read()).hexdigest()] = f[:-4]
    return names


# --- nodes ----------------------------------------------------------------------------------------



def start_path(nodes, path):
    fleet = "rcmd-" + uuid.uuid4().hex[:8]
    if path == "fleet":
        nodes.start("worker", "--fleet", fleet, *PACE)
        return nodes.start("gateway", "--fleet", fleet, "--auth", "off", *LIMITS, *PACE)[1]
    return nodes.start("serve", "--fleet", fleet, "--auth", "off", *LIMITS, *PACE)[1]


# --- completions ----------------------------------------------------------------------------------

async def complete(port, n, concurrency, body):
    """n completions over one WebSocket envelope, `concurrency` in flight; their finish reasons and
    completion token counts."""
    import websockets
    results = []
    async with websockets.connect(f"ws://127.0.0.1:{port}/v1/ws", max_size=None) as ws:
        sent, pending = 0, set()

        async def send():
            nonlocal sent
            sent += 1
            pending.add(sent)
            await ws.send(json.dumps({"id": sent, "method": "POST", "path": "/v1/completions", "body": body}))

        while sent < min(n, concurrency):
            await send()
        while pending:
            m = json.loads(await ws.recv())
            if m["type"] == "done":
                pending.discard(m["id"])
                results.append((m["finish_reason"], m["usage"]["completion_tokens"]))
                if sent < n:
                    await send()
            elif m["type"] == "error":
                raise BenchError(f"completion failed: {m}")
    return results


def probe_seed(port, max_tokens):
    """The first seed whose completion reaches max_tokens (else the one that runs longest)."""
    best = (-1, 1)
    for seed in range(1, 41):
        [(reason, tokens)] = asyncio.run(complete(port, 1, 1, dict(BODY, max_tokens=max_tokens, seed=seed)))
        if reason == "length":
            return seed
        best = max(best, (tokens, seed))
    return best[1]


def measure(counter, port, tokens, completions, concurrency, idle_min_s):
    body = dict(BODY, max_tokens=tokens, seed=probe_seed(port, tokens))
    asyncio.run(complete(port, WARMUP, concurrency, body))
    time.sleep(0.5)  # the warm-up's last releases and acknowledgements
    a = counter.snapshot()
    results = asyncio.run(complete(port, completions, concurrency, body))
    time.sleep(0.5)  # the batch's own trailing commands (lease release, ack) belong to it
    b = counter.snapshot()
    batch = counter.delta(a, b)
    idle_s = max(batch["seconds"], idle_min_s)
    time.sleep(idle_s)
    c = counter.snapshot()
    idle = counter.delta(b, c)
    return body["seed"], results, batch, idle


def per_completion(batch, idle, key, n):
    """{name: calls per completion} for batch[key] less the idle rate over the batch's duration."""
    scale = batch["seconds"] / idle["seconds"]
    names = set(batch[key]) | set(idle[key])
    out = {k: (batch[key].get(k, 0) - idle[key].get(k, 0) * scale) / n for k in names}
    return {k: v for k, v in out.items() if abs(v) >= 0.005}


def fmt_top(counts, k):
    """The k largest counts (all with k None) as "name 1.23, ..." """
    top = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:k]
    return ", ".join(f"{name} {v:.2f}" for name, v in top) or "-"


def report(rows, top_k):
    print(f"{'path':<6} {'tokens':>6} {'mean_tokens':>11} {'sent/compl':>10} {'incl_scripts/compl':>18} "
          f"{'total_cmds/compl':>16} {'idle cmds/s':>11}  top (calls/completion, incl. inside scripts)")
    for r in rows:
        print(f"{r['path']:<6} {r['tokens']:>6} {r['mean_tokens']:>11.2f} {r['sent']:>10.2f} {r['incl']:>18.2f} "
              f"{r['total']:>16.2f} {r['idle_rate']:>11.2f}  {fmt_top(r['calls'], top_k)}")
    print()
    for r in rows:
        print(f"{r['path']} {r['tokens']} (seed {r['seed']}, finish {r['finish']}):")
        print(f"  sent by the nodes:   {fmt_top(r['sent_by_name'], None)}")
        print(f"  EVALSHA by script:   {fmt_top(r['scripts_by_name'], None)}")
        print(f"  run inside scripts:  {fmt_top(r['lua_by_name'], None)}")
        print(f"  background, per second (subtracted): {fmt_top(r['idle_by_name'], None)}")
        if r["mismatch"]:
            print(f"  note: MONITOR saw {r['monitor_total']:.2f}/completion, commandstats {r['incl']:.2f}")


def csv_arg(kind, allowed=None):
    def parse(text):
        items = [s.strip() for s in text.split(",") if s.strip()]
        if not items:
            raise argparse.ArgumentTypeError("empty list")
        for s in items:
            if allowed and s not in allowed:
                raise argparse.ArgumentTypeError(f"{s!r} is not one of {', '.join(allowed)}")
            if kind is int and (not s.isdigit() or int(s) < 1):
                raise argparse.ArgumentTypeError(f"{s!r} is not a positive integer")
        return [kind(s) for s in items]
    return parse


def positive(text):
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive integer")
    return int(text)


def seconds(text):
    try:
        v = float(text)
    except ValueError:
        v = -1
    if not 0 < v <= 600:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds in (0, 600]")
    return v


def main():
    ap = argparse.ArgumentParser(description="Redis commands per completion (fleet and serve paths).", allow_abbrev=False,
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    add_node_args(ap)
    ap.add_argument("--paths", type=csv_arg(str, ("fleet", "serve")), default=["fleet", "serve"],
                    help="fleet, serve or both (default: fleet,serve)")
    ap.add_argument("--tokens", type=csv_arg(int), default=[16, 256], help="max_tokens values (default: 16,256)")
    ap.add_argument("--completions", type=positive, default=200, help="completions counted per case (default: 200)")
    ap.add_argument("--concurrency", type=positive, default=1, help="completions in flight (default: 1)")
    ap.add_argument("--idle-seconds", type=seconds, default=6.0,
                    help="shortest idle period for the background rate (default: 6; at least the batch's duration)")
    ap.add_argument("--top", type=positive, default=8, help="commands listed per case (default: 8)")
    args, binary = parse_node_args(ap)

    nodes = Nodes(binary, args.redis_url, logprefix="bench-redis-commands-")
    counter = None
    rows = []
    names = script_names()
    try:
        counter = Counter(args.redis_url)
        moved = scripts_counted_in_total(counter)
        print(f"bench-redis-commands: an EVAL with 3 redis.call inside moved total_commands_processed by {moved} "
              f"({'it counts script-internal calls' if moved == 4 else 'it counts the EVAL only' if moved == 1 else 'unexpected'}); "
              f"commandstats counts them too", flush=True)
        for path in args.paths:
            port = start_path(nodes, path)
            for tokens in args.tokens:
                seed, results, batch, idle = measure(counter, port, tokens, args.completions, args.concurrency,
                                                     args.idle_seconds)
                n = len(results)
                calls = per_completion(batch, idle, "calls", n)
                sent = per_completion(batch, idle, "sent", n)
                lua = per_completion(batch, idle, "lua", n)
                scripts = {names.get(sha, sha[:12]): v for sha, v in per_completion(batch, idle, "scripts", n).items()}
                incl = sum(calls.values())
                idle_total = idle["total"] / idle["seconds"]
                monitor_total = sum(sent.values()) + sum(lua.values())
                finishes = sorted({f for f, _ in results})
                rows.append({"path": path, "tokens": tokens, "seed": seed, "finish": ",".join(finishes),
                             "mean_tokens": sum(t for _, t in results) / n,
                             "sent": sum(sent.values()), "incl": incl,
                             "total": (batch["total"] - idle_total * batch["seconds"]) / n,
                             "idle_rate": idle_total, "calls": calls, "sent_by_name": sent, "lua_by_name": lua,
                             "monitor_total": monitor_total,
                             "scripts_by_name": scripts,
                             "idle_by_name": {k: v / idle["seconds"] for k, v in idle["calls"].items()},
                             "mismatch": abs(monitor_total - incl) > max(0.02 * incl, 0.5)})
                print(f"  {path} max_tokens {tokens}: {n} completions in {batch['seconds']:.2f} s "
                      f"(idle period {idle['seconds']:.2f} s)", flush=True)
            nodes.stop_all()
    except BenchError as e:
        sys.exit(f"bench-redis-commands: {e}")
    except KeyboardInterrupt:
        sys.exit("bench-redis-commands: interrupted")
    finally:
        nodes.stop_all()
        if counter:
            counter.close()
    shutil.rmtree(nodes.logdir, ignore_errors=True)  # the nodes' logs are kept only when something failed
    print()
    print(f"per completion ({args.completions} completions, concurrency {args.concurrency}, background subtracted):")
    print("  sent = commands the nodes sent (MONITOR; an EVALSHA is one); incl_scripts = commands Redis ran, "
          "redis.call inside scripts included (commandstats); total_cmds = INFO total_commands_processed delta "
          "(also includes script-internal calls)")
    report(rows, args.top)


if __name__ == "__main__":
    main()
