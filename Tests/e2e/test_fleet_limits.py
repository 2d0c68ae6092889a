"""Per-user limits across several nodes sharing one Redis (the fleet), quota overrides from the
admin CLI, and what happens while Redis is down."""
import json
import os
import socket
import subprocess
import time
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from conftest import BINARY, ROOT, free_port, make_key, post


def admin(*args, env=None):
    return subprocess.run([BINARY, "admin", *args], capture_output=True, text=True, cwd=ROOT, timeout=30,
                          env=dict(os.environ, **(env or {})))


@pytest.fixture
def redis_url():
    url = os.environ.get("REDIS_URL")
    assert url, "REDIS_URL is not set: run the tests through scripts/test.sh, which starts Redis"
    return url


def fleet(make_node, redis_url, n, *flags):
    """n serve nodes that form one fleet (one queue: a job may run on any of them)."""
    name = "f" + uuid.uuid4().hex[:10]
    nodes = [make_node("--redis-url", redis_url, "--fleet", name, *flags) for _ in range(n)]
    for node in nodes:
        node.fleet = name
    return nodes


def test_window_holds_across_three_nodes(make_node, redis_url):
    nodes = fleet(make_node, redis_url, 3, "--rate-limit-rpm", "60", "--max-concurrent", "1000",
                  "--model-ttft-ms", "0", "--model-token-ms", "0")
    key = make_key("fleet-win-" + uuid.uuid4().hex[:6])
    with ThreadPoolExecutor(30) as pool:
        codes = list(pool.map(lambda i: post(nodes[i % 3].url, key, {"prompt": "The cat", "max_tokens": 1})[0], range(120)))
    assert codes.count(200) == 60 and codes.count(429) == 60, codes


def test_two_at_once_across_nodes_and_leases_freed(make_node, redis_url):
    nodes = fleet(make_node, redis_url, 3, "--rate-limit-rpm", "1000", "--max-concurrent", "2",
                  "--model-ttft-ms", "100", "--model-token-ms", "20")
    key = make_key("fleet-conc-" + uuid.uuid4().hex[:6])
    with ThreadPoolExecutor(50) as pool:
        results = list(pool.map(lambda i: post(nodes[i % 3].url, key, {"prompt": "The sea", "max_tokens": 10}), range(50)))
    codes = [r[0] for r in results]
    assert codes.count(200) == 2 and codes.count(429) == 48, codes
    time.sleep(0.3)
    # Both finished: their leases are free on every node.
    for n in nodes:
        assert post(n.url, key, {"prompt": "x", "max_tokens": 1})[0] == 200
    out = admin("status", "--fleet", nodes[0].fleet, env={"REDIS_URL": redis_url})
    assert out.returncode == 0 and " live nodes" in out.stdout, out.stderr
    live = int(out.stdout.split(" live nodes")[0].split()[-1])
    assert live == 3, out.stdout
    assert "jobs: backlog 0, pending 0, dead-lettered 0" in out.stdout, out.stdout


def test_quota_override_applies_on_the_next_request_everywhere(make_node, redis_url):
    nodes = fleet(make_node, redis_url, 2, "--rate-limit-rpm", "100", "--max-concurrent", "10",
                  "--model-ttft-ms", "0", "--model-token-ms", "0")
    user = "fleet-quota-" + uuid.uuid4().hex[:6]
    key = make_key(user)
    assert post(nodes[0].url, key, {"prompt": "x", "max_tokens": 1})[0] == 200
    out = admin("quota", "set", "--user", user, "--rpm", "2", "--ttl", "1h", env={"REDIS_URL": redis_url})
    assert out.returncode == 0 and "rpm 2" in out.stdout, out.stderr
    assert post(nodes[1].url, key, {"prompt": "x", "max_tokens": 1})[0] == 200  # the 2nd in the window
    status, body = post(nodes[0].url, key, {"prompt": "x", "max_tokens": 1})
    assert status == 429 and body["error"]["code"] == "rate_limit_exceeded", body
    listed = admin("quota", "list", env={"REDIS_URL": redis_url})
    assert user in listed.stdout
    assert admin("quota", "clear", "--user", user, env={"REDIS_URL": redis_url}).returncode == 0
    assert post(nodes[1].url, key, {"prompt": "x", "max_tokens": 1})[0] == 200, "back to the node default (100)"
    bad = admin("quota", "set", "--user", user, env={"REDIS_URL": redis_url})
    assert bad.returncode == 2 and "--rpm" in bad.stderr



