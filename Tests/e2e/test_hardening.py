"""Issue 15: what a hostile-input and operator-error probe found, each tried the way the probe did
it — bad CA files and models files, a request_id re-sent after what guarded it was dropped, upstreams
that trickle or lie about usage, attach refusals and busy refusals that stuck, control characters
in user names — with the answer a production service owes."""
import http.client
import http.server
import json
import os
import socketserver
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid

import pytest

from conftest import BINARY, ROOT, Node, make_key, post
from test_fleet import Fleet


@pytest.fixture
def redis_url():
    url = os.environ.get("REDIS_URL")
    assert url, "REDIS_URL is not set: run the tests through scripts/test.sh, which starts Redis"
    return url


def redis_cli(redis_url, *args):
    port = redis_url.rsplit(":", 1)[1].split("/")[0]
    return subprocess.run(["redis-cli", "-p", port, *args], capture_output=True, text=True, timeout=10).stdout.strip()


def write_file(content, suffix=".json"):
    fd, path = tempfile.mkstemp(suffix=suffix)
    with os.fdopen(fd, "wb") as f:
        f.write(content if isinstance(content, bytes) else content.encode())
    return path


def serve_refused(*flags, env=None):
    """Runs `playground serve` expecting it to refuse its settings: (exit code, stderr)."""
    out = subprocess.run([BINARY, "serve", "--host", "127.0.0.1", "--port", "0", *flags], capture_output=True, text=True,
                         timeout=30, cwd=ROOT, env=dict(os.environ, **(env or {})))
    return out.returncode, out.stderr


def models(upstreams, aliases=None):
    return write_file(json.dumps({"upstreams": upstreams, "aliases": aliases or {"m": [[upstreams[0]["name"]]]}}))


# Item 1 ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["empty", "random", "bad-pem", "directory"])
def test_a_bad_ca_file_exits_2_naming_the_field_not_a_crash(kind):
    path = {"empty": lambda: write_file(b"", ".pem"),
            "random": lambda: write_file(os.urandom(4096), ".pem"),
            "bad-pem": lambda: write_file("-----BEGIN CERTIFICATE-----\nAAAA!!!!\n-----END CERTIFICATE-----\n", ".pem"),
            "directory": lambda: tempfile.mkdtemp()}[kind]()
    file = models([{"name": "tls", "base_url": "https://127.0.0.1:9/v1", "model": "m", "ca_file": path}])
    code, err = serve_refused("--models", file)
    assert code == 2, (code, err)  # was 134 (SIGABRT, double free)
    assert "upstreams[0]" in err and "ca_file" in err, err


# Items 6 and 7 -------------------------------------------------------------------------------

@pytest.mark.parametrize("upstream,env,words", [
    ({"base_url": "http://127.0.0.1:9\r\nX-Evil: 1/v1"}, {}, "upstreams[0].base_url: spaces, control characters"),
    ({"base_url": "http://127.0.0.1:9/v1 X"}, {}, "upstreams[0].base_url: spaces"),
    ({"base_url": "http://[::1]:9/v1"}, {}, "upstreams[0].base_url: IPv6 literals are not supported"),
    ({"base_url": "http://no-such-host.invalid/v1"}, {}, "upstreams[0] (a).base_url: cannot resolve the host"),
    ({"api_key_env": "PG_TEST_KEY"}, {"PG_TEST_KEY": "sk-1\r\nX-Evil: 1"}, "upstreams[0].api_key_env: the value of PG_TEST_KEY contains control characters"),
    ({"ca_file": "/etc/hostname"}, {}, "upstreams[0].ca_file: only for an https:// base_url"),
    ({"model": None}, {}, "upstreams[0].model: required"),
])
def test_models_file_mistakes_exit_2_naming_upstream_and_field(upstream, env, words):
    u = {"name": "a", "base_url": "http://127.0.0.1:9/v1", "model": "m"}
    u.update(upstream)
    u = {k: v for k, v in u.items() if v is not None}
    code, err = serve_refused("--models", models([u]), env=env)
    assert code == 2 and words in err, (code, err)


