"""The model proxy (issue 10) against several `playground model-server` processes standing in for
model regions: routing around a killed region (breaker open within 1 s, closed again after it
returns), fallback models, mid-stream failures, throttling, hedging, and the official SDK through it.
"""
import json
import os
import signal
import tempfile
import threading
import time
import urllib.request

import openai

from conftest import Node, free_port


class Region:
    """A model-server on a fixed port (so it can come back where it was)."""

    def __init__(self, *flags, port=None):
        self.port = port or free_port()
        self.flags = flags
        self.start()

    def start(self):
        self.node = Node("--port", str(self.port), "--model-ttft-ms", "20", "--model-token-ms", "4", "--model-jitter", "0",
                         *self.flags, command="model-server", redis=False)

    def kill(self):
        os.kill(self.node.proc.pid, signal.SIGKILL)
        self.node.proc.wait()
        self.node.log.close()

    def stop(self):
        if self.node.proc.poll() is None:
            self.node.stop()


def models_file(regions, aliases, **extra):
    ups = [{"name": name, "base_url": f"http://127.0.0.1:{r.port}/v1", "model": "builtin", "region": name, **opts}
           for name, (r, opts) in regions.items()]
    fd, path = tempfile.mkstemp(prefix="models-", suffix=".json")
    with os.fdopen(fd, "w") as f:
        json.dump({"upstreams": ups, "aliases": aliases, **extra}, f)
    return path


def proxy(path, *flags):
    return Node("--models", path, "--auth", "off", "--rate-limit-rpm", "0", "--max-concurrent", "0", *flags, redis=False)


def metric(node, name, upstream):
    text = urllib.request.urlopen(node.url + "/metrics", timeout=5).read().decode()
    for line in text.splitlines():
        if line.startswith(f'{name}{{upstream="{upstream}"'):
            return float(line.split()[-1])
    raise AssertionError(f"{name} for {upstream} not in /metrics")


def client(node, **kw):
    return openai.OpenAI(base_url=node.url + "/v1", api_key="unused", max_retries=0, timeout=20, **kw)


def test_a_killed_region_is_routed_around_and_comes_back():
    east, west, small = Region(), Region(), Region()
    path = models_file({"east": (east, {}), "west": (west, {}), "small": (small, {})}, {"chat": [["east", "west"], ["small"]]},
                       breaker={"consecutive_failures": 3, "open_ms": 500, "probes_to_close": 2})
    node = proxy(path)
    try:
        c = client(node)
        results = {"ok": 0, "failed": []}
        upstreams = {}
        lock = threading.Lock()
        stop = threading.Event()

        def load():
            while not stop.is_set():
                try:
                    r = c.completions.create(model="chat", prompt="The sea", max_tokens=6)
                    used = (r.model_extra or {}).get("timings", {}).get("upstream")
                    with lock:
                        results["ok"] += 1
                        upstreams[used] = upstreams.get(used, 0) + 1
                except Exception as e:  # noqa: BLE001 — every failure is counted and shown
                    with lock:
                        results["failed"].append(repr(e))

        threads = [threading.Thread(target=load) for _ in range(6)]
        for t in threads:
            t.start()
        time.sleep(2)
        assert metric(node, "playground_upstream_requests_total", "east") > 0, "east carried traffic before"
        east.kill()
        killed = time.time()
        opened = None
        while time.time() - killed < 5:
            if metric(node, "playground_upstream_breaker_state", "east") == 2:
                opened = time.time() - killed
                break
            time.sleep(0.02)
        assert opened is not None and opened <= 1.0, f"east's breaker opened after {opened}s"
        time.sleep(2)
        east.start()
        back = time.time()
        closed = None
        while time.time() - back < 15:
            if metric(node, "playground_upstream_breaker_state", "east") == 0:
                closed = time.time() - back
                break
            time.sleep(0.05)
        assert closed is not None, "east's breaker closed again after it came back"
        before = metric(node, "playground_upstream_requests_total", "east")
        time.sleep(1.5)
        stop.set()
        for t in threads:
            t.join()
        assert metric(node, "playground_upstream_requests_total", "east") > before, "traffic returned to east"
        total = results["ok"] + len(results["failed"])
        assert total >= 500, total
        assert results["ok"] / total >= 0.999, (results["ok"], total, results["failed"][:3])
        assert metric(node, "playground_upstream_breaker_opened_total", "east") >= 1
        assert upstreams.get("small", 0) == 0, "the fallback was not needed while west was up"
        print(f"kill east: {results['ok']}/{total} succeeded; breaker open after {opened:.3f}s, closed {closed:.2f}s after return; {upstreams}")
    finally:
        node.stop()
        for r in (east, west, small):
            r.stop()


