#!/usr/bin/env python3
"""The 100k-stream proof on one machine (issue 20): a fleet on loopback — Redis, gateways,
workers, several haproxy processes in front (one process holds at most 20,000 descriptors here,
and haproxy needs two per client) — and `playground bench-streams` client processes holding
--connections WebSockets, --streaming of them streaming completions from the workers' built-in
model at a realistic pace. Measures, over --duration seconds of steady load: RSS per connection of
each kind of process, time to first token and inter-token gap (p50/p99), completions/s and Redis
commands/s. Then restarts one gateway under that load (SIGTERM: it drains, its clients reconnect
through haproxy and resume their streams by request_id) and measures the same again, with the
errors, reconnects and resumes it caused. Bounded in time, loopback only; stops everything it
started when it ends or is interrupted.

    scripts/bench-100k.py [--connections 100000] [--streaming 5000] [--duration 60] …
"""
import argparse
import atexit
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BINARY = os.path.join(ROOT, ".build", "release", "playground")
started = []


def stop_all():
    for p in reversed(started):
        if p.poll() is None:
            try:
                p.terminate()
            except ProcessLookupError:
                pass
    deadline = time.time() + 15
    for p in reversed(started):
        try:
            p.wait(timeout=max(0.1, deadline - time.time()))
        except subprocess.TimeoutExpired:
            p.kill()


def on_signal(sig, _frame):
    stop_all()
    sys.exit(128 + sig)


def spawn(args, **kw):
    p = subprocess.Popen(args, **kw)
    started.append(p)
    return p


def rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def metric(port, name):
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