def test_builtin_alias_and_duplicate_keys_are_refused():
    u = {"name": "a", "base_url": "http://127.0.0.1:9/v1", "model": "m"}
    code, err = serve_refused("--models", models([u], {"builtin": [["a"]]}))
    assert code == 2 and 'aliases.builtin: "builtin" is the model inside the node' in err, err
    dup = write_file('{"upstreams": [{"name": "a", "base_url": "http://127.0.0.1:9/v1", "model": "m", "model": "n"}],'
                     ' "aliases": {"m": [["a"]]}}')
    code, err = serve_refused("--models", dup)
    assert code == 2 and 'the key "model" appears twice' in err, err


# Scripted upstreams ----------------------------------------------------------------------------

class Upstream:
    """A hand-written OpenAI-style upstream: `script(handler)` writes whatever it wants."""

    def __init__(self, script):
        self.requests = 0
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_POST(self):
                self.rfile.read(int(self.headers["Content-Length"]))
                outer.requests += 1
                try:
                    script(self)
                except OSError:
                    pass

        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


def sse_head(h):
    h.send_response(200)
    h.send_header("Content-Type", "text/event-stream")
    h.send_header("Connection", "close")
    h.end_headers()


def token(h, text, **extra):
    h.wfile.write(f'data: {json.dumps(dict({"choices": [{"text": text, "finish_reason": None}]}, **extra))}\n\n'.encode())
    h.wfile.flush()


def proxy_node(upstream, **opts):
    u = {"name": "up", "base_url": f"http://127.0.0.1:{upstream.port}/v1", "model": "m", **opts}
    return Node("--models", models([u]), "--auth", "off", "--rate-limit-rpm", "0", "--max-concurrent", "0", redis=False)


def error_of(node, body, timeout=30):
    """POSTs a completion; (status, error object or None, elapsed s)."""
    started = time.monotonic()
    status, answer = post(node.url, "-", body, timeout=timeout)
    return status, answer.get("error"), time.monotonic() - started


# Item 3 ---------------------------------------------------------------------------------------

def test_comments_without_tokens_hit_the_first_token_bound():
    """SSE comments every 0.2 s held a client 180 s: bytes are not tokens."""
    def comments(h):
        sse_head(h)
        for _ in range(600):
            h.wfile.write(b": still thinking\n\n")
            h.wfile.flush()
            time.sleep(0.2)
    up = Upstream(comments)
    node = proxy_node(up, first_token_timeout_ms=1000, idle_timeout_ms=5000, stream_timeout_ms=60000)
    try:
        status, err, took = error_of(node, {"model": "m", "prompt": "x", "max_tokens": 5})
        assert status == 503 and "first_token_timeout_ms" in err["message"], (status, err)
        assert took < 4, took
    finally:
        node.stop()
        up.stop()


def test_a_trickling_stream_hits_the_whole_stream_bound():
    """One byte every 0.1 s (an empty delta now and then, one real token) took 268 s."""
    def trickle(h):
        sse_head(h)
        token(h, "Once")
        for _ in range(3000):
            h.wfile.write(b":")
            h.wfile.flush()
            time.sleep(0.1)
    up = Upstream(trickle)
    node = proxy_node(up, first_token_timeout_ms=1000, idle_timeout_ms=5000, stream_timeout_ms=2500)
    try:
        started = time.monotonic()
        conn = http.client.HTTPConnection(node.host, node.port, timeout=20)
        conn.request("POST", "/v1/completions", json.dumps({"model": "m", "prompt": "x", "max_tokens": 50, "stream": True}),
                     {"Content-Type": "application/json"})
        body = conn.getresponse().read().decode()
        took = time.monotonic() - started
        assert "Once" in body and "generation_interrupted" in body and "stream_timeout_ms" in body, body
        assert 2 < took < 6, took
    finally:
        node.stop()
        up.stop()


# Item 8 and the 5xx body ----------------------------------------------------------------------

