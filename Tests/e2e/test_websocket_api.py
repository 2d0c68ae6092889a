"""The WebSocket envelope protocol at /v1/ws, driven by the `websockets` client library."""
import asyncio
import json
import urllib.request
import uuid

import pytest
import websockets
from websockets.exceptions import ConnectionClosed, InvalidStatus

from conftest import auth


def connect(node, **kw):
    kw.setdefault("additional_headers", auth(node.key))
    return websockets.connect(node.ws_url, **kw)


async def recv_json(ws, timeout=10):
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


async def collect(ws, ids, timeout=20):
    """Reads until every id in `ids` has ended (done or error); returns events by id."""
    events = {i: [] for i in ids}
    open_ids = set(ids)
    while open_ids:
        m = await recv_json(ws, timeout)
        events.setdefault(m["id"], []).append(m)
        if m["type"] in ("done", "error") or m["type"] == "response":
            open_ids.discard(m["id"])
    return events


def completion(id, **body):
    body.setdefault("prompt", "The sea was calm in the morning, and")
    # A seed whose answer is long (144 tokens at 0.9), so streams do not end before a test acts on them.
    body.setdefault("seed", 2)
    body.setdefault("temperature", 0.9)
    return json.dumps({"id": id, "method": "POST", "path": "/v1/completions", "body": body})


def run(coro):
    return asyncio.run(coro)


def metric(node, name):
    text = urllib.request.urlopen(node.url + "/metrics", timeout=5).read().decode()  # /metrics needs no key
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


def test_envelope_reply_carries_the_id(node):
    async def go():
        async with connect(node) as ws:
            await ws.send(json.dumps({"id": "models-1", "method": "GET", "path": "/v1/models"}))
            m = await recv_json(ws)
            assert m["id"] == "models-1" and m["type"] == "response" and m["status"] == 200
            assert m["body"]["data"][0]["id"] == "builtin"
            await ws.send(json.dumps({"id": 42, "method": "GET", "path": "/v1/nothing"}))
            m = await recv_json(ws)
            assert m["id"] == 42 and m["type"] == "error" and m["status"] == 404 and m["error"]["code"] == "not_found"
    run(go())


def test_completion_stream_shape(node):
    async def go():
        async with connect(node) as ws:
            await ws.send(completion("c1", max_tokens=8, seed=2))
            ev = (await collect(ws, ["c1"]))["c1"]
            assert ev[0]["type"] == "accepted" and ev[0]["model"] == "builtin" and ev[0]["request_id"]
            deltas = [e for e in ev if e["type"] == "delta"]
            assert [d["index"] for d in deltas] == list(range(len(deltas)))
            assert 1 <= len(deltas) <= 8
            done = ev[-1]
            assert done["type"] == "done" and done["finish_reason"] in ("stop", "length")
            assert done["usage"]["completion_tokens"] == len(deltas)
            t = done["timings"]
            assert t["ttft_ms"] <= t["total_ms"] and t["queue_ms"] >= 0 and t["upstream"] == "builtin"
    run(go())


def test_several_completions_at_once_on_one_socket(node):
    async def go():
        async with connect(node) as ws:
            ids = [f"p{i}" for i in range(5)]
            for i, id in enumerate(ids):
                await ws.send(completion(id, max_tokens=20, seed=i, temperature=0.9))
            events = await collect(ws, ids)
            for id in ids:
                assert events[id][0]["type"] == "accepted"
                assert events[id][-1]["type"] == "done"
            # They ran interleaved, not one after another.
            order = []
            async with connect(node) as ws2:
                for id in ("x", "y"):
                    await ws2.send(completion(id, max_tokens=30, seed=1, temperature=0.9))
                while len([o for o in order if o[1] in ("done",)]) < 2:
                    m = await recv_json(ws2)
                    order.append((m["id"], m["type"]))
            first_done = next(i for i, o in enumerate(order) if o[1] == "done")
            assert {o[0] for o in order[:first_done] if o[1] == "delta"} == {"x", "y"}
    run(go())


def test_cancel_mid_stream_frees_the_slot(slow_node):
    async def go():
        async with connect(slow_node) as ws:
            rid = "ws-cancel-" + uuid.uuid4().hex
            await ws.send(completion("c", max_tokens=500, request_id=rid))
            deltas = 0
            while deltas < 2:
                m = await recv_json(ws)
                deltas += m["type"] == "delta"
            assert metric(slow_node, "playground_active_generations") >= 1
            await ws.send(json.dumps({"id": "k", "method": "POST", "path": f"/v1/completions/{rid}/cancel"}))
            seen = {}
            while "c" not in seen or "k" not in seen:
                m = await recv_json(ws, 5)
                if m["type"] in ("done", "response", "error"):
                    seen[m["id"]] = m
            assert seen["c"]["type"] == "done" and seen["c"]["finish_reason"] == "cancelled"
            assert seen["k"]["body"]["status"] == "cancelled"
            assert metric(slow_node, "playground_active_generations") == 0
    run(go())


def test_disconnect_cancels_the_generation(slow_node):
    async def go():
        before = metric(slow_node, 'playground_completions_total{outcome="cancelled"}')
        async with connect(slow_node) as ws:
            await ws.send(completion("gone", max_tokens=500))
            m = await recv_json(ws)
            assert m["type"] == "accepted"
        for _ in range(50):
            if metric(slow_node, 'playground_completions_total{outcome="cancelled"}') > before:
                break
            await asyncio.sleep(0.05)
        assert metric(slow_node, 'playground_completions_total{outcome="cancelled"}') > before
        assert metric(slow_node, "playground_active_generations") == 0
    run(go())


