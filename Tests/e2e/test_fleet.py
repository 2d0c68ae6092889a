"""The fleet as separate processes: gateways and workers that only meet in Redis. Jobs go through
the shared queue, tokens come back over the relay; a killed worker or gateway, a cross-node cancel,
an attach on another gateway, a full backlog, a dead-lettered job and Redis being away."""
import asyncio
import http.client
import json
import os
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid

import openai
import pytest
import websockets

from conftest import BINARY, ROOT, free_port, make_key, post


@pytest.fixture
def redis_url():
    url = os.environ.get("REDIS_URL")
    assert url, "REDIS_URL is not set: run the tests through scripts/test.sh, which starts Redis"
    return url


class Fleet:
    """Gateways and workers of one fleet (a fresh name: its own queue on the shared Redis)."""

    def __init__(self, make_node, redis_url, *flags):
        self.make_node = make_node
        self.redis_url = redis_url
        self.name = "e" + uuid.uuid4().hex[:10]
        self.flags = ["--redis-url", redis_url, "--fleet", self.name, *flags]

    def gateway(self, *flags):
        return self.make_node(*self.flags, *flags, command="gateway")

    def worker(self, *flags):
        return self.make_node(*self.flags, *flags, command="worker")

    def redis(self, *args):
        port = self.redis_url.rsplit(":", 1)[1].split("/")[0]
        out = subprocess.run(["redis-cli", "-p", port, *args], capture_output=True, text=True, timeout=10)
        return out.stdout.strip()

    def status(self):
        out = subprocess.run([BINARY, "admin", "status", "--fleet", self.name], capture_output=True, text=True, cwd=ROOT,
                             timeout=30, env=dict(os.environ, REDIS_URL=self.redis_url))
        assert out.returncode == 0, out.stderr
        return out.stdout

    @property
    def stream(self):
        return "{jobs:" + self.name + "}:stream"


def metric(node, name):
    with urllib.request.urlopen(node.url + "/metrics", timeout=5) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    return None


class SSE:
    """A streamed completion read event by event, with the time each arrived."""

    def __init__(self, node, key, body, timeout=30):
        self.conn = http.client.HTTPConnection(node.host, node.port, timeout=timeout)
        self.conn.request("POST", "/v1/completions", json.dumps(dict(body, stream=True)),
                          {"Content-Type": "application/json", "Authorization": f"Bearer {key}"})
        self.resp = self.conn.getresponse()
        self.status = self.resp.status

    def events(self):
        while True:
            line = self.resp.readline()
            if not line:
                return
            line = line.decode().strip()
            if not line.startswith("data: "):
                continue
            data = line[6:]
            if data == "[DONE]":
                return
            yield json.loads(data)

    def close(self):
        self.conn.close()


def text_of(events):
    return "".join(e["choices"][0]["text"] for e in events if "choices" in e)


