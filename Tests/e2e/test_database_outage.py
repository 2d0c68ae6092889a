"""PostgreSQL going down must not break completions, must not hang presets, and must heal by itself."""
import json
import os
import subprocess
import tempfile
import time
import urllib.request

import openai
import pytest

from conftest import BINARY, ROOT, Node, auth

PORT = int(os.environ.get("PLAYGROUND_OUTAGE_PG_PORT", "5436"))


def pg(cmd, d):
    out = subprocess.run([os.path.join(ROOT, "scripts", "pg.sh"), cmd, d, str(PORT), "--fast"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def api(node, method, path, key, body=None):
    req = urllib.request.Request(node.url + path, method=method, headers={"Content-Type": "application/json", **auth(key)},
                                 data=json.dumps(body).encode() if body is not None else None)
    t0 = time.time()
    try:
        r = urllib.request.urlopen(req, timeout=10)
        return r.status, json.loads(r.read()), time.time() - t0
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read()), time.time() - t0


def test_outage_and_recovery_without_redis():
    """Without Redis (a single node) presets have nothing to fall back on: 503 at once, never a hang."""
    d = tempfile.mkdtemp(prefix="pg-outage-", dir="/tmp")
    url = pg("start", d)
    env = dict(os.environ, DATABASE_URL=url)
    node = None
    try:
        assert subprocess.run([BINARY, "migrate"], env=env, capture_output=True, text=True).returncode == 0
        key = subprocess.run([BINARY, "admin", "keys", "create", "--user", "outage"], env=env,
                             capture_output=True, text=True).stdout.strip()
        old = os.environ["DATABASE_URL"]
        os.environ["DATABASE_URL"] = url
        try:
            node = Node("--model-ttft-ms", "0", "--model-token-ms", "0", redis=False)
        finally:
            os.environ["DATABASE_URL"] = old
        client = openai.OpenAI(base_url=node.url + "/v1", api_key=key, max_retries=0, timeout=10)
        assert client.completions.create(model="builtin", prompt="The sea", max_tokens=3).choices[0].text
        assert api(node, "POST", "/v1/presets", key, {"name": "kept", "prompt": "p"})[0] == 201

        pg("stop", d)
        # Completions go on for a user the node already knows.
        for _ in range(3):
            assert client.completions.create(model="builtin", prompt="The sea", max_tokens=3).choices[0].text
        # Presets say so at once, never hang.
        status, body, took = api(node, "GET", "/v1/presets", key)
        assert status == 503 and body["error"]["code"] == "presets_degraded" and took < 2, (status, body, took)
        # A credential the node has never seen cannot be checked: a clear 503, not a hang.
        status, body, took = api(node, "GET", "/v1/models", "pgk_never_seen_before_key_0000000")
        assert status == 503 and took < 2

        pg("start", d)
        deadline = time.time() + 20
        while time.time() < deadline:
            if api(node, "GET", "/v1/presets", key)[0] == 200:
                break
            time.sleep(0.3)
        status, body, _ = api(node, "GET", "/v1/presets", key)
        assert status == 200 and [p["name"] for p in body["data"]] == ["kept"], "recovered by itself"
    finally:
        if node:
            node.stop()
        pg("stop", d)
