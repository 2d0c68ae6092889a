"""A burst of mixed, partly hostile traffic: the node must survive it and leak nothing."""
import asyncio
import json
import random
import time
import urllib.request

import websockets

from conftest import auth


def metric(node, name):
    for line in urllib.request.urlopen(node.url + "/metrics", timeout=5).read().decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(name)


def test_chaos_leaves_no_running_generations(make_node):
    n = make_node("--model-ttft-ms", "5", "--model-token-ms", "5", "--slots", "8", "--max-queue", "16")
    rng = random.Random(1234)
    seen = {"done": 0, "error": 0, "closed": 0}

    async def client(i):
        deadline = time.time() + 6
        while time.time() < deadline:
            try:
                async with websockets.connect(n.ws_url, additional_headers=auth(n.key), max_size=None) as ws:
                    ids = []
                    for k in range(rng.randint(1, 12)):
                        r = rng.random()
                        mid = f"{i}-{k}-{rng.random()}"
                        if r < 0.45:
                            body = {"prompt": rng.choice(["The sea", "", "🦜", "x" * 500]), "max_tokens": rng.randint(1, 80),
                                    "temperature": rng.choice([0, 0.5, 1.9, 3]), "stop": rng.choice([None, ["."], "the"]),
                                    "request_id": rng.choice([None, f"r{rng.randint(0, 20)}"]), "seed": rng.randint(0, 9)}
                            await ws.send(json.dumps({"id": mid, "method": "POST", "path": "/v1/completions", "body": body}))
                            ids.append(mid)
                        elif r < 0.6:
                            await ws.send(json.dumps({"id": mid, "method": "POST", "path": f"/v1/completions/r{rng.randint(0, 20)}/cancel"}))
                        elif r < 0.7:
                            await ws.send(rng.choice(["{", "[]", "null", '{"id": 1}', "\x00", '{"id":"a","method":"GET","path":"/nope"}']))
                        elif r < 0.8:
                            await ws.send(b"\xff\xfe binary")
                        else:
                            await ws.send(json.dumps({"id": mid, "method": "GET", "path": "/v1/models"}))
                    # Read a little, then sometimes walk away mid-stream.
                    for _ in range(rng.randint(0, 40)):
                        m = json.loads(await asyncio.wait_for(ws.recv(), 5))
                        if m.get("type") in seen:
                            seen[m["type"]] += 1
                    if rng.random() < 0.5:
                        continue  # leave with generations running: the node must cancel them
            except (websockets.ConnectionClosed, asyncio.TimeoutError):
                seen["closed"] += 1

    async def go():
        await asyncio.gather(*(client(i) for i in range(24)))
    asyncio.run(go())
    assert n.proc.poll() is None, "the node survived"
    deadline = time.time() + 10
    while time.time() < deadline and (metric(n, "playground_active_generations") or metric(n, "playground_queue_length")):
        time.sleep(0.1)
    assert metric(n, "playground_active_generations") == 0, "every slot came back"
    assert metric(n, "playground_queue_length") == 0
    assert metric(n, "playground_ws_connections") == 0
    assert seen["done"] > 10 and seen["error"] > 10, seen