def test_fallback_model_when_every_region_is_down_and_the_sdk_streams_through():
    east, west, small = Region(), Region(), Region()
    path = models_file({"east": (east, {}), "west": (west, {}), "small": (small, {"api": "chat"})}, {"chat": [["east", "west"], ["small"]]})
    node = proxy(path)
    try:
        c = client(node)
        ids = [m.id for m in c.models.list().data]
        assert "chat" in ids and "builtin" in ids
        # The SDK, streaming and not, unchanged.
        chunks = list(c.completions.create(model="chat", prompt="The sea was calm in the morning, and", max_tokens=8, stream=True, seed=3))
        text = "".join(ch.choices[0].text for ch in chunks if ch.choices)
        assert text.strip() and chunks[-1].choices[0].finish_reason in ("stop", "length")
        chat = c.chat.completions.create(model="chat", messages=[{"role": "user", "content": "The sea"}], max_tokens=5)
        assert chat.choices[0].message.content
        east.kill()
        west.kill()
        for _ in range(10):
            r = c.completions.create(model="chat", prompt="The sea", max_tokens=4)
            assert r.model_extra["timings"]["upstream"] == "small", r.model_extra
            assert r.choices[0].text
        # Unknown model names are the client's mistake, named.
        try:
            c.completions.create(model="nope", prompt="x", max_tokens=2)
            raise AssertionError("accepted an unknown model")
        except openai.BadRequestError as e:
            assert "model" in str(e)
        small.kill()
        try:
            c.completions.create(model="chat", prompt="x", max_tokens=2)
            raise AssertionError("answered with every upstream down")
        except openai.APIStatusError as e:
            assert e.status_code == 503 and e.body["code"] == "model_unavailable", e.body
    finally:
        node.stop()
        for r in (east, west, small):
            r.stop()


def test_midstream_failure_is_an_error_with_the_tokens_so_far():
    flaky = Region("--midstream-failure-rate", "1")
    path = models_file({"flaky": (flaky, {})}, {"m": [["flaky"]]})
    node = proxy(path)
    try:
        c = client(node)
        got, error = [], None
        try:
            for ch in c.completions.create(model="m", prompt="The sea was calm in the morning, and", max_tokens=40, stream=True, seed=2):
                if ch.choices:
                    got.append(ch.choices[0].text)
        except openai.APIError as e:
            error = e
        assert error is not None, f"a broken stream ended silently after {got}"
        assert error.code == "generation_interrupted" and "after 2 tokens" in str(error) or "tokens" in str(error), (error.code, str(error))
        assert error.code == "generation_interrupted", error.code
        assert len([t for t in got if t]) >= 1, "the tokens before the break were delivered"
        # Not streamed: nothing reached the client, so it is retried — here on nothing else: 503.
        try:
            c.completions.create(model="m", prompt="The sea", max_tokens=40)
            raise AssertionError("a broken answer passed as complete")
        except openai.APIStatusError as e:
            assert e.status_code == 503
    finally:
        node.stop()
        flaky.stop()


def test_throttling_lowers_weight_without_tripping_the_breaker():
    storm, calm = Region("--throttle-rate", "1"), Region()
    path = models_file({"storm": (storm, {}), "calm": (calm, {})}, {"m": [["storm", "calm"]]},
                       breaker={"consecutive_failures": 2, "open_ms": 1000, "probes_to_close": 1})
    node = proxy(path)
    try:
        c = client(node)
        for _ in range(60):
            r = c.completions.create(model="m", prompt="The sea", max_tokens=3)
            assert r.model_extra["timings"]["upstream"] == "calm"
        assert metric(node, "playground_upstream_throttled_total", "storm") >= 1
        assert metric(node, "playground_upstream_breaker_state", "storm") == 0, "429 is not a failure"
        assert metric(node, "playground_upstream_breaker_opened_total", "storm") == 0
        assert metric(node, "playground_upstream_errors_total", "storm") == 0
    finally:
        node.stop()
        storm.stop()
        calm.stop()