def test_redis_down_serve_nodes_keep_completing_under_their_share(make_node, tmp_path):
    port = free_port()
    def start_redis():
        subprocess.run(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--daemonize", "yes", "--save", "",
                        "--appendonly", "no", "--dir", str(tmp_path), "--pidfile", str(tmp_path / "r.pid")], check=True)
        for _ in range(100):
            if subprocess.run(["redis-cli", "-p", str(port), "ping"], capture_output=True, text=True).stdout.strip() == "PONG":
                return
            time.sleep(0.05)
        raise AssertionError("redis did not start")
    start_redis()
    url = f"redis://127.0.0.1:{port}/0"
    try:
        nodes = fleet(make_node, url, 2, "--rate-limit-rpm", "10", "--max-concurrent", "100",
                      "--model-ttft-ms", "0", "--model-token-ms", "0")
        time.sleep(2.5)  # a heartbeat round after both beat: each node has seen the other
        key = make_key("fleet-down-" + uuid.uuid4().hex[:6])
        assert post(nodes[0].url, key, {"prompt": "x", "max_tokens": 1})[0] == 200
        subprocess.run(["redis-cli", "-p", str(port), "shutdown", "nosave"], capture_output=True)
        time.sleep(0.3)
        # Nodes never hang; each admits up to its share (10 / 2 live nodes = 5 a minute).
        start = time.monotonic()
        codes = [post(nodes[0].url, key, {"prompt": "x", "max_tokens": 1})[0] for _ in range(8)]
        assert time.monotonic() - start < 5, "no request waited on the dead Redis"
        assert codes.count(200) == 5 and codes.count(429) == 3, codes
        ready = json.loads(urllib.request.urlopen(nodes[0].url + "/readyz", timeout=5).read())
        assert ready["status"] == "degraded", ready
        # Redis returns: everything recovers by itself.
        start_redis()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if json.loads(urllib.request.urlopen(nodes[0].url + "/readyz", timeout=5).read())["status"] == "ready":
                break
            time.sleep(0.2)
        else:
            raise AssertionError("/readyz did not recover")
        fresh = make_key("fleet-back-" + uuid.uuid4().hex[:6])
        codes = [post(nodes[i % 2].url, fresh, {"prompt": "x", "max_tokens": 1})[0] for i in range(12)]
        assert codes.count(200) == 10, f"the fleet-wide limit is back: {codes}"
    finally:
        subprocess.run(["redis-cli", "-p", str(port), "shutdown", "nosave"], capture_output=True)


def redis_cli(url, *args):
    port = url.rsplit(":", 1)[1].split("/")[0]
    return subprocess.run(["redis-cli", "-p", port, *args], capture_output=True, text=True, timeout=10).stdout.strip()


def test_aborted_streams_leave_no_lease(make_node, redis_url):
    import asyncio
    import websockets
    n = make_node("--redis-url", redis_url, "--rate-limit-rpm", "100000", "--max-concurrent", "2000",
                  "--model-ttft-ms", "50", "--model-token-ms", "50", "--slots", "2000", "--max-queue", "2000")
    user = "fleet-abort-" + uuid.uuid4().hex[:6]
    key = make_key(user)

    async def one_socket(k, cancel):
        async with websockets.connect(n.ws_url, additional_headers={"Authorization": f"Bearer {key}"}) as ws:
            ids = []
            for i in range(k):
                await ws.send(json.dumps({"id": i, "method": "POST", "path": "/v1/completions",
                                          "body": {"prompt": "The sea", "max_tokens": 500}}))
            while len(ids) < k:
                m = json.loads(await asyncio.wait_for(ws.recv(), 20))
                if m["type"] == "accepted":
                    ids.append(m["request_id"])
                elif m["type"] == "error":
                    raise AssertionError(m)
            if cancel:
                for rid in ids:
                    await ws.send(json.dumps({"id": "c", "method": "POST", "path": f"/v1/completions/{rid}/cancel"}))
                await asyncio.sleep(0.3)
            # else: the socket just goes away with its generations running

    async def go():
        await asyncio.gather(*(one_socket(50, cancel=i % 2 == 0) for i in range(20)))  # 1,000 streams
    asyncio.run(go())
    key_name = "{u:" + user + "}:lease"
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and redis_cli(redis_url, "ZCARD", key_name) != "0":
        time.sleep(0.1)
    assert redis_cli(redis_url, "ZCARD", key_name) == "0", "every lease was released"