def cpu_s(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def redis_calls(port):
    out = subprocess.run(["redis-cli", "-p", str(port), "INFO", "commandstats"], capture_output=True, text=True).stdout
    return sum(int(m) for m in re.findall(r"calls=(\d+)", out))


class Hist:
    """Merges the clients' sparse histograms (µs: "max,value:count,…")."""

    def __init__(self):
        self.counts = {}

    def merge(self, sparse):
        parts = sparse.split(",")
        for p in parts[1:]:
            k, _, c = p.partition(":")
            if k and c:
                self.counts[int(k)] = self.counts.get(int(k), 0) + int(c)

    def pct(self, p):
        total = sum(self.counts.values())
        if total == 0:
            return float("nan")
        rank, seen = max(1, int(total * p + 0.999999)), 0
        for k in sorted(self.counts):
            seen += self.counts[k]
            if seen >= rank:
                return k / 1000.0
        return float("nan")

    def n(self):
        return sum(self.counts.values())


def start_gateway(args, i, port, redis_url, logdir):
    return spawn([BINARY, "gateway", "--host", "127.0.0.1", "--port", str(port), "--loops", "1", "--redis-url", redis_url,
                  "--fleet", "b100k", "--auth", "off", "--rate-limit-rpm", "0", "--max-concurrent", "0",
                  "--drain-seconds", str(args.drain_seconds), "--log-level", "warning", "--max-queue", "100000"],
                 stdout=subprocess.PIPE, stderr=open(os.path.join(logdir, f"gateway-{i}.log"), "a"), text=True)


def wait_listening(p, what):
    line = p.stdout.readline()
    if "listening on" not in line:
        raise SystemExit(f"bench-100k: {what} did not start: {line!r}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--connections", type=int, default=100000, help="WebSockets open at once (default 100000)")
    ap.add_argument("--streaming", type=int, default=5000, help="of them streaming at once (default 5000)")
    ap.add_argument("--duration", type=float, default=60, help="seconds of steady load measured (default 60)")
    ap.add_argument("--restart-duration", type=float, default=40, help="seconds measured from the gateway restart (default 40)")
    ap.add_argument("--gateways", type=int, default=7)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--balancers", type=int, default=14, help="haproxy processes (each under 20,000 descriptors)")
    ap.add_argument("--clients", type=int, default=7, help="bench-streams processes")
    ap.add_argument("--ttft-ms", type=int, default=300, help="the built-in model's time to first token (default 300)")
    ap.add_argument("--token-ms", type=int, default=250,
                    help="the built-in model's time per token (default 250: 4 tokens/s; 100 saturates 2 cores)")
    ap.add_argument("--max-tokens", type=int, default=30)
    ap.add_argument("--drain-seconds", type=int, default=15, help="a gateway's drain: longer than the longest stream")
    ap.add_argument("--base-port", type=int, default=24000)
    args = ap.parse_args()
    for name in ("connections", "streaming", "gateways", "workers", "balancers", "clients", "max_tokens"):
        if getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.streaming > args.connections:
        ap.error("--streaming cannot exceed --connections")
    per_client = -(-args.connections // args.clients)
    if per_client >= 19000:
        ap.error(f"{per_client} connections per client process: raise --clients")
    if -(-args.connections // args.balancers) > 9000:
        ap.error("more than 9,000 connections per haproxy: raise --balancers")
    if not os.path.exists(BINARY):
        raise SystemExit(f"bench-100k: {BINARY} is missing: swift build -c release --product playground")
    for tool in ("haproxy", "redis-server", "redis-cli"):
        if not shutil.which(tool):
            raise SystemExit(f"bench-100k: {tool} is not installed (scripts/install-deps.sh)")

    atexit.register(stop_all)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    work = tempfile.mkdtemp(prefix="bench-100k-")
    atexit.register(lambda: shutil.rmtree(work, ignore_errors=True))
    base = args.base_port
    redis_port = base
    spawn(["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
           "--dir", work, "--maxclients", "10000"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(100):
        if subprocess.run(["redis-cli", "-p", str(redis_port), "ping"], capture_output=True, text=True).stdout.strip() == "PONG":
            break
        time.sleep(0.05)
    redis_url = f"redis://127.0.0.1:{redis_port}/0"

    gw_ports = [base + 10 + i for i in range(args.gateways)]
    gateways = [start_gateway(args, i, p, redis_url, work) for i, p in enumerate(gw_ports)]
    for g in gateways:
        wait_listening(g, "a gateway")
    slots = -(-args.streaming // args.workers) + 200
    workers = []
    for i in range(args.workers):
        w = spawn([BINARY, "worker", "--host", "127.0.0.1", "--port", str(base + 100 + i), "--loops", "1", "--redis-url", redis_url,
                   "--fleet", "b100k", "--slots", str(slots), "--model-ttft-ms", str(args.ttft_ms),
                   "--model-token-ms", str(args.token_ms), "--model-jitter", "0.2", "--log-level", "warning"],
                  stdout=subprocess.PIPE, stderr=open(os.path.join(work, f"worker-{i}.log"), "w"), text=True)
        wait_listening(w, "a worker")
        workers.append(w)

    lb_ports = [base + 200 + i for i in range(args.balancers)]
    servers = "".join(f"    server g{i} 127.0.0.1:{p} check inter 1s fall 2 rise 2\n" for i, p in enumerate(gw_ports))
    balancers = []
    for i, port in enumerate(lb_ports):
        cfg = os.path.join(work, f"haproxy-{i}.cfg")
        with open(cfg, "w") as f:
            f.write(f"""global
    maxconn 9400
defaults
    mode http
    retries 3
    option redispatch
    retry-on conn-failure empty-response
    timeout connect 2s
    timeout http-request 10s
    timeout client 75s
    timeout server 75s
    timeout tunnel 1h
    timeout client-fin 5s
frontend f
    bind 127.0.0.1:{port}
    default_backend gateways
backend gateways
    balance leastconn
    # Its own source address: 100k connections to the gateways never run out of ports.
    source 127.0.1.{i + 1}
    option httpchk GET /readyz
    http-check expect status 200
{servers}""")
        balancers.append(spawn(["haproxy", "-db", "-f", cfg], stdout=subprocess.DEVNULL, stderr=open(os.path.join(work, f"haproxy-{i}.log"), "w")))
    time.sleep(2.5)  # health checks: every gateway up in every balancer

    def rss(ps):
        return sum(rss_kib(p.pid) for p in ps)

    before = {"gateways": rss(gateways), "workers": rss(workers), "haproxy": rss(balancers)}
    targets = ",".join(f"127.0.0.1:{p}" for p in lb_ports)
    clients = []
    t0 = time.time()
    for i in range(args.clients):
        idle = args.connections // args.clients + (1 if i < args.connections % args.clients else 0)
        active = args.streaming // args.clients + (1 if i < args.streaming % args.clients else 0)
        c = spawn([BINARY, "bench-streams", "--targets", targets, "--source", f"127.0.0.{2 + i}", "--idle", str(idle - active),
                   "--active", str(active), "--max-tokens", str(args.max_tokens), "--name", f"c{i}"],
                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=open(os.path.join(work, f"client-{i}.log"), "w"),
                  text=True, bufsize=1)
        clients.append(c)
    opened = failed = 0
    for c in clients:
        line = c.stdout.readline().split()
        if not line or line[0] != "connected":
            raise SystemExit(f"bench-100k: a client process failed: {line}")
        opened, failed = opened + int(line[1]), failed + int(line[2])
    connect_s = time.time() - t0
    time.sleep(1)
    loaded = {"gateways": rss(gateways), "workers": rss(workers), "haproxy": rss(balancers)}
    per_gw = [metric(p, "playground_ws_connections") for p in gw_ports]
    print(f"bench-100k: {opened} WebSockets open ({failed} connect attempts retried) in {connect_s:.1f} s through "
          f"{args.balancers} haproxy to {args.gateways} gateways {[int(x or 0) for x in per_gw]}; {args.workers} workers; "
          f"{args.clients} client processes", flush=True)
    for kind in ("gateways", "haproxy"):
        print(f"  RSS {kind}: {before[kind] / 1024:.0f} → {loaded[kind] / 1024:.0f} MiB = "
              f"{(loaded[kind] - before[kind]) * 1024 / max(opened, 1):.0f} B per connection", flush=True)
    print(f"  RSS clients: {rss(clients) / 1024:.0f} MiB = {rss(clients) * 1024 / max(opened, 1):.0f} B per connection", flush=True)

    def send(cmd):
        for c in clients:
            c.stdin.write(cmd + "\n")
            c.stdin.flush()

    def collect():
        send("stats")
        out = {"open": 0, "completions": 0, "tokens": 0, "reconnects": 0, "resumed": 0, "retried": 0, "errors": {},
               "ttft": Hist(), "gap": Hist(), "resume_gap": Hist()}
        for c in clients:
            parts = c.stdout.readline().split()
            assert parts and parts[0] == "stats", parts
            out["open"] += int(parts[1])
            out["completions"] += int(parts[2])
            out["tokens"] += int(parts[3])
            out["reconnects"] += int(parts[4])
            out["resumed"] += int(parts[5])
            out["retried"] += int(parts[6])
            if parts[7] != "-":
                for kv in parts[7].split(","):
                    k, _, v = kv.partition("=")
                    out["errors"][k] = out["errors"].get(k, 0) + int(v)
            out["ttft"].merge(parts[8])
            out["gap"].merge(parts[9])
            out["resume_gap"].merge(parts[10])
        return out

    def report(label, s, seconds, calls):
        print(f"  {label}: {s['completions']} completions in {seconds:.0f} s = {s['completions'] / seconds:.0f}/s, "
              f"{s['tokens'] / seconds:.0f} tokens/s; TTFT p50 {s['ttft'].pct(0.5):.1f} ms p99 {s['ttft'].pct(0.99):.1f} ms; "
              f"inter-token gap p50 {s['gap'].pct(0.5):.1f} ms p99 {s['gap'].pct(0.99):.1f} ms; "
              f"Redis {calls / seconds:.0f} commands/s ({calls / max(s['completions'], 1):.1f} per completion); "
              f"open {s['open']}, reconnects {s['reconnects']}, resumed by request_id {s['resumed']}, "
              f"refused by a draining gateway and retried elsewhere {s['retried']}, failed {s['errors'] or 0}", flush=True)

    redis_proc = started[0]
    groups = lambda: {"clients": clients, "haproxy": balancers, "gateways": gateways, "workers": workers, "redis": [redis_proc]}

    def cpu():
        return {k: sum(cpu_s(p.pid) for p in ps) for k, ps in groups().items()}

    def report_cpu(before, seconds, tokens):
        after = cpu()
        used = {k: after[k] - before[k] for k in after}
        print("  CPU (cores busy; µs per token): " + ", ".join(
            f"{k} {v / seconds:.2f} ({v * 1e6 / max(tokens, 1):.1f})" for k, v in used.items())
              + f"; all {sum(used.values()) / seconds:.2f} of {os.cpu_count()}", flush=True)

    send("go")
    time.sleep(15)  # warm-up: every stream running, the pace settled
    send("mark")
    c0, t0, cpu0 = redis_calls(redis_port), time.time(), cpu()
    streams_rss0 = {"gateways": rss(gateways), "workers": rss(workers)}
    time.sleep(args.duration)
    steady = collect()
    seconds, calls = time.time() - t0, redis_calls(redis_port) - c0
    active_gens = sum(metric(base + 100 + i, "playground_active_generations") or 0 for i in range(args.workers))
    report(f"steady ({int(active_gens)} generations running on the workers)", steady, seconds, calls)
    report_cpu(cpu0, seconds, steady["tokens"])
    print(f"  RSS while streaming: gateways {rss(gateways) / 1024:.0f} MiB (was {streams_rss0['gateways'] / 1024:.0f} at the start "
          f"of the window), workers {rss(workers) / 1024:.0f} MiB = {(rss(workers) - before['workers']) * 1024 / max(args.streaming, 1):.0f} B "
          f"per running stream", flush=True)

    # A rolling restart of one gateway under that load.
    send("mark")
    c0, t0 = redis_calls(redis_port), time.time()
    victim = 0
    had = int(metric(gw_ports[victim], "playground_ws_connections") or 0)
    gateways[victim].send_signal(signal.SIGTERM)
    gateways[victim].wait(timeout=args.drain_seconds + 30)
    drained_s = time.time() - t0
    gateways[victim] = start_gateway(args, victim, gw_ports[victim], redis_url, work)
    wait_listening(gateways[victim], "the restarted gateway")
    time.sleep(max(0, args.restart_duration - (time.time() - t0)))
    restart = collect()
    seconds, calls = time.time() - t0, redis_calls(redis_port) - c0
    print(f"bench-100k: gateway 0 restarted under load ({had} WebSockets on it; drained and gone in {drained_s:.1f} s, "
          f"then started again)", flush=True)
    report("restart window", restart, seconds, calls)
    if restart["resume_gap"].n():
        print(f"  a resumed stream's wait for its next token: p50 {restart['resume_gap'].pct(0.5):.1f} ms, "
              f"p99 {restart['resume_gap'].pct(0.99):.1f} ms ({restart['resume_gap'].n()} resumes with tokens left)", flush=True)
    print(f"  open at the end: {restart['open']} of {opened}", flush=True)
    send("quit")
    return 0


if __name__ == "__main__":
    sys.exit(main())