def test_gateways_and_workers_complete_through_redis(make_node, redis_url):
    f = Fleet(make_node, redis_url, "--model-ttft-ms", "5", "--model-token-ms", "5", "--model-jitter", "0")
    gateways = [f.gateway(), f.gateway()]
    workers = [f.worker("--slots", "4"), f.worker("--slots", "4")]
    key = make_key("fleet-" + uuid.uuid4().hex[:6])
    # The official SDK through either gateway, same seed → same text whichever worker ran it.
    texts = set()
    for g in gateways:
        client = openai.OpenAI(base_url=g.url + "/v1", api_key=key, max_retries=0)
        r = client.completions.create(model="builtin", prompt="The lighthouse", max_tokens=12, seed=7, temperature=0.8)
        assert r.usage.completion_tokens == 12 and r.choices[0].finish_reason == "length"
        texts.add(r.choices[0].text)
    assert len(texts) == 1
    # Many at once: both workers take jobs (each claims only while it has free slots).
    results = []
    threads = [threading.Thread(target=lambda i=i: results.append(post(gateways[i % 2].url, key, {"prompt": "x", "max_tokens": 20})))
               for i in range(24)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert [r[0] for r in results] == [200] * 24, [r for r in results if r[0] != 200][:3]
    done = [metric(w, 'playground_completions_total{outcome="length"}') + metric(w, 'playground_completions_total{outcome="stop"}')
            for w in workers]
    assert all(d and d > 0 for d in done) and sum(done) >= 24, done
    # A worker serves ops routes only; its metrics are what an autoscaler reads.
    assert urllib.request.urlopen(workers[0].url + "/readyz", timeout=5).status == 200
    assert metric(workers[0], "playground_active_generations") == 0
    assert metric(workers[0], "playground_jobs_backlog") is not None
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(workers[0].url + "/v1/models", timeout=5)
    assert e.value.code == 404
    status = f.status()
    assert "4 live nodes" in status and "backlog 0, pending 0, dead-lettered 0" in status, status


def test_sharded_job_streams_spread_the_jobs_and_every_node_must_agree_on_their_number(make_node, redis_url):
    f = Fleet(make_node, redis_url, "--job-shards", "4", "--model-ttft-ms", "5", "--model-token-ms", "5", "--model-jitter", "0")
    gateways = [f.gateway(), f.gateway()]
    workers = [f.worker("--slots", "3"), f.worker("--slots", "3")]
    assert f.redis("GET", "{fleet:%s}:shards" % f.name) == "4", "the first node keeps the fleet's number"
    key = make_key("fleet-shards-" + uuid.uuid4().hex[:6])
    answers = {}
    threads = [threading.Thread(target=lambda i=i: answers.update({i: post(gateways[i % 2].url, key, {"prompt": "The sea", "seed": 5, "max_tokens": 10,
                                                                                                      "request_id": f"shard-{i}"})}))
               for i in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    results = [answers.get(i, (None, None)) for i in range(40)]
    assert [r[0] for r in results] == [200] * 40, [r for r in results if r[0] != 200][:3]
    assert all(r[1]["usage"]["completion_tokens"] == 10 for r in results)
    # The jobs went through several shards' streams (each made its group when first read).
    made = [f.redis("EXISTS", "{jobs:%s:%d}:stream" % (f.name, s)) for s in range(4)]
    assert made == ["1"] * 4, made
    assert f.redis("EXISTS", f.stream) == "0", "no stream of before: everything is sharded"
    status = f.status()
    assert "backlog 0, pending 0, dead-lettered 0 over 4 shards" in status and status.count("  shard ") == 4, status
    # Replay by request_id on the other gateway finds the finished stream's record in its shard:
    # the same answer, and no worker ran it again.
    def runs():
        return sum(metric(w, 'playground_completions_total{outcome="length"}') or 0 for w in workers)
    before = runs()
    status_code, again = post(gateways[0].url, key, {"prompt": "The sea", "seed": 5, "max_tokens": 10, "request_id": "shard-3"})
    assert status_code == 200 and again["choices"][0]["text"] == results[3][1]["choices"][0]["text"], (again, results[3])
    assert runs() == before == 40, (before, runs())
    # A node started with another number is refused, naming the fleet's.
    out = subprocess.run([BINARY, "worker", "--redis-url", redis_url, "--fleet", f.name, "--job-shards", "2", "--port", "0"],
                         capture_output=True, text=True, cwd=ROOT, timeout=30)
    assert out.returncode == 2 and "--job-shards 4" in out.stderr, (out.returncode, out.stderr[-500:])
    out = subprocess.run([BINARY, "worker", "--job-shards", "0"], capture_output=True, text=True, cwd=ROOT, timeout=30)
    assert out.returncode == 2 and "--job-shards" in out.stderr


def test_killed_worker_interrupts_its_stream_within_3s_and_queued_jobs_run_elsewhere(make_node, redis_url):
    f = Fleet(make_node, redis_url, "--model-ttft-ms", "20", "--model-token-ms", "40", "--model-jitter", "0")
    g = f.gateway()
    doomed = f.worker("--slots", "1")
    user = "fleet-kill-" + uuid.uuid4().hex[:6]
    key = make_key(user)
    running = SSE(g, key, {"prompt": "The sea", "max_tokens": 400, "seed": 5})
    assert running.status == 200
    events = running.events()
    for _ in range(3):
        next(events)  # role/first chunks: it runs on the doomed worker
    # A second job waits in the queue: the only worker's one slot is busy.
    waiting = {}
    t = threading.Thread(target=lambda: waiting.update(r=post(g.url, key, {"prompt": "The sea", "max_tokens": 5, "seed": 5})))
    t.start()
    time.sleep(0.3)
    doomed.proc.send_signal(signal.SIGKILL)
    killed_at = time.monotonic()
    rest = list(events)
    took = time.monotonic() - killed_at
    assert rest and "error" in rest[-1], rest[-3:]
    assert rest[-1]["error"]["code"] == "generation_interrupted" and rest[-1]["error"]["retry_after_ms"] >= 0
    assert took < 3.0, f"interrupted after {took:.2f} s"
    # The queued job runs on a worker that joins later.
    f.worker()
    t.join(30)
    assert waiting["r"][0] == 200 and waiting["r"][1]["usage"]["completion_tokens"] == 5
    # Both leases are released promptly (asynchronously, after the answers): well within 3 s,
    # where a leak would hold one for the lease TTL (30 s). This user's leases only: `admin
    # status` counts every user's, and nodes other tests killed hold theirs until the TTL.
    deadline = time.time() + 3
    while True:
        status = f.status()
        leases = f.redis("ZCARD", "{u:" + user + "}:lease")
        if leases == "0" and "backlog 0, pending 0" in status:
            break
        assert time.time() < deadline, (leases, status)
        time.sleep(0.1)


def test_a_job_whose_worker_died_before_starting_it_is_taken_over(make_node, redis_url):
    f = Fleet(make_node, redis_url, "--model-ttft-ms", "5", "--model-token-ms", "5")
    g = f.gateway()
    key = make_key("fleet-ghost-" + uuid.uuid4().hex[:6])
    result = {}
    t = threading.Thread(target=lambda: result.update(r=post(g.url, key, {"prompt": "The sea", "max_tokens": 4, "seed": 5})))
    t.start()
    deadline = time.time() + 5
    while f.redis("XLEN", f.stream) != "1" and time.time() < deadline:
        time.sleep(0.02)
    # A "worker" takes the job and dies before starting it (never acknowledges).
    f.redis("XGROUP", "CREATE", f.stream, "workers", "0", "MKSTREAM")
    assert "The sea" in f.redis("XREADGROUP", "GROUP", "workers", "ghost", "COUNT", "1", "STREAMS", f.stream, ">")
    w = f.worker()
    t.join(20)
    assert result["r"][0] == 200 and result["r"][1]["usage"]["completion_tokens"] == 4, result
    assert metric(w, "playground_jobs_reclaimed_total") == 1


def test_a_job_that_failed_on_too_many_workers_is_dead_lettered_and_its_client_told(make_node, redis_url):
    f = Fleet(make_node, redis_url)
    # The ghosts beat as live workers (else the gateway, seeing none, refuses the job at once).
    f.redis("ZADD", "{fleet:%s}:workers" % f.name, str(int(time.time() * 1000) + 120_000), "ghost-1")
    g = f.gateway()
    key = make_key("fleet-dead-" + uuid.uuid4().hex[:6])
    result = {}
    t = threading.Thread(target=lambda: result.update(r=post(g.url, key, {"prompt": "Poison", "max_tokens": 4})))
    t.start()
    deadline = time.time() + 5
    while f.redis("XLEN", f.stream) != "1" and time.time() < deadline:
        time.sleep(0.02)
    f.redis("XGROUP", "CREATE", f.stream, "workers", "0", "MKSTREAM")
    entry = f.redis("XREADGROUP", "GROUP", "workers", "ghost-1", "COUNT", "1", "STREAMS", f.stream, ">").split("\n")[1]
    # Two more workers took it over and died too: three deliveries.
    f.redis("XCLAIM", f.stream, "workers", "ghost-2", "0", entry)
    f.redis("XCLAIM", f.stream, "workers", "ghost-3", "0", entry)
    time.sleep(2.1)
    w = f.worker()
    t.join(20)
    status, body = result["r"]
    assert status == 500 and body["error"]["code"] == "internal_error" and "3 workers" in body["error"]["message"], result
    assert metric(w, "playground_jobs_dead_lettered_total") == 1
    assert "dead-lettered 1" in f.status()


def test_killed_gateway_stops_its_generations_and_frees_leases(make_node, redis_url):
    f = Fleet(make_node, redis_url, "--model-ttft-ms", "20", "--model-token-ms", "40", "--rate-limit-rpm", "1000",
              "--max-concurrent", "1")
    doomed, other = f.gateway(), f.gateway()
    w = f.worker()
    key = make_key("fleet-gwkill-" + uuid.uuid4().hex[:6])
    s = SSE(doomed, key, {"prompt": "The sea", "max_tokens": 400, "seed": 5})
    events = s.events()
    for _ in range(3):
        next(events)
    assert metric(w, "playground_active_generations") == 1
    # The one concurrent generation is in use: refused elsewhere.
    assert post(other.url, key, {"prompt": "x", "max_tokens": 1})[0] == 429
    doomed.proc.send_signal(signal.SIGKILL)
    deadline = time.time() + 3
    while metric(w, "playground_active_generations") != 0 and time.time() < deadline:
        time.sleep(0.05)
    assert metric(w, "playground_active_generations") == 0, "the worker stops once its events reach nobody"
    assert metric(w, 'playground_completions_total{outcome="cancelled"}') == 1
    # The lease was released by the worker: the user can start again at once (not after the TTL).
    assert post(other.url, key, {"prompt": "x", "max_tokens": 1})[0] == 200


def test_cancel_on_another_gateway_reaches_the_worker(make_node, redis_url):
    f = Fleet(make_node, redis_url, "--model-ttft-ms", "20", "--model-token-ms", "40")
    a, b = f.gateway(), f.gateway()
    w = f.worker()
    key = make_key("fleet-cancel-" + uuid.uuid4().hex[:6])
    rid = "xcancel-" + uuid.uuid4().hex
    s = SSE(a, key, {"prompt": "The sea", "max_tokens": 400, "seed": 5, "request_id": rid})
    events = s.events()
    for _ in range(3):
        next(events)
    started = time.monotonic()
    status, body = post(b.url, key, {}, path=f"/v1/completions/{rid}/cancel")
    assert status == 200 and body == {"request_id": rid, "status": "cancelled"}, body
    rest = list(events)
    assert rest[-1]["choices"][0]["finish_reason"] == "cancelled"
    assert time.monotonic() - started < 1.0
    deadline = time.time() + 2
    while metric(w, "playground_active_generations") != 0 and time.time() < deadline:
        time.sleep(0.02)
    assert metric(w, "playground_active_generations") == 0
    # Another user cannot cancel it; an unknown id is 404 on every gateway.
    other = make_key("fleet-cancel-other-" + uuid.uuid4().hex[:6])
    assert post(b.url, other, {}, path=f"/v1/completions/{rid}/cancel")[0] == 404
    assert post(b.url, key, {}, path=f"/v1/completions/nope-{rid}/cancel")[0] == 404
    # Once finished, cancelling again says so.
    assert post(b.url, key, {}, path=f"/v1/completions/{rid}/cancel")[1]["status"] == "finished"


def test_attach_and_replay_by_request_id_on_another_gateway(make_node, redis_url):
    f = Fleet(make_node, redis_url, "--model-ttft-ms", "20", "--model-token-ms", "30", "--model-jitter", "0")
    a, b = f.gateway(), f.gateway()
    w = f.worker()
    key = make_key("fleet-attach-" + uuid.uuid4().hex[:6])
    rid = "xattach-" + uuid.uuid4().hex
    body = {"prompt": "The lighthouse", "max_tokens": 30, "request_id": rid, "seed": 3}
    first = SSE(a, key, body)
    events = first.events()
    head = [next(events) for _ in range(5)]
    # The same request_id on gateway b: the whole stream (what was missed, then live).
    second = SSE(b, key, body)
    assert second.status == 200
    attached = list(second.events())
    original = head + list(events)
    assert text_of(attached) == text_of(original) and len(text_of(original)) > 0
    assert attached[-1]["choices"][0]["finish_reason"] == original[-1]["choices"][0]["finish_reason"] == "length"
    # Finished: replayed from Redis on b (and a), not run again.
    ran = metric(w, 'playground_completions_total{outcome="length"}')
    assert ran == 1
    replay = list(SSE(b, key, body).events())
    assert text_of(replay) == text_of(original)
    status, full = post(a.url, key, dict(body))
    assert status == 200 and full["choices"][0]["text"] == text_of(original)
    # Not someone else's: the same id under another user is a new completion.
    other = make_key("fleet-attach-other-" + uuid.uuid4().hex[:6])
    status, theirs = post(b.url, other, dict(body))
    assert status == 200 and theirs["usage"]["completion_tokens"] == 30
    assert metric(w, 'playground_completions_total{outcome="length"}') == ran + 1, "the replays did not run it again"


def test_the_backlog_is_bounded_and_busy_at_once(make_node, redis_url):
    f = Fleet(make_node, redis_url, "--max-queue", "2", "--model-ttft-ms", "5", "--model-token-ms", "5")
    g = f.gateway()
    key = make_key("fleet-backlog-" + uuid.uuid4().hex[:6])
    results = []
    threads = [threading.Thread(target=lambda: results.append(post(g.url, key, {"prompt": "x", "max_tokens": 3}))) for _ in range(2)]
    for t in threads:
        t.start()
    deadline = time.time() + 5
    while f.redis("XLEN", f.stream) != "2" and time.time() < deadline:
        time.sleep(0.02)
    started = time.monotonic()
    status, body = post(g.url, key, {"prompt": "x", "max_tokens": 3})
    assert status == 503 and body["error"]["code"] == "server_busy" and body["error"]["retry_after_ms"] > 0, body
    assert time.monotonic() - started < 0.5
    # Workers arrive: the waiting ones finish.
    f.worker()
    for t in threads:
        t.join(20)
    assert [r[0] for r in results] == [200, 200], results


def test_a_gateway_answers_server_busy_while_redis_is_away(make_node, tmp_path):
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    g = make_node("--redis-url", url, "--fleet", "away", command="gateway")
    key = make_key("fleet-away-" + uuid.uuid4().hex[:6])
    started = time.monotonic()
    status, body = post(g.url, key, {"prompt": "x", "max_tokens": 3})
    assert status == 503 and body["error"]["code"] == "server_busy" and body["error"]["retry_after_ms"] > 0, body
    assert time.monotonic() - started < 1.0
    with urllib.request.urlopen(g.url + "/readyz", timeout=5) as r:
        assert json.loads(r.read()) == {"status": "degraded", "redis": "down"}
    # Redis comes back: the gateway recovers by itself; a worker joins and completions flow.
    redis = subprocess.Popen(["redis-server", "--port", str(port), "--save", "", "--appendonly", "no", "--bind", "127.0.0.1"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        make_node("--redis-url", url, "--fleet", "away", command="worker")
        deadline = time.time() + 10
        status = None
        while time.time() < deadline:
            status, body = post(g.url, key, {"prompt": "x", "max_tokens": 3})
            if status == 200:
                break
            time.sleep(0.2)
        assert status == 200, body
    finally:
        redis.terminate()
        redis.wait(10)


def test_a_thousand_streams_dropped_or_cancelled_leave_nothing_behind(make_node, redis_url):
    f = Fleet(make_node, redis_url, "--model-ttft-ms", "20", "--model-token-ms", "50", "--slots", "600", "--max-queue", "2000")
    gateways = [f.gateway(), f.gateway()]
    workers = [f.worker(), f.worker()]
    user = "fleet-drop-" + uuid.uuid4().hex[:6]
    key = make_key(user)
    errors = []

    async def one_socket(g, n, cancel):
        async with websockets.connect(g.ws_url, additional_headers={"Authorization": f"Bearer {key}"},
                                      max_size=None) as ws:
            for i in range(n):
                await ws.send(json.dumps({"id": i, "method": "POST", "path": "/v1/completions",
                                          "body": {"prompt": "The sea", "max_tokens": 1000, "seed": 5}}))
            ids, progressed, ended = {}, set(), set()
            while len(progressed) < n:
                m = json.loads(await asyncio.wait_for(ws.recv(), 20))
                if m["type"] == "error":
                    errors.append(m["error"]["code"] + ": " + m["error"]["message"])
                if m["type"] == "accepted":
                    ids[m["id"]] = m["request_id"]
                elif m["type"] in ("delta", "done", "error"):
                    progressed.add(m["id"])
                    if m["type"] != "delta":
                        ended.add(m["id"])
            assert len(ids) == n, ("every one was accepted", errors[:3])
            if cancel:
                for i, rid in ids.items():
                    await ws.send(json.dumps({"id": f"c{i}", "method": "POST", "path": f"/v1/completions/{rid}/cancel"}))
                while len(ended) < n:
                    m = json.loads(await asyncio.wait_for(ws.recv(), 20))
                    if m["type"] in ("done", "error") and not str(m["id"]).startswith("c"):
                        ended.add(m["id"])
            # else: the socket just goes away with every stream running.

    async def go():
        # 20 sockets × 50 (a socket holds at most 64 requests waiting for its credential check).
        await asyncio.gather(*[one_socket(gateways[i % 2], 50, cancel=i % 2 == 0) for i in range(20)])

    asyncio.run(go())
    deadline = time.time() + 5
    while time.time() < deadline and any(metric(w, "playground_active_generations") for w in workers):
        time.sleep(0.1)
    assert [metric(w, "playground_active_generations") for w in workers] == [0, 0]
    assert [metric(g, "playground_active_generations") for g in gateways] == [0, 0]
    status = f.status()
    assert "backlog 0, pending 0" in status, status
    assert f.redis("ZCARD", "{u:" + user + "}:lease") == "0", status

