"""The fleet on a Redis Cluster (3 masters, 3 replicas, started here by scripts/redis-cluster.sh):
the fleet-limit tests pass on it as on one Redis, and a master SIGKILLed under steady load — two
gateways, two workers — fails over with at least 99 % of completions succeeding, the rest
refused with documented retryable errors, and the limits exact again afterwards."""
import os
import random
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

import test_fleet_limits
from conftest import ROOT, make_key, post

SCRIPT = os.path.join(ROOT, "scripts", "redis-cluster.sh")


class Cluster:
    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="e2e-cluster-")
        # Ports and their bus ports (+10000) below the ephemeral range (32768).
        self.base = 20000 + random.randrange(450) * 6
        out = subprocess.run([SCRIPT, "start", self.dir, str(self.base)], capture_output=True, text=True,
                             timeout=60, stdin=subprocess.DEVNULL)
        if out.returncode != 0:
            self.stop()
            raise RuntimeError(f"the cluster did not start: {out.stderr}")
        self.url = out.stdout.strip()
        assert self.url.startswith("redis-cluster://127.0.0.1:"), self.url

    def cli(self, port, *args):
        return subprocess.run(["redis-cli", "-p", str(port), *args], capture_output=True, text=True, timeout=10).stdout.strip()

    def master_of(self, key):
        """The port of the master serving key's slot, from CLUSTER SHARDS-like CLUSTER NODES output."""
        slot = int(self.cli(self.base, "CLUSTER", "KEYSLOT", key))
        for port in range(self.base, self.base + 6):
            for line in self.cli(port, "CLUSTER", "NODES").splitlines():
                parts = line.split()
                if "master" not in parts[2] or "fail" in parts[2]:
                    continue
                for r in parts[8:]:
                    lo, _, hi = r.partition("-")
                    if lo.isdigit() and int(lo) <= slot <= int(hi or lo):
                        return int(parts[1].split(":")[1].split("@")[0])
        raise AssertionError(f"no master serves slot {slot}")

    def pid(self, port):
        with open(os.path.join(self.dir, str(port), "redis.pid")) as f:
            return int(f.read().strip())

    def stop(self):
        subprocess.run([SCRIPT, "stop", self.dir], capture_output=True, timeout=60, stdin=subprocess.DEVNULL)
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def cluster():
    c = Cluster()
    yield c
    c.stop()


def test_window_holds_across_three_nodes_on_a_cluster(make_node, cluster):
    test_fleet_limits.test_window_holds_across_three_nodes(make_node, cluster.url)


def test_two_at_once_across_nodes_on_a_cluster(make_node, cluster):
    test_fleet_limits.test_two_at_once_across_nodes_and_leases_freed(make_node, cluster.url)


def test_quota_override_on_a_cluster(make_node, cluster):
    test_fleet_limits.test_quota_override_applies_on_the_next_request_everywhere(make_node, cluster.url)


RETRYABLE = {"server_busy", "generation_interrupted", "upstream_unavailable", "timeout"}


def test_master_killed_under_load(make_node, cluster):
    fleet = "f" + uuid.uuid4().hex[:10]
    flags = ["--redis-url", cluster.url, "--fleet", fleet, "--job-shards", "6",
             "--model-ttft-ms", "20", "--model-token-ms", "5", "--model-jitter", "0"]
    gateways = [make_node(*flags, command="gateway") for _ in range(2)]
    workers = [make_node(*flags, command="worker") for _ in range(2)]
    assert workers
    users = [make_key(f"cl-{uuid.uuid4().hex[:6]}-{i}") for i in range(12)]
    # Every gateway answers before the load starts (workers seen, links up).
    for g in gateways:
        deadline = time.time() + 10
        while post(g.url, users[0], {"prompt": "x", "max_tokens": 1})[0] != 200:
            assert time.time() < deadline, "the fleet never served"
            time.sleep(0.1)

    outcomes, lock, stop = [], threading.Lock(), threading.Event()

    def client(i):
        n = 0
        while not stop.is_set():
            g = gateways[(i + n) % 2]
            key = users[(i * 7 + n) % len(users)]
            t0 = time.time()
            try:
                status, body = post(g.url, key, {"prompt": "The river", "max_tokens": 8}, timeout=15)
                code = body.get("error", {}).get("code") if status != 200 else None
                ok = status == 200 and body["choices"][0]["finish_reason"] in ("length", "stop") and body["choices"][0]["text"]
            except Exception as e:  # a hang or a dropped connection counts as a failure
                status, code, ok = 0, type(e).__name__, False
            with lock:
                outcomes.append((t0, bool(ok), status, code))
            n += 1

    # The master of the fleet's own slot: heartbeats, the shard count and some job shards die with it.
    victim = cluster.master_of("{fleet:%s}:nodes" % fleet)
    threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    time.sleep(4)
    killed_at = time.time()
    os.kill(cluster.pid(victim), signal.SIGKILL)
    time.sleep(10)
    stop.set()
    for t in threads:
        t.join(timeout=30)
    assert not any(t.is_alive() for t in threads), "a request hung"

    total = len(outcomes)
    failures = [o for o in outcomes if not o[1]]
    during = [o for o in outcomes if killed_at <= o[0] < killed_at + 5]
    print(f"failover under load: {total} completions, {total - len(failures)} ok, {len(failures)} failed "
          f"({sorted(set((f[2], f[3]) for f in failures))}); {len(during)} started in the 5 s after the kill")
    assert total > 200, total
    assert len(during) > 50, "load went on through the failover"
    assert (total - len(failures)) / total >= 0.99, failures[:10]
    assert all(f[3] in RETRYABLE for f in failures), failures[:10]

    # The replica took over; the limits are exact again: 120 requests across both gateways, 60 pass.
    new_master = cluster.master_of("{fleet:%s}:nodes" % fleet)
    assert new_master != victim
    limited = [make_node(*flags, "--rate-limit-rpm", "60", command="gateway") for _ in range(2)]
    key = make_key("cl-after-" + uuid.uuid4().hex[:6])
    with ThreadPoolExecutor(20) as pool:
        codes = list(pool.map(lambda i: post(limited[i % 2].url, key, {"prompt": "x", "max_tokens": 1})[0], range(120)))
    assert codes.count(200) == 60 and codes.count(429) == 60, codes