def test_redis_restart_and_script_flush_under_load(make_node, tmp_path):
    import threading
    port = free_port()
    args = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--daemonize", "yes", "--save", "",
            "--appendonly", "no", "--dir", str(tmp_path), "--pidfile", str(tmp_path / "r.pid")]
    def up():
        subprocess.run(args, check=True)
        for _ in range(100):
            if subprocess.run(["redis-cli", "-p", str(port), "ping"], capture_output=True, text=True).stdout.strip() == "PONG":
                return
            time.sleep(0.05)
    up()
    url = f"redis://127.0.0.1:{port}/0"
    try:
        nodes = fleet(make_node, url, 2, "--rate-limit-rpm", "100000", "--max-concurrent", "1000",
                      "--model-ttft-ms", "0", "--model-token-ms", "0")
        key = make_key("fleet-chaos-" + uuid.uuid4().hex[:6])
        codes, stop = [], threading.Event()

        def load(i):
            while not stop.is_set():
                start = time.monotonic()
                status, _ = post(nodes[i % 2].url, key, {"prompt": "x", "max_tokens": 1}, timeout=10)
                codes.append((status, time.monotonic() - start))
        threads = [threading.Thread(target=load, args=(i,)) for i in range(6)]
        for t in threads:
            t.start()
        time.sleep(0.5)
        subprocess.run(["redis-cli", "-p", str(port), "SCRIPT", "FLUSH"], capture_output=True)
        time.sleep(0.5)
        subprocess.run(["redis-cli", "-p", str(port), "shutdown", "nosave"], capture_output=True)
        time.sleep(0.5)
        up()
        time.sleep(1.5)
        stop.set()
        for t in threads:
            t.join(15)
        statuses = [c for c, _ in codes]
        assert len(statuses) > 100, len(statuses)
        # The documented policy: served (the fallback while Redis is gone), never a 5xx, never a hang.
        assert set(statuses) <= {200}, sorted(set(statuses))
        assert max(d for _, d in codes) < 2, "no request waited on Redis"
        ready = json.loads(urllib.request.urlopen(nodes[0].url + "/readyz", timeout=5).read())
        assert ready["status"] == "ready", ready
    finally:
        subprocess.run(["redis-cli", "-p", str(port), "shutdown", "nosave"], capture_output=True)


def test_admin_and_node_fail_clearly_on_redis_problems(redis_url):
    dead = admin("status", env={"REDIS_URL": "redis://127.0.0.1:1/0"})
    assert dead.returncode == 1 and "cannot reach Redis" in dead.stderr, (dead.returncode, dead.stderr)
    # A Redis error reply is an error, not a success: the override key holds another type.
    user = "fleet-wrongtype-" + uuid.uuid4().hex[:6]
    redis_cli(redis_url, "SET", "{u:" + user + "}:quota", "not-a-hash")
    out = admin("quota", "set", "--user", user, "--rpm", "5", env={"REDIS_URL": redis_url})
    assert out.returncode == 1 and "WRONGTYPE" in out.stderr, (out.returncode, out.stderr)
    redis_cli(redis_url, "DEL", "{u:" + user + "}:quota")
    for args, code, says in [(["--redis-url", "http://x"], 2, "--redis-url"),
                             (["--redis-url", redis_url, "--lua-dir", "/nonexistent"], 1, "cannot read /nonexistent/"),
                             (["--redis-url", redis_url, "--fleet", "a b"], 2, "--fleet")]:
        out = subprocess.run([BINARY, "serve", "--port", "0", "--auth", "off", *args], capture_output=True, text=True,
                             cwd=ROOT, timeout=20)
        assert out.returncode == code and says in out.stderr, (args, out.returncode, out.stderr[-300:])
