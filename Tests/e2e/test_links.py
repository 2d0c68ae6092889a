"""Stream links: workers send tokens straight to the gateway holding the client (not through
Redis), both ends prove the fleet's secret, a dead or silent link ends its streams at once, a fleet
without live workers refuses at once, and a serve node runs what it can itself. The link protocol
is spoken here from Python too (an unseen client of our framing)."""
import hashlib
import hmac
import json
import os
import signal
import socket
import struct
import subprocess
import threading
import time
import uuid

import pytest
from websockets.sync.client import connect

from conftest import free_port, make_key, post
from test_fleet import SSE, Fleet, metric, redis_url  # noqa: F401  (fixture)


def frame(kind, payload=b""):
    return struct.pack(">IB", 1 + len(payload), kind) + payload


def read_frame(sock):
    head = b""
    while len(head) < 5:
        chunk = sock.recv(5 - len(head))
        if not chunk:
            return None
        head += chunk
    length, kind = struct.unpack(">IB", head)
    body = b""
    while len(body) < length - 1:
        chunk = sock.recv(length - 1 - len(body))
        if not chunk:
            return None
        body += chunk
    return kind, body


def hello(challenge, worker, gateway, secret):
    nonce = os.urandom(16)
    w, g = worker.encode(), gateway.encode()
    mac = hmac.new(secret, b"playground-link-hello" + challenge + bytes([len(w)]) + w + bytes([len(g)]) + g + nonce,
                   hashlib.sha256).digest()
    return nonce, frame(2, bytes([len(w)]) + w + bytes([len(g)]) + g + nonce + mac)


def closed_by_peer(sock, within=3.0):
    sock.settimeout(within)
    try:
        while True:
            data = sock.recv(4096)
            if not data:
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except socket.timeout:
        return False


def gateway_id(f, g):
    """The gateway's node id, as its heartbeat names it (the only gateway of its fleet)."""
    ids = f.redis("ZRANGE", "{fleet:%s}:nodes" % f.name, "0", "-1").split()
    roles = {i: f.redis("GET", "{fleet:%s}:node:%s" % (f.name, i)) for i in ids}
    return [i for i, r in roles.items() if r == "gateway"][0]


def test_a_link_without_the_fleet_secret_is_refused_and_one_with_it_is_welcomed(make_node, redis_url):
    f = Fleet(make_node, redis_url)
    port = free_port()
    g = f.gateway("--fleet-port", str(port))
    deadline = time.time() + 5
    while not f.redis("ZRANGE", "{fleet:%s}:nodes" % f.name, "0", "-1") and time.time() < deadline:
        time.sleep(0.05)
    gw = gateway_id(f, g)
    secret = f.redis("GET", "{fleet:%s}:link-secret" % f.name).encode()
    assert len(secret) >= 32, "a secret made once for this fleet and kept in Redis"

    # Garbage instead of a hello: closed.
    s = socket.create_connection(("127.0.0.1", port))
    kind, challenge = read_frame(s)
    assert kind == 1 and len(challenge) == 16
    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert closed_by_peer(s)
    # A hello signed with the wrong secret: closed, no welcome.
    s = socket.create_connection(("127.0.0.1", port))
    _, challenge = read_frame(s)
    s.sendall(hello(challenge, "intruder", gw, b"not-the-secret-at-all-00000000")[1])
    assert closed_by_peer(s)
    # The right secret, but meant for another gateway: closed.
    s = socket.create_connection(("127.0.0.1", port))
    _, challenge = read_frame(s)
    s.sendall(hello(challenge, "w", "some-other-gateway", secret)[1])
    assert closed_by_peer(s)
    # Saying nothing: closed after the handshake time.
    s = socket.create_connection(("127.0.0.1", port))
    read_frame(s)
    assert closed_by_peer(s, within=4.0)
    assert metric(g, "playground_fleet_links_refused_total") == 4
    assert metric(g, "playground_fleet_links") == 0

    # The right secret: welcomed with proof that the gateway holds it too; pings follow.
    s = socket.create_connection(("127.0.0.1", port))
    _, challenge = read_frame(s)
    nonce, h = hello(challenge, "python-worker", gw, secret)
    s.sendall(h)
    kind, mac = read_frame(s)
    assert kind == 3
    assert hmac.compare_digest(mac, hmac.new(secret, b"playground-link-welcome" + nonce + gw.encode(), hashlib.sha256).digest())
    assert metric(g, "playground_fleet_links") == 1
    s.settimeout(3)
    assert read_frame(s) == (4, b""), "a quiet link is pinged"
    # A frame that is too large: the link closes.
    s.sendall(struct.pack(">IB", (1 << 20) + 10, 10))
    assert closed_by_peer(s)
    deadline = time.time() + 2
    while metric(g, "playground_fleet_links") != 0 and time.time() < deadline:
        time.sleep(0.05)
    assert metric(g, "playground_fleet_links") == 0


