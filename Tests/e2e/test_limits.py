"""Per-user limits on one node: an exact sliding window and concurrent generations, over every
transport, with OpenAI's rate-limit headers and errors the SDK understands."""
import asyncio
import json
import time
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest
import websockets

from conftest import make_key


def post(node, key, body, timeout=30):
    req = urllib.request.Request(node.url + "/v1/completions", method="POST", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json", "Authorization": f"Bearer {key}"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read()), r.headers
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read()), e.headers


def test_exactly_the_window_is_admitted_and_refusals_say_when(make_node):
    n = make_node("--rate-limit-rpm", "60", "--max-concurrent", "1000", "--model-ttft-ms", "0", "--model-token-ms", "0")
    key = make_key("window-" + uuid.uuid4().hex[:6])
    with ThreadPoolExecutor(24) as pool:
        results = list(pool.map(lambda i: post(n, key, {"prompt": "The cat", "max_tokens": 1}), range(120)))
    codes = [r[0] for r in results]
    assert codes.count(200) == 60 and codes.count(429) == 60, codes
    refused = [r for r in results if r[0] == 429]
    for status, body, headers in refused:
        assert body["error"]["code"] == "rate_limit_exceeded"
        assert 0 < body["error"]["retry_after_ms"] <= 60_000
        assert int(headers["Retry-After"]) >= 1
        assert headers["x-ratelimit-limit-requests"] == "60" and headers["x-ratelimit-remaining-requests"] == "0"
    ok = [r for r in results if r[0] == 200]
    remaining = sorted(int(h["x-ratelimit-remaining-requests"]) for _, _, h in ok)
    assert remaining == list(range(60)), "each admission counted once"
    # The SDK sees a RateLimitError.
    client = openai.OpenAI(base_url=n.url + "/v1", api_key=key, max_retries=0)
    with pytest.raises(openai.RateLimitError) as e:
        client.completions.create(model="builtin", prompt="x", max_tokens=1)
    assert e.value.body["code"] == "rate_limit_exceeded"


def test_two_concurrent_generations_per_user_across_transports(make_node):
    n = make_node("--rate-limit-rpm", "1000", "--max-concurrent", "2", "--model-ttft-ms", "50", "--model-token-ms", "30")
    key = make_key("conc-" + uuid.uuid4().hex[:6])
    other = make_key("conc-other-" + uuid.uuid4().hex[:6])
    with ThreadPoolExecutor(50) as pool:
        results = list(pool.map(lambda i: post(n, key, {"prompt": "The sea", "max_tokens": 20}), range(50)))
    codes = [r[0] for r in results]
    assert codes.count(200) == 2 and codes.count(429) == 48, codes
    assert all(r[1]["error"]["code"] == "concurrent_generations_limit_exceeded" for r in results if r[0] == 429)

    async def ws_case():
        h = {"Authorization": f"Bearer {key}"}
        async with websockets.connect(n.ws_url, additional_headers=h) as ws:
            for i in range(3):
                await ws.send(json.dumps({"id": i, "method": "POST", "path": "/v1/completions",
                                          "body": {"prompt": "The sea", "max_tokens": 200, "seed": 2, "temperature": 0.9}}))
            first = {}
            while len(first) < 3:
                m = json.loads(await asyncio.wait_for(ws.recv(), 10))
                first.setdefault(m["id"], m)
            kinds = sorted(m["type"] for m in first.values())
            assert kinds == ["accepted", "accepted", "error"], first
            refused = [m for m in first.values() if m["type"] == "error"][0]
            assert refused["error"]["code"] == "concurrent_generations_limit_exceeded" and refused["status"] == 429
            # A REST request of the same user, meanwhile, is refused too (limits are per user).
            status, body, _ = post(n, key, {"prompt": "x", "max_tokens": 1})
            assert status == 429, body
            # Another user is not affected.
            assert post(n, other, {"prompt": "x", "max_tokens": 1})[0] == 200
            # Stop one: its lease is free at once, and a new generation is admitted.
            running = [m["id"] for m in first.values() if m["type"] == "accepted"]
            await ws.send(json.dumps({"id": "c", "method": "POST",
                                      "path": f"/v1/completions/{first[running[0]]['request_id']}/cancel"}))
            await asyncio.sleep(0.2)
            assert post(n, key, {"prompt": "x", "max_tokens": 1})[0] == 200
        # The socket closed with a generation running: its lease is freed too.
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            if post(n, key, {"prompt": "x", "max_tokens": 1})[0] == 200 and post(n, key, {"prompt": "x", "max_tokens": 1})[0] == 200:
                break
            time.sleep(0.1)
        else:
            raise AssertionError("leases were not released after disconnect")
    asyncio.run(ws_case())


def test_same_request_id_is_admitted_once(make_node):
    n = make_node("--rate-limit-rpm", "2", "--max-concurrent", "5", "--model-ttft-ms", "0", "--model-token-ms", "0")
    key = make_key("idem-" + uuid.uuid4().hex[:6])
    rid = "idem-" + uuid.uuid4().hex
    for _ in range(3):  # a retried request replays, and is not counted again
        status, body, _ = post(n, key, {"prompt": "The cat", "max_tokens": 3, "request_id": rid})
        assert status == 200, body
    assert post(n, key, {"prompt": "x", "max_tokens": 1})[0] == 200
    assert post(n, key, {"prompt": "x", "max_tokens": 1})[0] == 429


def test_limits_off_for_benchmarks(make_node):
    n = make_node("--rate-limit-rpm", "0", "--max-concurrent", "0", "--model-ttft-ms", "0", "--model-token-ms", "0")
    key = make_key("nolimit-" + uuid.uuid4().hex[:6])
    with ThreadPoolExecutor(16) as pool:
        codes = list(pool.map(lambda i: post(n, key, {"prompt": "x", "max_tokens": 1})[0], range(200)))
    assert codes.count(200) == 200