def test_negative_usage_from_an_upstream_is_not_believed():
    def liar(h):
        sse_head(h)
        for w in ["a", "b", "c"]:
            token(h, " " + w)
        h.wfile.write(b'data: {"choices": [], "usage": {"prompt_tokens": -5, "completion_tokens": -199999999980}}\n\n')
        h.wfile.write(b"data: [DONE]\n\n")
        h.wfile.flush()
    up = Upstream(liar)
    node = proxy_node(up)
    try:
        status, answer = post(node.url, "-", {"model": "m", "prompt": "x", "max_tokens": 10})
        assert status == 200 and answer["usage"]["completion_tokens"] == 3, answer
        assert answer["usage"]["prompt_tokens"] >= 0
        metrics = urllib.request.urlopen(node.url + "/metrics", timeout=5).read().decode()
        counts = [float(l.split()[-1]) for l in metrics.splitlines() if l.startswith("gen_ai_client_token_usage{")]
        assert counts and all(c >= 0 for c in counts), counts
    finally:
        node.stop()
        up.stop()


def test_an_upstreams_internal_error_body_is_not_shown_to_clients():
    def broken(h):
        body = b'{"error": "Traceback (most recent call last): db.internal.example:5432 password=hunter2"}'
        h.send_response(500)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)
    up = Upstream(broken)
    node = proxy_node(up)
    try:
        status, err, _ = error_of(node, {"model": "m", "prompt": "x", "max_tokens": 5})
        assert status == 503 and "HTTP 500" in err["message"], err
        assert "hunter2" not in err["message"] and "Traceback" not in err["message"], err
    finally:
        node.stop()
        up.stop()


def test_only_request_errors_of_an_upstream_reach_clients_in_its_words():
    """400/413/422 are about what the client sent: the client gets them as the upstream wrote
    them. 401/403/404 are about our key, our route and our models file (key hints, internal
    paths): a 502 of ours, without the upstream's words."""
    def answer_with(status):
        def handler(h):
            body = ('{"error": {"message": "status %d: key sk-live-abc123 lacks scope on /internal/route"}}' % status).encode()
            h.send_response(status)
            h.send_header("Content-Type", "application/json")
            h.send_header("Content-Length", str(len(body)))
            h.end_headers()
            h.wfile.write(body)
        return handler
    for status, shown in [(400, True), (413, True), (422, True), (401, False), (403, False), (404, False)]:
        up = Upstream(answer_with(status))
        node = proxy_node(up)
        try:
            got, err, _ = error_of(node, {"model": "m", "prompt": "x", "max_tokens": 5})
            if shown:
                assert got == status and err["message"] == "status %d: key sk-live-abc123 lacks scope on /internal/route" % status, (status, err)
            else:
                assert got == 502 and err["code"] == "upstream_error" and ("HTTP %d" % status) in err["message"], (status, err)
                assert "sk-live-abc123" not in json.dumps(err), (status, err)
        finally:
            node.stop()
            up.stop()


# Item 2 ---------------------------------------------------------------------------------------

def runs(worker):
    with urllib.request.urlopen(worker.url + "/metrics", timeout=5) as r:
        return sum(float(l.split()[-1]) for l in r.read().decode().splitlines()
                   if l.startswith("playground_completions_total{") and ('"length"' in l or '"stop"' in l))