def test_tokens_travel_on_links_not_through_redis(make_node, redis_url):
    f = Fleet(make_node, redis_url, "--model-ttft-ms", "0", "--model-token-ms", "1", "--model-jitter", "0")
    g = f.gateway()
    w = f.worker()
    key = make_key("links-" + uuid.uuid4().hex[:6])
    post(g.url, key, {"prompt": "The sea", "max_tokens": 4})  # warm: the link is dialled

    def publishes():
        for line in f.redis("INFO", "commandstats").splitlines():
            if line.startswith("cmdstat_publish:"):
                return int(line.split("calls=")[1].split(",")[0])
        return 0

    before = publishes()
    for i in range(10):
        status, body = post(g.url, key, {"prompt": "The sea", "max_tokens": 64, "seed": i})
        assert status == 200 and body["usage"]["completion_tokens"] > 0
    # Other tests' nodes may publish a little (control messages); 10 × 64 tokens would be ~660.
    assert publishes() - before < 20
    assert metric(g, "playground_fleet_links") >= 1


def test_a_killed_worker_interrupts_its_stream_within_1s(make_node, redis_url):
    f = Fleet(make_node, redis_url, "--model-ttft-ms", "10", "--model-token-ms", "20", "--model-jitter", "0")
    g = f.gateway()
    key = make_key("links-kill-" + uuid.uuid4().hex[:6])
    for round in range(3):
        w = f.worker("--slots", "1")
        s = SSE(g, key, {"prompt": "The sea", "max_tokens": 1000, "seed": 7, "presence_penalty": -2, "frequency_penalty": -2})
        events = s.events()
        for _ in range(3):
            next(events)
        w.proc.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        rest = list(events)
        took = time.monotonic() - killed
        assert rest and "error" in rest[-1], rest[-2:]
        assert rest[-1]["error"]["code"] == "generation_interrupted"
        assert took < 1.0, f"heard after {took:.2f} s"
        w.proc.wait()


def test_a_stopped_worker_or_gateway_is_noticed_within_3s(make_node, redis_url):
    f = Fleet(make_node, redis_url, "--model-ttft-ms", "10", "--model-token-ms", "20", "--model-jitter", "0")
    g = f.gateway()
    w = f.worker()
    key = make_key("links-stop-" + uuid.uuid4().hex[:6])
    body = {"prompt": "The sea", "max_tokens": 1000, "seed": 7, "presence_penalty": -2, "frequency_penalty": -2}
    # A SIGSTOPped worker: its link goes silent; the client hears within 3 s (plus a ping).
    s = SSE(g, key, body)
    events = s.events()
    next(events)
    w.proc.send_signal(signal.SIGSTOP)
    stopped = time.monotonic()
    try:
        rest = list(events)
        took = time.monotonic() - stopped
        assert rest[-1]["error"]["code"] == "generation_interrupted", rest[-1]
        assert took < 4.0, f"heard after {took:.2f} s"
    finally:
        w.proc.send_signal(signal.SIGCONT)
    # The worker, back, learns its link died and stops that generation (its slot is free).
    deadline = time.time() + 5
    while metric(w, "playground_active_generations") != 0 and time.time() < deadline:
        time.sleep(0.05)
    assert metric(w, "playground_active_generations") == 0

    # A SIGSTOPped gateway: the worker stops its generations within 3 s and frees the slots.
    s = SSE(g, key, body)
    events = s.events()
    next(events)
    assert metric(w, "playground_active_generations") == 1
    g.proc.send_signal(signal.SIGSTOP)
    try:
        deadline = time.time() + 4.5
        while metric(w, "playground_active_generations") != 0 and time.time() < deadline:
            time.sleep(0.05)
        assert metric(w, "playground_active_generations") == 0, "the worker gave up the gateway it cannot reach"
    finally:
        g.proc.send_signal(signal.SIGCONT)
    rest = list(events)
    assert rest[-1].get("error", {}).get("code") == "generation_interrupted", rest[-1]
    # Nothing hangs: the next completion runs.
    status, answer = post(g.url, key, {"prompt": "The sea", "max_tokens": 3})
    assert status == 200 and answer["usage"]["completion_tokens"] == 3


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        return int(next(line for line in f if line.startswith("VmRSS:")).split()[1])