@pytest.mark.parametrize("raw,why", [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "JSON object"),
    ('{"method": "GET", "path": "/v1/models"}', "id"),
    ('{"id": "a", "method": "FETCH", "path": "/v1/models"}', "method"),
    ('{"id": "a", "method": "GET", "path": "v1/models"}', "path"),
    ('{"id": "a", "method": "POST", "path": "/v1/completions", "body": {"prompt": "x", "temperature": 9}}', "temperature"),
    ('{"id": "a", "method": "POST", "path": "/v1/completions", "body": "text"}', "JSON object"),
])
def test_malformed_messages_get_an_error_and_the_socket_stays_open(node, raw, why):
    async def go():
        async with connect(node) as ws:
            await ws.send(raw)
            m = await recv_json(ws)
            assert m["type"] == "error" and m["error"]["code"] == "invalid_request"
            assert why in m["error"]["message"] or m["error"].get("field") == why
            await ws.send(json.dumps({"id": "after", "method": "GET", "path": "/v1/models"}))
            m = await recv_json(ws)
            assert m["id"] == "after" and m["status"] == 200
    run(go())


def test_binary_message_is_refused_politely(node):
    async def go():
        async with connect(node) as ws:
            await ws.send(b"\x00\x01")
            m = await recv_json(ws)
            assert m["type"] == "error" and "text" in m["error"]["message"]
    run(go())


def test_request_id_replays_a_finished_generation(node):
    async def go():
        rid = "replay-" + uuid.uuid4().hex
        async with connect(node) as ws:
            await ws.send(completion("a", max_tokens=15, temperature=1.0, request_id=rid))
            first = (await collect(ws, ["a"]))["a"]
        async with connect(node) as ws:
            # Different parameters, same id: the recorded generation comes back, nothing new starts.
            await ws.send(completion("b", max_tokens=3, temperature=0.1, request_id=rid))
            second = (await collect(ws, ["b"]))["b"]
        text = lambda ev: "".join(e["text"] for e in ev if e["type"] == "delta")
        assert text(first) == text(second) and text(first)
        assert first[-1]["usage"] == second[-1]["usage"]
        assert second[0]["request_id"] == rid
    run(go())


def test_request_id_attaches_to_a_running_generation(slow_node):
    async def go():
        rid = "attach-" + uuid.uuid4().hex
        async with connect(slow_node) as a, connect(slow_node) as b:
            await a.send(completion("a", max_tokens=12, request_id=rid))
            n = 0
            while n < 3:
                m = await recv_json(a)
                n += m["type"] == "delta"
            before = metric(slow_node, "playground_active_generations")
            await b.send(completion("b", max_tokens=12, request_id=rid))
            assert metric(slow_node, "playground_active_generations") == before, "no second generation"
            ev_a = [m] + (await collect(a, ["a"]))["a"]
            ev_b = (await collect(b, ["b"]))["b"]
            text = lambda ev: "".join(e["text"] for e in ev if e["type"] == "delta")
            assert ev_b[0]["type"] == "accepted"
            assert text(ev_b) and text(ev_b).endswith(text(ev_a[1:])[-10:])
            assert ev_a[-1]["usage"] == ev_b[-1]["usage"]
    run(go())


def test_busy_when_the_queue_is_full(tiny_node):
    async def go():
        async with connect(tiny_node) as ws:
            for i in range(3):
                await ws.send(completion(f"q{i}", max_tokens=40))
            third = None
            got = []
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            while third is None:
                m = await recv_json(ws)
                got.append(m)
                if m["id"] == "q2":
                    third = m
            assert third["type"] == "error" and third["status"] == 503
            assert third["error"]["code"] == "server_busy" and third["error"]["retry_after_ms"] > 0
            assert loop.time() - t0 < 1.0, "busy must be immediate, not a hidden wait"
            for id in ("q0", "q1"):
                await ws.send(json.dumps({"id": "c" + id, "method": "POST", "path": "/v1/completions/" + next(
                    e["request_id"] for e in got if e["id"] == id and e["type"] == "accepted") + "/cancel"}))
    run(go())


def test_message_over_one_mib_closes_1009(node):
    async def go():
        async with connect(node, max_size=None) as ws:
            await ws.send(completion("big", prompt="x" * (1 << 20)))
            with pytest.raises(ConnectionClosed) as e:
                await recv_json(ws)
            assert e.value.rcvd.code == 1009
    run(go())


def test_foreign_origin_refused(node):
    async def go():
        with pytest.raises(InvalidStatus) as e:
            async with connect(node, origin="https://evil.example"):
                pass
        assert e.value.response.status_code == 403
        async with connect(node, origin=node.url) as ws:
            await ws.send(json.dumps({"id": 1, "method": "GET", "path": "/v1/models"}))
            assert (await recv_json(ws))["status"] == 200
    run(go())


def test_upgrade_without_a_key_is_401(node):
    async def go():
        with pytest.raises(InvalidStatus) as e:
            async with websockets.connect(node.ws_url):
                pass
        assert e.value.response.status_code == 401
        with pytest.raises(InvalidStatus) as e:
            async with websockets.connect(node.ws_url, additional_headers=auth("pgk_bogus_key_bogus_key_bogus_key")):
                pass
        assert e.value.response.status_code == 401
    run(go())