def test_a_request_id_never_runs_twice_whatever_was_dropped(make_node, redis_url):
    f = Fleet(make_node, redis_url, "--rate-limit-rpm", "100", "--max-concurrent", "2",
              "--model-ttft-ms", "5", "--model-token-ms", "2", "--model-jitter", "0")
    a, b, c = f.gateway(), f.gateway(), f.gateway()
    w = f.worker()
    user = "hard-once-" + uuid.uuid4().hex[:6]
    key = make_key(user)
    rid = "once-" + uuid.uuid4().hex
    body = {"prompt": "The harbour", "max_tokens": 8, "request_id": rid, "seed": 1}
    status, first = post(a.url, key, body)
    assert status == 200 and runs(w) == 1
    deadline = time.time() + 3  # the lease is released just after the answer
    while redis_cli(redis_url, "ZCARD", "{u:" + user + "}:lease") != "0" and time.time() < deadline:
        time.sleep(0.02)
    # What used to guard it is gone: the locator and transcript (a transcript over 256 KiB is not
    # kept; a flush; an operator). The id must still not run again, and never outside the limits.
    owner_key = f"{len(user)}:{user}:{rid}"
    redis_cli(redis_url, "DEL", "{jobs:" + f.name + "}:req:" + owner_key, "{jobs:" + f.name + "}:done:" + owner_key)
    for g in (b, c):
        status, again = post(g.url, key, body)
        assert status == 409 and again["error"]["param"] == "request_id", again
    assert runs(w) == 1, "it ran again"
    assert redis_cli(redis_url, "ZCARD", "{u:" + user + "}:lease") == "0"
    # On the gateway that ran it, the retained answer is replayed as before.
    status, replay = post(a.url, key, body)
    assert status == 200 and replay["choices"][0]["text"] == first["choices"][0]["text"]
    assert runs(w) == 1


def test_busy_refusals_use_no_quota_and_the_id_is_retryable_at_once(make_node, redis_url):
    """A refusal as busy after admission counted against the minute and replayed its 503 for 120 s;
    re-sent on another gateway it ran outside the limits (no lease)."""
    f = Fleet(make_node, redis_url, "--max-queue", "1", "--rate-limit-rpm", "3", "--max-concurrent", "2",
              "--model-ttft-ms", "5", "--model-token-ms", "5")
    a, b = f.gateway(), f.gateway()
    user = "hard-busy-" + uuid.uuid4().hex[:6]
    key = make_key(user)
    waiting = []
    t = threading.Thread(target=lambda: waiting.append(post(a.url, key, {"prompt": "x", "max_tokens": 2})))
    t.start()
    deadline = time.time() + 5
    while redis_cli(redis_url, "XLEN", "{jobs:" + f.name + "}:stream") != "1" and time.time() < deadline:
        time.sleep(0.02)
    rid = "busy-" + uuid.uuid4().hex
    for _ in range(5):
        status, answer = post(a.url, key, {"prompt": "x", "max_tokens": 2, "request_id": rid})
        assert status == 503 and answer["error"]["code"] == "server_busy", answer
    status, answer = post(b.url, key, {"prompt": "x", "max_tokens": 2, "request_id": rid})
    assert status == 503 and answer["error"]["code"] == "server_busy", answer
    # Only the waiting request holds a place in the window and a lease.
    assert redis_cli(redis_url, "ZCARD", "{u:" + user + "}:win") == "1"
    assert redis_cli(redis_url, "ZCARD", "{u:" + user + "}:lease") == "1"
    f.worker()
    t.join(20)
    assert waiting and waiting[0][0] == 200, waiting
    # Capacity is back: the same id runs now (on the gateway that refused it), with its lease.
    status, answer = post(a.url, key, {"prompt": "x", "max_tokens": 2, "request_id": rid})
    assert status == 200, answer
    status, answer = post(b.url, key, {"prompt": "x", "max_tokens": 2})
    assert status == 200, "the third request of the minute: busy refusals used none"
    status, answer = post(b.url, key, {"prompt": "x", "max_tokens": 2})
    assert status == 429 and answer["error"]["code"] == "rate_limit_exceeded", answer


# Item 9 ---------------------------------------------------------------------------------------