def test_a_gateway_that_stops_reading_pauses_then_stops_the_worker_with_bounded_memory(make_node, redis_url):
    """Zero-pace generations of a million tokens each (~20 MB of frames apiece): the worker makes
    tokens only as fast as the gateway takes them (a long answer arrives whole); towards a gateway
    that stops reading it pauses (its link buffer stays at the high-water mark, its memory
    bounded), and the link's silence check then stops both generations."""
    f = Fleet(make_node, redis_url, "--model-ttft-ms", "0", "--model-token-ms", "0", "--model-jitter", "0",
              "--max-tokens-cap", "1000000")
    # The gateway queues what its client has not read yet (up to 1 GiB) instead of dropping the
    # client: only the gateway's reading of the link is in question here.
    g = f.gateway("--max-outbound-bytes", str(1 << 30))
    w = f.worker()
    key = make_key("links-slow-" + uuid.uuid4().hex[:6])
    body = {"prompt": "The sea", "seed": 7, "presence_penalty": -2, "frequency_penalty": -2}
    status, whole = post(g.url, key, dict(body, max_tokens=200000), timeout=60)
    assert status == 200 and whole["usage"]["completion_tokens"] == 200000, (status, whole.get("usage"))
    assert whole["choices"][0]["finish_reason"] == "length"
    idle = rss_kib(w.proc.pid)

    with connect(g.ws_url, additional_headers={"Authorization": f"Bearer {key}"}, max_size=None) as ws:
        for i in range(2):  # sent, then not read until the end: the gateway queues for this client
            ws.send(json.dumps({"id": i, "method": "POST", "path": "/v1/completions", "body": dict(body, max_tokens=1000000)}))
        deadline = time.time() + 5
        while metric(w, "playground_active_generations") != 2 and time.time() < deadline:
            time.sleep(0.01)
        assert metric(w, "playground_active_generations") == 2
        # Let the gateway read both streams' first events before it stops: stopped earlier, its
        # wait-for-a-worker deadline passes while it is stopped and fires on resume before it
        # reads the link (the stream ends server_busy instead of interrupted: a race, not a bug).
        time.sleep(0.3)
        g.proc.send_signal(signal.SIGSTOP)
        stopped = time.monotonic()
        peak = 0
        try:
            while time.monotonic() - stopped < 5.0:
                peak = max(peak, rss_kib(w.proc.pid))
                if metric(w, "playground_active_generations") == 0:
                    break
                time.sleep(0.02)
            took = time.monotonic() - stopped
            assert metric(w, "playground_active_generations") == 0, "the worker still generates for a gateway that does not read"
            assert 2.0 < took < 4.5, f"stopped after {took:.2f} s (paused, then the 3 s silence check)"
            assert peak - idle < 32 * 1024, f"worker grew {(peak - idle) // 1024} MiB"
        finally:
            g.proc.send_signal(signal.SIGCONT)
        ends = {}
        while len(ends) < 2:
            event = json.loads(ws.recv(timeout=30))
            if event["type"] in ("done", "error"):
                ends[event["id"]] = event
    for e in ends.values():
        assert e["type"] == "error" and e["error"]["code"] == "generation_interrupted", e
    status, answer = post(g.url, key, {"prompt": "The sea", "max_tokens": 3})
    assert status == 200 and answer["usage"]["completion_tokens"] == 3


def test_no_live_worker_is_refused_within_1s_and_readyz_says_so(make_node, redis_url):
    f = Fleet(make_node, redis_url)
    g = f.gateway()
    time.sleep(0.5)
    key = make_key("links-none-" + uuid.uuid4().hex[:6])
    started = time.monotonic()
    status, body = post(g.url, key, {"prompt": "The sea", "max_tokens": 3})
    took = time.monotonic() - started
    assert status == 503 and body["error"]["code"] == "server_busy" and body["error"]["retry_after_ms"] > 0, body
    assert "no worker" in body["error"]["message"]
    assert took < 1.0, f"refused after {took:.2f} s"
    import urllib.request, urllib.error
    try:
        urllib.request.urlopen(g.url + "/readyz", timeout=5)
        assert False, "readyz should be 503"
    except urllib.error.HTTPError as e:
        assert e.code == 503 and b"no capacity" in e.read()
    assert "no capacity" in f.status()
    # A worker joins: within a second the gateway uses it, and it is ready again.
    f.worker()
    deadline = time.time() + 3
    while time.time() < deadline:
        status, body = post(g.url, key, {"prompt": "The sea", "max_tokens": 3})
        if status == 200:
            break
        time.sleep(0.1)
    assert status == 200, body
    with urllib.request.urlopen(g.url + "/readyz", timeout=5) as r:
        assert r.status == 200