def test_hedging_cuts_the_tail_of_a_stalled_first_token():
    """Two regions, each late (600 ms) on 3% of first tokens. Same run, same requests: p99 TTFT with
    hedging (a first token later than the upstream's p95 goes to the other too; budget 15%)
    against without."""
    a = Region("--slow-first-token-rate", "0.03", "--slow-first-token-ms", "600")
    b = Region("--slow-first-token-rate", "0.03", "--slow-first-token-ms", "600")
    figures = {}
    try:
        for label, fraction in (("off", 0.0), ("on", 0.15)):
            path = models_file({"a": (a, {}), "b": (b, {})}, {"m": [["a", "b"]]}, hedge_fraction=fraction)
            node = proxy(path)
            try:
                c = client(node)
                ttfts = []
                for _ in range(300):
                    t0 = time.time()
                    stream = c.completions.create(model="m", prompt="The sea", max_tokens=2, stream=True)
                    first = None
                    for ch in stream:
                        if first is None and ch.choices and ch.choices[0].text:
                            first = time.time() - t0
                    ttfts.append(first)
                ttfts.sort()
                figures[label] = (ttfts[len(ttfts) // 2], ttfts[int(len(ttfts) * 0.99) - 1])
                if label == "on":
                    hedges = metric(node, "playground_upstream_hedges_total", "a") + metric(node, "playground_upstream_hedges_total", "b")
                    assert 0 < hedges <= 0.15 * 300 + 1, hedges
            finally:
                node.stop()
        print(f"TTFT p50/p99 hedging off {figures['off'][0]*1000:.0f}/{figures['off'][1]*1000:.0f} ms, "
              f"on {figures['on'][0]*1000:.0f}/{figures['on'][1]*1000:.0f} ms")
        assert figures["off"][1] > 0.5, figures
        assert figures["on"][1] < figures["off"][1] * 0.6, figures
    finally:
        a.stop()
        b.stop()


def test_a_bad_models_file_is_refused_naming_the_mistake():
    fd, path = tempfile.mkstemp(suffix=".json")
    with os.fdopen(fd, "w") as f:
        f.write('{"upstreams": [{"name": "a", "base_url": "http://127.0.0.1:1/v1", "model": "m"}], "aliases": {"x": [["zz"]]}}')
    try:
        Node("--models", path, redis=False)
        raise AssertionError("started with a bad models file")
    except RuntimeError:
        pass
    import subprocess
    from conftest import BINARY
    out = subprocess.run([BINARY, "serve", "--port", "0", "--models", path], capture_output=True, text=True, timeout=20)
    assert out.returncode == 2 and 'no upstream named "zz"' in out.stderr, (out.returncode, out.stderr)


def test_idle_upstreams_are_warmed_and_open_breakers_probed_by_warmups():
    warm, spare = Region(), Region()
    path = models_file({"warm": (warm, {}), "spare": (spare, {})}, {"m": [["warm"]], "other": [["spare"]]}, warmup_idle_ms=300,
                       breaker={"consecutive_failures": 1, "open_ms": 200, "probes_to_close": 2})
    node = proxy(path)
    try:
        c = client(node)
        for _ in range(3):
            c.completions.create(model="m", prompt="The sea", max_tokens=2)
        time.sleep(1.2)
        assert metric(node, "playground_upstream_warmups_total", "warm") >= 2, "warmed while idle"
        assert metric(node, "playground_upstream_warmups_total", "spare") == 0, "never used: never warmed"
        # A dead upstream is probed by warmups, not by users' requests; it comes back by itself.
        warm.kill()
        try:
            c.completions.create(model="m", prompt="The sea", max_tokens=2)
        except openai.APIStatusError:
            pass
        time.sleep(0.6)
        assert metric(node, "playground_upstream_breaker_state", "warm") == 2
        probes = metric(node, "playground_upstream_warmups_total", "warm")
        time.sleep(0.8)
        assert metric(node, "playground_upstream_warmups_total", "warm") > probes, "probed while open"
        warm.start()
        deadline = time.time() + 10
        while metric(node, "playground_upstream_breaker_state", "warm") != 0:
            assert time.time() < deadline, "closed again by warmup probes"
            time.sleep(0.05)
        assert c.completions.create(model="m", prompt="The sea", max_tokens=2).choices[0].text
    finally:
        node.stop()
        warm.stop()
        spare.stop()


def test_fleet_worker_streams_from_upstreams_and_admin_status_shows_them():
    import subprocess
    import uuid
    from conftest import BINARY
    east = Region()
    path = models_file({"east": (east, {})}, {"chat": [["east"]]})
    fleet = "mp" + uuid.uuid4().hex[:10]
    gateway = Node("--fleet", fleet, "--models", path, "--auth", "off", command="gateway")
    worker = Node("--fleet", fleet, "--models", path, command="worker")
    try:
        c = client(gateway)
        text = "".join(ch.choices[0].text for ch in c.completions.create(model="chat", prompt="The sea", max_tokens=5, stream=True) if ch.choices)
        assert text.strip()
        time.sleep(2.5)
        out = subprocess.run([BINARY, "admin", "status", "--fleet", fleet], capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, out.stderr
        assert "model upstreams:" in out.stdout, out.stdout
        line = next(l for l in out.stdout.splitlines() if l.strip().startswith("east"))
        assert "closed" in line and "requests 1" in line, line
    finally:
        gateway.stop()
        worker.stop()
        east.stop()


class TLSFront:
    """A TLS-terminating forwarder (Python's ssl) in front of a model-server: the local TLS
    upstream, with a certificate for `names` signed by a throw-away CA."""

    def __init__(self, backend_port, names):
        import socket
        import ssl
        import subprocess
        self.dir = tempfile.mkdtemp(prefix="tls-")
        d = self.dir
        san = ",".join(("IP:" if n[0].isdigit() else "DNS:") + n for n in names)

        def run(*args):
            subprocess.run(args, check=True, capture_output=True, cwd=d)
        run("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=test CA")
        run("openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", "srv.key", "-out", "srv.csr", "-subj", f"/CN={names[0]}")
        with open(os.path.join(d, "ext.cnf"), "w") as f:
            f.write(f"subjectAltName={san}\n")
        run("openssl", "x509", "-req", "-in", "srv.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-out", "srv.pem", "-days", "2",
            "-extfile", "ext.cnf")
        self.ca = os.path.join(d, "ca.pem")
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(os.path.join(d, "srv.pem"), os.path.join(d, "srv.key"))
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        self.stopped = False

        def pipe(a, b):
            try:
                while True:
                    data = a.recv(65536)
                    if not data:
                        break
                    b.sendall(data)
            except OSError:
                pass
            finally:
                for s in (a, b):
                    try:
                        s.close()
                    except OSError:
                        pass

        def serve():
            while not self.stopped:
                try:
                    raw, _ = self.listener.accept()
                except OSError:
                    return
                try:
                    tls = ctx.wrap_socket(raw, server_side=True)
                except (ssl.SSLError, OSError):
                    raw.close()
                    continue
                back = socket.create_connection(("127.0.0.1", backend_port))
                threading.Thread(target=pipe, args=(tls, back), daemon=True).start()
                threading.Thread(target=pipe, args=(back, tls), daemon=True).start()
        threading.Thread(target=serve, daemon=True).start()

    def stop(self):
        self.stopped = True
        self.listener.close()


def test_tls_upstream_with_its_ca_and_a_wrong_host_name_refused():
    region = Region()
    front = TLSFront(region.port, ["localhost"])
    try:
        path = models_file({"secure": (region, {})}, {"m": [["secure"]]})
        with open(path) as f:
            cfg = json.load(f)
        cfg["upstreams"][0]["base_url"] = f"https://localhost:{front.port}/v1"
        cfg["upstreams"][0]["ca_file"] = front.ca
        cfg["upstreams"].append({"name": "wrongname", "base_url": f"https://127.0.0.1:{front.port}/v1", "model": "builtin", "ca_file": front.ca})
        cfg["upstreams"].append({"name": "untrusted", "base_url": f"https://localhost:{front.port}/v1", "model": "builtin"})
        cfg["aliases"] = {"m": [["secure"]], "wrong": [["wrongname"]], "untrusted": [["untrusted"]]}
        with open(path, "w") as f:
            json.dump(cfg, f)
        node = proxy(path)
        try:
            c = client(node)
            text = "".join(ch.choices[0].text for ch in c.completions.create(model="m", prompt="The sea", max_tokens=6, stream=True) if ch.choices)
            assert text.strip(), "streamed over TLS"
            r = c.completions.create(model="m", prompt="The sea", max_tokens=3)
            assert r.model_extra["timings"]["upstream"] == "secure"
            for alias, words in (("wrong", "not trusted"), ("untrusted", "not trusted")):
                try:
                    c.completions.create(model=alias, prompt="x", max_tokens=2)
                    raise AssertionError(f"{alias}: answered over an unverified TLS connection")
                except openai.APIStatusError as e:
                    assert e.status_code == 503 and words in str(e) and "certificate" in str(e), str(e)
        finally:
            node.stop()
    finally:
        front.stop()
        region.stop()


def test_keepalives_flow_while_the_first_token_is_late():
    import socket
    slow = Region("--slow-first-token-rate", "1", "--slow-first-token-ms", "1500")
    path = models_file({"slow": (slow, {})}, {"m": [["slow"]]})
    node = proxy(path, "--sse-keepalive-ms", "300")
    try:
        s = socket.create_connection(("127.0.0.1", node.port), timeout=10)
        body = json.dumps({"model": "m", "prompt": "The sea", "max_tokens": 2, "stream": True}).encode()
        s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: "
                  + str(len(body)).encode() + b"\r\n\r\n" + body)
        data = b""
        while b"data: [DONE]" not in data:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        s.close()
        head, _, rest = data.partition(b"\r\n\r\n")
        first_data = rest.find(b"data: {")
        # 1.5 s late at one comment per 0.3 s: several keepalives before the first token.
        assert first_data > 0 and rest[:first_data].count(b":keepalive") >= 3, rest[:300]
    finally:
        node.stop()
        slow.stop()


def test_traffic_shifts_to_the_faster_region():
    slow, fast = Region("--model-ttft-ms", "250"), Region()
    path = models_file({"slow": (slow, {}), "fast": (fast, {})}, {"m": [["slow", "fast"]]}, hedge_fraction=0)
    node = proxy(path)
    try:
        c = client(node)
        used = []
        lock = threading.Lock()
        stop = threading.Event()

        def load():
            while not stop.is_set():
                r = c.completions.create(model="m", prompt="The sea", max_tokens=3)
                with lock:
                    used.append((time.time(), r.model_extra["timings"]["upstream"]))
        threads = [threading.Thread(target=load) for _ in range(4)]
        t0 = time.time()
        for t in threads:
            t.start()
        time.sleep(4)
        stop.set()
        for t in threads:
            t.join()
        late = [u for t, u in used if t - t0 > 2]
        share = late.count("fast") / len(late)
        assert share >= 0.9, (share, len(late))
        print(f"after 2 s, {share:.1%} of {len(late)} completions went to the fast region")
    finally:
        node.stop()
        slow.stop()
        fast.stop()


def test_cancelling_a_stream_closes_the_upstream_stream_at_once():
    import socket
    region = Region("--model-token-ms", "30")
    path = models_file({"r": (region, {})}, {"m": [["r"]]})
    node = proxy(path)
    try:
        def cancelled():
            text = urllib.request.urlopen(f"http://127.0.0.1:{region.port}/metrics", timeout=5).read().decode()
            return int(next(float(l.split()[-1]) for l in text.splitlines() if l.startswith('playground_completions_total{outcome="cancelled"}')))
        before = cancelled()
        s = socket.create_connection(("127.0.0.1", node.port), timeout=10)
        body = json.dumps({"model": "m", "prompt": "The sea was calm in the morning, and", "max_tokens": 300, "stream": True, "seed": 2}).encode()
        s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: "
                  + str(len(body)).encode() + b"\r\n\r\n" + body)
        data = b""
        while data.count(b"data: {") < 3:
            data += s.recv(65536)
        s.close()  # the client goes away mid-stream
        t0 = time.time()
        while cancelled() == before:
            assert time.time() - t0 < 2, "the upstream stream was not closed"
            time.sleep(0.05)
        print(f"upstream saw the cancel after {time.time() - t0:.3f}s")
    finally:
        node.stop()
        region.stop()


def test_an_upstream_that_ignores_max_tokens_is_cut_there():
    """A hand-written upstream streams 50 tokens whatever it is asked: the client gets max_tokens."""
    import http.server
    import socketserver

    class Endless(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a):
            pass

        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Connection", "close")
            self.end_headers()
            try:
                for i in range(50):
                    self.wfile.write(f'data: {{"choices":[{{"text":" w{i}","finish_reason":null}}]}}\n\n'.encode())
                    self.wfile.flush()
                self.wfile.write(b"data: [DONE]\n\n")
            except OSError:
                pass

    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Endless)
    threading.Thread(target=server.serve_forever, daemon=True).start()

    class Fake:
        port = server.server_address[1]
    path = models_file({"endless": (Fake, {})}, {"m": [["endless"]]})
    node = proxy(path)
    try:
        c = client(node)
        r = c.completions.create(model="m", prompt="x", max_tokens=5)
        assert r.choices[0].text == " w0 w1 w2 w3 w4" and r.choices[0].finish_reason == "length", r
        chunks = [ch.choices[0].text for ch in c.completions.create(model="m", prompt="x", max_tokens=7, stream=True) if ch.choices]
        assert "".join(chunks) == "".join(f" w{i}" for i in range(7)), chunks
    finally:
        node.stop()
        server.shutdown()