def test_a_refused_attach_is_not_replayed_by_the_follower(make_node, redis_url):
    f = Fleet(make_node, redis_url, "--model-ttft-ms", "20", "--model-token-ms", "40", "--model-jitter", "0")
    a, b = f.gateway(), f.gateway()
    f.worker()
    key = make_key("hard-attach-" + uuid.uuid4().hex[:6])
    rid = "crowd-" + uuid.uuid4().hex
    body = {"prompt": "The lighthouse", "max_tokens": 25, "request_id": rid, "seed": 5, "stream": True}
    conns = []
    for _ in range(32):  # the holder's limit of attached clients
        c = http.client.HTTPConnection(a.host, a.port, timeout=30)
        c.request("POST", "/v1/completions", json.dumps(body), {"Content-Type": "application/json", "Authorization": f"Bearer {key}"})
        conns.append(c)
    responses = [c.getresponse() for c in conns]
    assert all(r.status == 200 for r in responses), [(r.status, r.read()[:300]) for r in responses if r.status != 200]
    status, refused = post(b.url, key, dict(body, stream=False))
    assert status == 400 and "too many clients" in refused["error"]["message"], refused
    texts = [r.read().decode() for r in responses]
    assert all("[DONE]" in t for t in texts)
    # The holder replays the real result; so must the gateway that was refused a moment ago.
    status, held = post(a.url, key, dict(body, stream=False))
    assert status == 200, held
    status, followed = post(b.url, key, dict(body, stream=False))
    assert status == 200 and followed["choices"][0]["text"] == held["choices"][0]["text"], followed


# Item 12 ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("user,words", [
    ("evil\nuser 7 bob", "--user: only visible characters"),
    ("tab\tbed", "--user: only visible characters"),
    ("sp ace", "--user: only visible characters"),
    ("bell\x07", "--user: only visible characters"),
    ("x" * 10_000, "--user: at most 200 bytes (this one has 10000)"),
], ids=["newline", "tab", "space", "bell", "10KB"])
def test_user_names_with_control_characters_or_too_long_are_refused(user, words, redis_url):
    for args in (["keys", "create", "--user", user], ["quota", "set", "--user", user, "--rpm", "5"],
                 ["quota", "get", "--user", user], ["keys", "list", "--user", user]):
        out = subprocess.run([BINARY, "admin", *args], capture_output=True, text=True, cwd=ROOT, timeout=30,
                             env=dict(os.environ, REDIS_URL=redis_url))
        assert out.returncode == 2 and words in out.stderr, (args, out.returncode, out.stderr)
    listed = subprocess.run([BINARY, "admin", "keys", "list"], capture_output=True, text=True, cwd=ROOT, timeout=30)
    assert listed.returncode == 0 and not any(line.startswith("user 7 bob") for line in listed.stdout.splitlines())


def test_a_bad_name_already_in_the_database_is_printed_escaped_and_is_no_identity(node):
    """Rows written by hand or by an older version: `keys list` cannot forge a line with them, and a
    key whose user breaks the rule authenticates nobody."""
    import hashlib
    key = "pgk_legacy" + uuid.uuid4().hex
    user = "legacy-" + uuid.uuid4().hex[:6] + "\nforged 1 line"
    escaped = user.replace("\n", "\\n")
    sql = ("INSERT INTO api_keys (key_hash, prefix, user_id) VALUES "
           f"(decode('{hashlib.sha256(key.encode()).hexdigest()}', 'hex'), '{key[:12]}', E'{escaped}')")
    out = subprocess.run(["psql", os.environ["DATABASE_URL"], "-c", sql], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    listed = subprocess.run([BINARY, "admin", "keys", "list"], capture_output=True, text=True, cwd=ROOT, timeout=30)
    assert listed.returncode == 0
    assert not any(line.startswith("forged 1 line") for line in listed.stdout.splitlines()), listed.stdout
    assert user.replace("\n", "\\n") in listed.stdout
    req = urllib.request.Request(node.url + "/v1/models", headers={"Authorization": f"Bearer {key}"})
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=5)
    assert e.value.code == 401


# Noted: /readyz while Redis refuses writes -----------------------------------------------------