def test_two_fleets_on_one_redis_never_cross_links(make_node, redis_url):
    a, b = Fleet(make_node, redis_url, "--model-ttft-ms", "0", "--model-token-ms", "1"), \
        Fleet(make_node, redis_url, "--model-ttft-ms", "0", "--model-token-ms", "1")
    port_a = free_port()
    ga, gb = a.gateway("--fleet-port", str(port_a)), b.gateway()
    wa, wb = a.worker(), b.worker()
    key = make_key("links-two-" + uuid.uuid4().hex[:6])
    for g in (ga, gb):
        # Seeded, and penalties that keep it going: an unseeded answer may end before 5 tokens.
        status, body = post(g.url, key, {"prompt": "The sea", "max_tokens": 5, "seed": 7, "presence_penalty": -2, "frequency_penalty": -2})
        assert status == 200 and body["usage"]["completion_tokens"] == 5, body
    assert metric(ga, "playground_fleet_links") >= 1 and metric(gb, "playground_fleet_links") >= 1
    assert metric(wa, 'playground_completions_total{outcome="length"}') == 1
    assert metric(wb, 'playground_completions_total{outcome="length"}') == 1
    sa = a.redis("GET", "{fleet:%s}:link-secret" % a.name)
    sb = b.redis("GET", "{fleet:%s}:link-secret" % b.name)
    assert sa and sb and sa != sb, "each fleet has its own secret"
    # Fleet b's secret does not open fleet a's gateway.
    s = socket.create_connection(("127.0.0.1", port_a))
    _, challenge = read_frame(s)
    s.sendall(hello(challenge, "from-b", gateway_id(a, ga), sb.encode())[1])
    assert closed_by_peer(s)
    assert metric(ga, "playground_fleet_links_refused_total") == 1


def test_serve_runs_what_it_can_itself_and_the_rest_through_the_fleet(make_node, redis_url):
    f = Fleet(make_node, redis_url, "--model-ttft-ms", "0", "--model-token-ms", "30", "--model-jitter", "0")
    n = make_node(*f.flags, "--slots", "1", command="serve")
    key = make_key("links-local-" + uuid.uuid4().hex[:6])

    def added():
        out = f.redis("XINFO", "STREAM", f.stream)
        lines = out.splitlines()
        return int(lines[lines.index("entries-added") + 1]) if "entries-added" in lines else 0

    for i in range(5):
        status, body = post(n.url, key, {"prompt": "The sea", "max_tokens": 3, "seed": i})
        assert status == 200 and body["usage"]["completion_tokens"] == 3
    assert added() == 0, "a free slot: run in process, nothing on the fleet's Stream"
    # Its one slot busy: the next goes to the fleet's Stream (its own Redis worker takes it later).
    s = SSE(n, key, {"prompt": "The sea", "max_tokens": 20, "seed": 1})
    events = s.events()
    next(events)
    status, body = post(n.url, key, {"prompt": "The sea", "max_tokens": 3})
    assert status == 200 and body["usage"]["completion_tokens"] == 3
    assert added() == 1
    list(events)


def test_cancel_and_attach_reach_a_local_first_stream_from_another_gateway(make_node, redis_url):
    f = Fleet(make_node, redis_url, "--model-ttft-ms", "10", "--model-token-ms", "30", "--model-jitter", "0")
    a = make_node(*f.flags, command="serve")
    b = make_node(*f.flags, command="serve")
    key = make_key("links-xcancel-" + uuid.uuid4().hex[:6])
    # An id the node made up: cancelled through the other node (no locator in Redis).
    s = SSE(a, key, {"prompt": "The sea", "max_tokens": 500, "seed": 5})
    events = s.events()
    first = next(events)
    rid = first["id"]
    status, body = post(b.url, key, {}, path=f"/v1/completions/{rid}/cancel")
    assert status == 200 and body["status"] == "cancelled", body
    assert list(events)[-1]["choices"][0]["finish_reason"] == "cancelled"
    # A client's id: attached on the other node, the whole stream.
    rid = "local-attach-" + uuid.uuid4().hex
    body = {"prompt": "The lighthouse", "max_tokens": 20, "request_id": rid, "seed": 3}
    one = SSE(a, key, body)
    ev = one.events()
    head = [next(ev) for _ in range(3)]
    two = list(SSE(b, key, body).events())
    whole = head + list(ev)
    text = lambda es: "".join(e["choices"][0]["text"] for e in es if "choices" in e)
    assert text(two) == text(whole) and len(text(whole)) > 0


def test_a_link_that_cannot_be_opened_falls_back_to_redis(make_node, redis_url):
    # The gateway advertises an address nobody listens on (a misconfigured network): the worker
    # cannot open the link, and the tokens go through Redis instead — the completion succeeds.
    f = Fleet(make_node, redis_url, "--model-ttft-ms", "0", "--model-token-ms", "2", "--model-jitter", "0")
    g = f.gateway("--fleet-advertise", "127.0.0.9")
    f.worker()
    key = make_key("links-fallback-" + uuid.uuid4().hex[:6])
    for i in range(3):
        s = SSE(g, key, {"prompt": "The sea", "max_tokens": 12, "seed": i})
        events = list(s.events())
        assert events[-1]["choices"][0]["finish_reason"] in ("length", "stop"), events[-1]
        assert sum(1 for e in events if e["choices"][0]["text"]) >= 1
    assert metric(g, "playground_fleet_links") == 0
