"""Operations: /healthz, /readyz, /metrics, JSON logs, SIGTERM drain, and the model server's fault knobs."""
import json
import signal
import threading
import time
import urllib.request
import uuid

import openai
import pytest


def get(url):
    try:
        r = urllib.request.urlopen(url, timeout=5)
        return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_health_ready_and_metrics(node):
    assert get(node.url + "/healthz") == (200, '{"status":"ok"}')
    assert get(node.url + "/readyz") == (200, '{"status":"ready"}')
    client = openai.OpenAI(base_url=node.url + "/v1", api_key=node.key, max_retries=0)
    client.completions.create(model="builtin", prompt="The cat", max_tokens=4)
    status, text = get(node.url + "/metrics")
    assert status == 200
    for name in ("playground_ws_connections", "playground_queue_length", "playground_active_generations",
                 "playground_tokens_streamed_total", 'playground_completions_total{outcome="length"}',
                 "playground_ttft_ms_bucket", "playground_completion_total_ms_count"):
        assert name in text, name
    count = [l for l in text.splitlines() if l.startswith("playground_ttft_ms_count")][0]
    assert int(count.split()[1]) >= 1


def test_json_logs_carry_request_id(make_node):
    n = make_node("--model-ttft-ms", "0", "--model-token-ms", "0", "--log-level", "info")
    rid = "log-" + uuid.uuid4().hex
    client = openai.OpenAI(base_url=n.url + "/v1", api_key=n.key, max_retries=0)
    client.completions.create(model="builtin", prompt="The cat", max_tokens=3, extra_body={"request_id": rid})
    time.sleep(0.2)
    n.log.flush()
    lines = [json.loads(l) for l in open(n.log.name) if l.startswith("{")]
    mine = [l for l in lines if l.get("request_id") == rid]
    assert mine and mine[0]["msg"] == "completion finished" and mine[0]["finish_reason"] == "length"
    assert all("ts_ms" in l and "level" in l for l in lines)


def test_sigterm_drains_running_streams_then_exits_zero(make_node):
    n = make_node("--model-ttft-ms", "50", "--model-token-ms", "50", "--model-jitter", "0", "--drain-seconds", "10")
    client = openai.OpenAI(base_url=n.url + "/v1", api_key=n.key, max_retries=0, timeout=30)
    result = {}

    def stream():
        chunks = list(client.completions.create(model="builtin", prompt="The lighthouse", max_tokens=25,
                                                temperature=0, stream=True, stop=None))
        result["finish"] = chunks[-1].choices[0].finish_reason
        result["tokens"] = sum(1 for c in chunks if c.choices[0].text)

    t = threading.Thread(target=stream)
    t.start()
    time.sleep(0.4)
    n.proc.send_signal(signal.SIGTERM)
    time.sleep(0.2)
    # Not ready any more, and new completions are refused (the listener may already be gone).
    try:
        assert get(n.url + "/readyz")[0] == 503
    except urllib.error.URLError:
        pass
    t.join(20)
    assert result.get("finish") in ("stop", "length"), result
    assert n.proc.wait(15) == 0


def test_model_server_serves_the_openai_api(make_node):
    m = make_node("--model-ttft-ms", "10", "--tokens-per-second", "500", command="model-server")
    client = openai.OpenAI(base_url=m.url + "/v1", api_key=m.key, max_retries=0)
    r = client.completions.create(model="builtin", prompt="The river", max_tokens=6, seed=1)
    assert r.choices[0].text
    assert [x.id for x in client.models.list().data] == ["builtin"]
    assert get(m.url + "/v1/ws")[0] == 404, "the model server has no playground routes"


def test_model_server_error_rate(make_node):
    m = make_node("--error-rate", "1", "--model-ttft-ms", "5", command="model-server")
    client = openai.OpenAI(base_url=m.url + "/v1", api_key=m.key, max_retries=0)
    with pytest.raises(openai.InternalServerError) as e:
        client.completions.create(model="builtin", prompt="x", max_tokens=5)
    assert e.value.status_code == 503 and e.value.body["code"] == "model_unavailable"


