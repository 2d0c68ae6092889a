"""Starts real Playground nodes (the release binary) for the end-to-end tests.

A node that does not start fails the test that needs it: nothing here skips.
"""
import os
import uuid
import re
import subprocess
import time

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BINARY = os.environ.get("PLAYGROUND_BIN", os.path.join(ROOT, ".build", "release", "playground"))


_keys = {}


def make_key(user, org=None):
    """A new API key for `user`, minted with the admin CLI against the test database."""
    args = [BINARY, "admin", "keys", "create", "--user", user] + (["--org", org] if org else [])
    out = subprocess.run(args, capture_output=True, text=True, cwd=ROOT, timeout=30)
    if out.returncode != 0:
        raise RuntimeError(f"admin keys create failed: {out.stderr}")
    return out.stdout.strip()


def key_for(user):
    # Keyed by database too: a test may run a node against a database of its own.
    k = (os.environ.get("DATABASE_URL"), user)
    if k not in _keys:
        _keys[k] = make_key(user)
    return _keys[k]


def request(node, key, method, path, body=None, timeout=30):
    """Any method with a bearer key and an optional JSON body; (status, parsed body) whatever the status."""
    import json
    import urllib.error
    import urllib.request
    req = urllib.request.Request(node.url + path, method=method, data=json.dumps(body).encode() if body is not None else None,
                                 headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def post(url, key, body, path="/v1/completions", timeout=30):
    """POSTs JSON with a bearer key; (status, parsed body) whatever the status."""
    import json
    import urllib.error
    import urllib.request
    req = urllib.request.Request(url + path, method="POST", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json", "Authorization": f"Bearer {key}"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def free_port():
    """A loopback port nobody listens on now."""
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def auth(key):
    return {"Authorization": f"Bearer {key}"}


class Node:
    def __init__(self, *flags, command="serve", redis=True):
        if not os.path.exists(BINARY):
            raise RuntimeError(f"{BINARY} is missing: build it with `swift build -c release`")
        self.log = open(os.path.join(ROOT, "reports", f"e2e-node-{os.getpid()}-{time.time_ns()}.log"), "w")
        # Generous per-user limits unless a test sets its own (later flags win): the suite shares users.
        limits = [] if command not in ("serve", "gateway") else ["--rate-limit-rpm", "100000", "--max-concurrent", "10000"]
        # Each node is a fleet of its own (its own queue on the shared Redis) unless the test
        # joins several into one with --fleet: a job must run on the node the test configured.
        if command in ("serve", "gateway", "worker") and "--fleet" not in flags:
            limits += ["--fleet", "t" + uuid.uuid4().hex[:12]]
        env = dict(os.environ)
        if not redis:
            env.pop("REDIS_URL", None)  # a node on its own: its queue bound is exact and local
        self.proc = subprocess.Popen(
            [BINARY, command, "--host", "127.0.0.1", "--port", "0", "--log-level", "warning", *limits, *flags],
            stdout=subprocess.PIPE, stderr=self.log, text=True, cwd=ROOT, env=env)
        line = self.proc.stdout.readline()
        m = re.match(r"listening on http://([\d.]+):(\d+)", line or "")
        if not m:
            self.stop()
            raise RuntimeError(f"node did not start: {line!r}")
        self.host, self.port = m.group(1), int(m.group(2))
        self.url = f"http://{self.host}:{self.port}"
        self.ws_url = f"ws://{self.host}:{self.port}/v1/ws"
        self.key = key_for("alice")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log.close()
        # A node that crashed at any point fails the run, even if every request before it passed.
        with open(self.log.name, errors="replace") as f:
            crash = [l for l in f if "Fatal error" in l or "Program crashed" in l]
        if crash:
            raise AssertionError(f"node crashed ({self.log.name}): {crash[:2]}")


def _node(*flags, command="serve", redis=True):
    os.makedirs(os.path.join(ROOT, "reports"), exist_ok=True)
    if not os.environ.get("DATABASE_URL"):
        raise RuntimeError("DATABASE_URL is not set: run the tests through scripts/test.sh, which starts PostgreSQL")
    return Node(*flags, command=command, redis=redis)


@pytest.fixture(scope="session")
def node():
    """A node with a quick but visible pace: 20 ms to the first token, 5 ms per token."""
    n = _node("--model-ttft-ms", "20", "--model-token-ms", "5", "--model-jitter", "0")
    yield n
    n.stop()


@pytest.fixture(scope="session")
def slow_node():
    """A node paced like a real model, for streams a person (or a test) can watch and stop."""
    n = _node("--model-ttft-ms", "100", "--model-token-ms", "40")
    yield n
    n.stop()


@pytest.fixture(scope="session")
def tiny_node():
    """One worker slot and a queue of one, so a third concurrent request is refused (a node without
    Redis: the fleet's backlog bound is tested in test_fleet.py)."""
    n = _node("--slots", "1", "--max-queue", "1", "--model-ttft-ms", "50", "--model-token-ms", "50", redis=False)
    yield n
    n.stop()


@pytest.fixture
def make_node():
    started = []

    def make(*flags, command="serve", redis=True):
        n = _node(*flags, command=command, redis=redis)
        started.append(n)
        return n
    yield make
    for n in started:
        n.stop()