def test_readyz_says_when_redis_refuses_writes(make_node, redis_url):
    node = make_node("--redis-url", redis_url)
    key = make_key("hard-oom-" + uuid.uuid4().hex[:6])
    before = json.loads(urllib.request.urlopen(node.url + "/readyz", timeout=5).read())
    assert before["status"] == "ready"
    redis_cli(redis_url, "CONFIG", "SET", "maxmemory-policy", "noeviction")
    redis_cli(redis_url, "CONFIG", "SET", "maxmemory", "1")
    try:
        status, _ = post(node.url, key, {"prompt": "x", "max_tokens": 1})
        ready = json.loads(urllib.request.urlopen(node.url + "/readyz", timeout=5).read())
        assert ready == {"status": "degraded", "redis": "refusing writes"}, (status, ready)
    finally:
        redis_cli(redis_url, "CONFIG", "SET", "maxmemory", "0")


# Items 4 and 5, and the noted outage behaviours ------------------------------------------------

def commandstat(redis_url, command):
    for line in redis_cli(redis_url, "INFO", "commandstats").splitlines():
        if line.startswith(f"cmdstat_{command}:"):
            return int(line.split("calls=")[1].split(",")[0])
    return 0


def test_outbox_bounds_refuse_cheaply_and_deletes_say_they_are_unverified(redis_url):
    from test_preset_outage import Database, api, nodes
    db = Database()
    ns = []
    try:
        ns = nodes(db, 1, "--outbox-max-writes", "3", "--outbox-max-user-bytes", "80000")
        n = ns[0]
        count_key, bytes_key, other = db.key("hard-outbox-n"), db.key("hard-outbox-b"), db.key("hard-outbox-d")
        for key in (count_key, bytes_key):
            for i in range(3):  # cached while the database is up
                status, _, _ = api(n, "POST", "/v1/presets", key, {"name": f"seed {i}", "prompt": "p" * 30000})
                assert status == 201
        assert api(n, "GET", "/v1/presets", other)[0] == 200  # its identity is known before the outage
        db.run("stop")
        # The count bound: three queued writes, then a clear 503.
        for i in range(3):
            status, body, _ = api(n, "POST", "/v1/presets", count_key, {"name": f"queued {i}", "prompt": "small"})
            assert status == 202 and body["pending"] is True, body
        hvals = commandstat(redis_url, "hvals")
        for i in range(20):
            status, body, _ = api(n, "POST", "/v1/presets", count_key, {"name": f"over {i}", "prompt": "p" * 30000})
            assert status == 503 and body["error"]["code"] == "presets_degraded", body
            assert "too many preset changes waiting" in body["error"]["message"], body
        # Item 5: a refusal never reads the user's cached presets (that read was 65-110 ms each).
        assert commandstat(redis_url, "hvals") == hvals
        # The byte bound: two writes of 30 KB fit in 80,000 bytes, the third does not.
        for i in range(2):
            status, body, _ = api(n, "POST", "/v1/presets", bytes_key, {"name": f"big {i}", "prompt": "q" * 30000})
            assert status == 202, body
        status, body, _ = api(n, "POST", "/v1/presets", bytes_key, {"name": "big 2", "prompt": "q" * 30000})
        assert status == 503 and "too large together" in body["error"]["message"], body
        metrics = urllib.request.urlopen(n.url + "/metrics", timeout=5).read().decode()
        assert 'playground_preset_writes_refused_full_total{bound="user_count"} 20' in metrics
        assert 'playground_preset_writes_refused_full_total{bound="user_bytes"} 1' in metrics
        # A delete of a preset the cache does not know is queued, and says it could not be checked.
        unknown = str(uuid.uuid4())
        status, body, _ = api(n, "DELETE", f"/v1/presets/{unknown}", other)
        assert status == 202 and body["pending"] is True and body["verified"] is False and "if the preset exists" in body["message"], body
        time.sleep(3)  # the revocation feed retries twice a second meanwhile
    finally:
        for x in ns:
            x.stop()
        db.destroy()
    # The feed's warning is rate-limited (it was logged two or three times a second).
    with open(ns[0].log.name) as f:
        warnings = [l for l in f if "revocation feed down" in l]
    assert 1 <= len(warnings) <= 2, warnings