def test_model_server_midstream_failure_is_an_error_not_a_silent_end(make_node):
    m = make_node("--midstream-failure-rate", "1", "--model-ttft-ms", "5", "--model-token-ms", "5", command="model-server")
    client = openai.OpenAI(base_url=m.url + "/v1", api_key=m.key, max_retries=0)
    got = []
    with pytest.raises((openai.APIError, Exception)) as e:
        for c in client.completions.create(model="builtin", prompt="x", max_tokens=50, stream=True):
            got.append(c)
    assert 1 <= len(got) <= 3
    assert not any(c.choices[0].finish_reason for c in got), "no end marker was sent"


def test_model_server_stall_keeps_the_connection_open(make_node):
    m = make_node("--stall-rate", "1", "--model-ttft-ms", "5", "--model-token-ms", "5", command="model-server")
    client = openai.OpenAI(base_url=m.url + "/v1", api_key=m.key, max_retries=0, timeout=1.0)
    got = []
    with pytest.raises(openai.APITimeoutError):
        for c in client.completions.create(model="builtin", prompt="x", max_tokens=50, stream=True):
            got.append(c)
    assert 1 <= len(got) <= 3


def test_sigterm_says_goodbye_to_websockets(make_node):
    import asyncio
    import websockets
    from websockets.exceptions import ConnectionClosed
    from conftest import auth
    n = make_node("--drain-seconds", "5")

    async def go():
        async with websockets.connect(n.ws_url, additional_headers=auth(n.key)) as ws:
            await ws.send(json.dumps({"id": 1, "method": "GET", "path": "/v1/models"}))
            assert json.loads(await ws.recv())["status"] == 200
            n.proc.send_signal(signal.SIGTERM)
            with pytest.raises(ConnectionClosed) as e:
                await asyncio.wait_for(ws.recv(), 5)
            assert e.value.rcvd is not None and e.value.rcvd.code == 1001
    asyncio.run(go())
    assert n.proc.wait(10) == 0


def test_sse_keepalive_comments_during_a_long_ttft(make_node):
    import socket
    m = make_node("--model-ttft-ms", "1200", "--model-jitter", "0", "--sse-keepalive-ms", "300", command="model-server")
    body = json.dumps({"model": "builtin", "prompt": "The sea", "max_tokens": 2, "stream": True}).encode()
    s = socket.create_connection((m.host, m.port), timeout=5)
    s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\n"
              + b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    data = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    text = data.decode()
    assert text.count(":keepalive") >= 2, text[:400]
    assert text.index(":keepalive") < text.index('"text"'), "keepalives come before the first token"
    assert "data: [DONE]" in text


@pytest.mark.parametrize("args,env,says", [
    (["serve", "--port", "70000"], {}, "--port"),
    (["serve", "--loops", "0"], {}, "--loops"),
    (["serve", "--request-timeout-ms", "99999999999999"], {}, "--request-timeout-ms"),
    (["serve", "--log-level", "chatty"], {}, "log-level"),
    (["serve", "--port", "0"], {"DATABASE_URL": ""}, "DATABASE_URL"),
    (["serve", "--port", "0", "--auth", "maybe"], {}, "--auth"),
    (["model-server", "--error-rate", "1.5"], {}, "error-rate"),
    (["admin", "keys", "create"], {}, "--user"),
    (["admin", "keys", "revoke"], {}, "revoke"),
    (["admin", "nothing"], {}, "usage"),
    (["frobnicate"], {}, "unknown command"),
])
def test_bad_command_lines_fail_clearly(args, env, says):
    import os
    import subprocess
    from conftest import BINARY, ROOT
    e = dict(os.environ, **env)
    if env.get("DATABASE_URL") == "":
        del e["DATABASE_URL"]
    out = subprocess.run([BINARY, *args], capture_output=True, text=True, cwd=ROOT, env=e, timeout=20)
    assert out.returncode == 2, (out.returncode, out.stderr[-300:])
    assert says in out.stderr, out.stderr[-300:]
