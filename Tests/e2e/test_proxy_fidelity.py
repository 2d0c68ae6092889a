"""OpenAI API fidelity through the model proxy (issue 18): the official SDK talks to a node whose
models file points at a scripted upstream (`scripted_upstream.py`) that records what it is sent
and streams tool calls, logprobs, refusals, several choices, unknown fields, usage chunks and
errors as OpenAI does. What the client sent reaches the upstream as sent; what the upstream sends
reaches the client as sent."""
import json
import os
import tempfile
import urllib.error
import urllib.request

import openai
import pytest
from websockets.sync.client import connect

from conftest import Node, free_port
from scripted_upstream import ScriptedUpstream

SCENARIOS = ["echo", "tools", "toolsmix", "logprobs", "json", "refusal", "n2", "extra", "reason", "nlong", "azure",
             "e400", "e401", "e402", "e404", "e422", "e500"]


@pytest.fixture(scope="module")
def upstream():
    u = ScriptedUpstream()
    yield u
    u.close()


@pytest.fixture(scope="module")
def node(upstream):
    ups = [{"name": f"u-{s}", "base_url": upstream.base_url, "model": s, "api": "chat"} for s in SCENARIOS]
    # A second upstream for e400: a request the upstream found wrong is not tried elsewhere.
    ups.append({"name": "u-e400-b", "base_url": upstream.base_url, "model": "e400", "api": "chat"})
    ups.append({"name": "u-text", "base_url": upstream.base_url, "model": "echo"})
    ups.append({"name": "u-dead", "base_url": f"http://127.0.0.1:{free_port()}/v1", "model": "echo", "api": "chat"})
    aliases = {s: [[f"u-{s}"]] for s in SCENARIOS}
    aliases["e400"] = [["u-e400", "u-e400-b"]]
    aliases["text"] = [["u-text"]]
    aliases["dead"] = [["u-dead"]]
    aliases["e402"] = [["u-e402"], ["u-echo"]]  # the operator's account is out of credit: the next group serves
    fd, path = tempfile.mkstemp(prefix="models-fidelity-", suffix=".json")
    with os.fdopen(fd, "w") as f:
        json.dump({"upstreams": ups, "aliases": aliases, "hedge_fraction": 0,
                   "forwarding": {"deny_fields": ["service_tier"], "max_n": 4}}, f)
    n = Node("--models", path, "--auth", "off", "--rate-limit-rpm", "0", "--max-concurrent", "0", redis=False)
    yield n
    n.stop()


@pytest.fixture
def client(node, upstream):
    upstream.clear()
    return openai.OpenAI(base_url=node.url + "/v1", api_key="unused", max_retries=0, timeout=20)


def last_body(upstream):
    reqs = [r for r in upstream.recorded() if r["body"].get("max_tokens") != 1]  # not warm-ups
    assert reqs, "the upstream got no request"
    return reqs[-1]["body"]


TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
                                           "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                                          "required": ["city"]}, "strict": True}},
         {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {"tz": {"type": "string"}}}}}]
MESSAGES = [{"role": "developer", "content": "be brief"}, {"role": "user", "content": "weather in Paris, and the time?"}]
CALLS = [("call_a", "get_weather", '{"city": "Paris"}'), ("call_b", "get_time", '{"tz": "CET"}')]


def test_the_request_reaches_the_upstream_as_it_was_sent(client, upstream):
    sent = dict(model="tools", messages=MESSAGES, tools=TOOLS, tool_choice="auto", parallel_tool_calls=True, user="u-42",
                metadata={"trace": "t1"}, store=False, max_completion_tokens=64, top_logprobs=None)
    client.chat.completions.create(**sent, extra_body={"some_future_field": {"nested": [1, 2, 3]}, "reasoning_effort": "low"})
    body = last_body(upstream)
    assert body["model"] == "tools"
    for k in ("messages", "tools", "tool_choice", "parallel_tool_calls", "user", "metadata", "store", "max_completion_tokens"):
        assert body[k] == sent[k], k
    assert body["some_future_field"] == {"nested": [1, 2, 3]} and body["reasoning_effort"] == "low"
    # Nothing the client did not send is added but what the proxy owns.
    for k in ("temperature", "top_p", "seed", "max_tokens", "presence_penalty", "frequency_penalty"):
        assert k not in body, k
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert "request_id" not in body


def test_no_limit_from_the_client_gets_the_operators_cap_and_a_client_limit_is_kept(client, upstream):
    client.chat.completions.create(model="echo", messages=[{"role": "user", "content": "hi"}])
    assert last_body(upstream)["max_completion_tokens"] == 2048
    client.chat.completions.create(model="echo", messages=[{"role": "user", "content": "hi"}], max_tokens=5)
    body = last_body(upstream)
    assert body["max_tokens"] == 5 and "max_completion_tokens" not in body
    client.completions.create(model="text", prompt="The sea")
    body = last_body(upstream)
    assert body["prompt"] == "The sea" and body["max_tokens"] == 2048


def test_messages_verbatim_content_parts_and_a_tool_round_trip(client, upstream):
    messages = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "name": "ada", "content": [{"type": "text", "text": "What is in this picture?"},
                                                     {"type": "image_url", "image_url": {"url": "https://example.com/cat.png", "detail": "low"}},
                                                     {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}]},
        {"role": "assistant", "content": None, "refusal": None,
         "tool_calls": [{"id": "call_a", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
        {"role": "tool", "tool_call_id": "call_a", "content": "18 C, sunny"},
    ]
    r = client.chat.completions.create(model="echo", messages=messages, tools=TOOLS)
    assert r.choices[0].message.content == "Hello world"
    assert last_body(upstream)["messages"] == messages


@pytest.mark.parametrize("model", ["tools", "toolsmix"])
def test_streamed_parallel_tool_calls_in_order_and_with_interleaved_fragments(client, model):
    stream = client.chat.completions.create(model=model, messages=MESSAGES, tools=TOOLS, stream=True)
    calls, finish = {}, None
    for chunk in stream:
        assert chunk.id.startswith("chatcmpl-") and chunk.model == model and chunk.object == "chat.completion.chunk"
        for ch in chunk.choices:
            for tc in ch.delta.tool_calls or []:
                c = calls.setdefault(tc.index, {"id": None, "name": "", "arguments": ""})
                c["id"] = c["id"] or tc.id
                c["name"] += (tc.function.name or "") if tc.function else ""
                c["arguments"] += (tc.function.arguments or "") if tc.function else ""
            finish = ch.finish_reason or finish
    assert [(c["id"], c["name"], c["arguments"]) for _, c in sorted(calls.items())] == CALLS
    assert finish == "tool_calls"


@pytest.mark.parametrize("model", ["tools", "toolsmix"])
def test_non_streamed_tool_calls_are_put_together(client, model):
    r = client.chat.completions.create(model=model, messages=MESSAGES, tools=TOOLS)
    assert r.choices[0].finish_reason == "tool_calls"
    assert [(t.id, t.function.name, t.function.arguments) for t in r.choices[0].message.tool_calls] == CALLS
    assert all(t.type == "function" for t in r.choices[0].message.tool_calls)
    assert r.system_fingerprint == "fp_scripted"
    assert r.usage.prompt_tokens == 11 and r.usage.completion_tokens == 7, "usage comes from the upstream"


def test_the_sdk_stream_helper_reassembles_tool_calls(client):
    with client.chat.completions.stream(model="tools", messages=MESSAGES, tools=TOOLS) as stream:
        for _ in stream:
            pass
        final = stream.get_final_completion()
    calls = final.choices[0].message.tool_calls
    assert [(t.id, t.function.name, t.function.arguments) for t in calls] == CALLS
    assert final.choices[0].finish_reason == "tool_calls"


def test_structured_output_with_a_json_schema(client, upstream):
    schema = {"type": "json_schema", "json_schema": {"name": "person", "strict": True, "schema": {
        "type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
        "required": ["name", "age"], "additionalProperties": False}}}
    r = client.chat.completions.create(model="json", messages=[{"role": "user", "content": "Ada"}], response_format=schema)
    assert json.loads(r.choices[0].message.content) == {"name": "Ada", "age": 36}
    assert last_body(upstream)["response_format"] == schema


def test_logprobs_streamed_and_whole(client, upstream):
    r = client.chat.completions.create(model="logprobs", messages=[{"role": "user", "content": "hi"}], logprobs=True, top_logprobs=2)
    lp = r.choices[0].logprobs.content
    assert [t.token for t in lp] == ["Hello", " world"]
    assert lp[0].logprob == pytest.approx(-0.1) and len(lp[0].top_logprobs) == 2
    body = last_body(upstream)
    assert body["logprobs"] is True and body["top_logprobs"] == 2
    tokens = []
    for chunk in client.chat.completions.create(model="logprobs", messages=[{"role": "user", "content": "hi"}], logprobs=True, stream=True):
        for ch in chunk.choices:
            if ch.logprobs and ch.logprobs.content:
                tokens += [t.token for t in ch.logprobs.content]
    assert tokens == ["Hello", " world"]


def test_include_usage_gives_one_final_empty_choices_chunk_and_none_without(client):
    chunks = list(client.chat.completions.create(model="echo", messages=[{"role": "user", "content": "hi"}], stream=True,
                                                 stream_options={"include_usage": True}))
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens == 18
    assert all(c.usage is None for c in chunks[:-1])
    assert "".join(ch.delta.content or "" for c in chunks for ch in c.choices) == "Hello world"
    chunks = list(client.chat.completions.create(model="echo", messages=[{"role": "user", "content": "hi"}], stream=True))
    assert all(c.usage is None for c in chunks) and all(c.choices for c in chunks)
    finishes = [ch.finish_reason for c in chunks for ch in c.choices if ch.finish_reason]
    assert finishes == ["stop"], "one finish_reason, the upstream's"
    # The built-in model follows the same rule.
    chunks = list(client.chat.completions.create(model="builtin", messages=[{"role": "user", "content": "The sea"}], max_tokens=3,
                                                 stream=True, stream_options={"include_usage": True}))
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 3
    assert all(c.usage is None for c in chunks[:-1])
    chunks = list(client.completions.create(model="builtin", prompt="The sea", max_tokens=3, stream=True))
    assert all(c.usage is None for c in chunks) and chunks[-1].choices[0].finish_reason == "length"


def test_refusal_several_choices_and_unknown_fields_pass_through(client, node):
    r = client.chat.completions.create(model="refusal", messages=[{"role": "user", "content": "bad"}])
    assert r.choices[0].message.refusal == "I can't help with that." and r.choices[0].message.content is None
    r = client.chat.completions.create(model="n2", messages=[{"role": "user", "content": "hi"}], n=2)
    assert [(c.index, c.message.content, c.finish_reason) for c in r.choices] == [(0, "one0two0", "stop"), (1, "one1two1", "length")]
    got = {}
    for chunk in client.chat.completions.create(model="n2", messages=[{"role": "user", "content": "hi"}], n=2, stream=True):
        for ch in chunk.choices:
            got[ch.index] = got.get(ch.index, "") + (ch.delta.content or "")
    assert got == {0: "one0two0", 1: "one1two1"}
    # Fields nobody knows yet, at every level, as the upstream sent them.
    req = urllib.request.Request(node.url + "/v1/chat/completions", method="POST",
                                 data=json.dumps({"model": "extra", "stream": True, "messages": [{"role": "user", "content": "x"}]}).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        events = [json.loads(l[6:]) for l in resp.read().decode().splitlines() if l.startswith("data: {")]
    assert all(e["service_tier"] == "default" for e in events)
    assert events[0]["choices"][0]["future_flag"] is True and events[0]["choices"][0]["delta"]["annotations"] == []
    assert events[1]["choices"][0]["delta"]["audio"] == {"id": "audio_1"}


def test_upstream_errors_reach_the_client_as_they_are(client, upstream, node):
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="e400", messages=MESSAGES, tools=TOOLS)
    assert e.value.status_code == 400
    err = e.value.body
    assert err["message"] == "Invalid schema for function 'get_weather'" and err["param"] == "tools[0].function.parameters"
    assert err["code"] == "invalid_function_parameters" and err["type"] == "invalid_request_error"
    assert len([r for r in upstream.recorded() if r["body"]["model"] == "e400"]) == 1, "not retried on the other upstream"
    # Streamed: the error is the HTTP answer, not 200 and an event.
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="e400", messages=MESSAGES, stream=True)
    with pytest.raises(openai.UnprocessableEntityError) as e:
        client.chat.completions.create(model="e422", messages=MESSAGES)
    assert e.value.body["param"] == "messages"
    # Our credentials, route or model name refused upstream (401, 404): nothing the client can
    # fix — not its 401 or 404, and no upstream words (key hints, paths) passed on.
    for model, words in [("e401", "API key"), ("e404", "does not exist")]:
        with pytest.raises(openai.APIStatusError) as e:
            client.chat.completions.create(model=model, messages=MESSAGES)
        assert e.value.status_code == 502 and e.value.body["code"] == "upstream_error", e.value.body
        assert words not in json.dumps(e.value.body)
    # A failing upstream (5xx) is the proxy's to route around: 503, retryable.
    with pytest.raises(openai.APIStatusError) as e:
        client.chat.completions.create(model="e500", messages=MESSAGES)
    assert e.value.status_code == 503 and e.value.body["code"] == "model_unavailable"
    # The 4xx answers did not open any breaker.
    metrics = urllib.request.urlopen(node.url + "/metrics", timeout=5).read().decode()
    for name in ("u-e400", "u-e400-b", "u-e401", "u-e404", "u-e422"):
        assert f'playground_upstream_breaker_state{{upstream="{name}",region="default"}} 0' in metrics, name


def test_our_own_failure_before_the_first_token_is_an_http_status_on_sse(node):
    req = urllib.request.Request(node.url + "/v1/chat/completions", method="POST",
                                 data=json.dumps({"model": "dead", "stream": True, "messages": [{"role": "user", "content": "x"}]}).encode(),
                                 headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=20)
    assert e.value.code == 503
    body = json.loads(e.value.read())
    assert body["error"]["code"] == "model_unavailable" and body["error"]["retry_after_ms"] > 0


def test_the_builtin_model_refuses_what_it_cannot_do_naming_the_field(client):
    m = [{"role": "user", "content": "The sea"}]
    cases = [({"tools": TOOLS}, "tools"), ({"tool_choice": "required"}, "tool_choice"),
             ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {}}}}, "response_format"),
             ({"response_format": {"type": "json_object"}}, "response_format"), ({"logprobs": True}, "logprobs"),
             ({"top_logprobs": 2}, "top_logprobs"), ({"n": 2}, "n"), ({"modalities": ["text", "audio"]}, "modalities")]
    for extra, field in cases:
        with pytest.raises(openai.BadRequestError) as e:
            client.chat.completions.create(model="builtin", messages=m, max_tokens=2, **extra)
        assert e.value.body["param"] == field, (extra, e.value.body)
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model="builtin", prompt="The sea", max_tokens=2, logprobs=2)
    assert e.value.body["param"] == "logprobs"
    # What it can do still works: plain text, tool_choice none, an empty tools list.
    r = client.chat.completions.create(model="builtin", messages=m, max_tokens=2, response_format={"type": "text"}, tool_choice="none", tools=[])
    assert r.usage.completion_tokens == 2


def test_models_by_id(client):
    m = client.models.retrieve("builtin")
    assert m.id == "builtin" and m.object == "model" and m.owned_by == "playground"
    assert client.models.retrieve("tools").id == "tools"
    with pytest.raises(openai.NotFoundError) as e:
        client.models.retrieve("gpt-9")
    assert e.value.body["code"] == "model_not_found"
    assert {x.id for x in client.models.list()} >= {"builtin", "tools", "echo"}


def test_the_websocket_envelope_carries_tool_call_deltas(node):
    with connect(node.ws_url, max_size=None) as ws:
        ws.send(json.dumps({"id": "t1", "method": "POST", "path": "/v1/chat/completions",
                            "body": {"model": "toolsmix", "messages": MESSAGES, "tools": TOOLS}}))
        calls, done = {}, None
        while done is None:
            e = json.loads(ws.recv(timeout=10))
            if e["type"] == "delta":
                for ch in e["chunk"]["choices"]:
                    for tc in ch["delta"].get("tool_calls", []):
                        c = calls.setdefault(tc["index"], {"id": None, "name": "", "arguments": ""})
                        c["id"] = c["id"] or tc.get("id")
                        c["name"] += tc.get("function", {}).get("name", "")
                        c["arguments"] += tc.get("function", {}).get("arguments", "")
            elif e["type"] in ("done", "error"):
                done = e
    assert done["type"] == "done" and done["finish_reason"] == "tool_calls", done
    assert [(c["id"], c["name"], c["arguments"]) for _, c in sorted(calls.items())] == CALLS


def test_reasoning_chunks_all_arrive_and_are_joined(client):
    seen = []
    for chunk in client.chat.completions.create(model="reason", messages=[{"role": "user", "content": "?"}], stream=True):
        for ch in chunk.choices:
            r = (ch.delta.model_extra or {}).get("reasoning_content")
            if r:
                seen.append(r)
    assert seen == [f"r{i} " for i in range(20)]
    r = client.chat.completions.create(model="reason", messages=[{"role": "user", "content": "?"}])
    assert r.choices[0].message.content == "42"
    assert r.choices[0].message.model_extra["reasoning_content"] == "".join(f"r{i} " for i in range(20))


def test_several_choices_each_get_max_tokens_and_a_finish(client):
    got, finishes = {}, {}
    for chunk in client.chat.completions.create(model="nlong", messages=[{"role": "user", "content": "?"}], n=2, max_tokens=4, stream=True):
        for ch in chunk.choices:
            got[ch.index] = got.get(ch.index, "") + (ch.delta.content or "")
            if ch.finish_reason:
                finishes[ch.index] = ch.finish_reason
    assert got == {i: "".join(f"c{i}t{t} " for t in range(4)) for i in range(2)}
    assert finishes == {0: "length", 1: "length"}


def test_an_operator_side_4xx_falls_back_and_a_converted_request_refuses_what_it_would_lose(client, upstream):
    r = client.chat.completions.create(model="e402", messages=[{"role": "user", "content": "hi"}])
    assert r.choices[0].message.content == "Hello world", "a 402 (our credit) moves on to the next group"
    for extra, field in [({"tools": TOOLS}, "tools"), ({"n": 2}, "n"), ({"response_format": {"type": "json_object"}}, "response_format")]:
        with pytest.raises(openai.BadRequestError) as e:
            client.chat.completions.create(model="text", messages=[{"role": "user", "content": "hi"}], **extra)
        assert e.value.body["param"] == field, e.value.body
    client.completions.create(model="text", prompt="x", extra_body={"max_completion_tokens": 7})
    body = last_body(upstream)
    assert body["max_tokens"] == 7 and "max_completion_tokens" not in body, "the completions API's own name"


def test_filter_results_and_big_integers_pass_as_they_are(client, upstream, node):
    req = urllib.request.Request(node.url + "/v1/chat/completions", method="POST",
                                 data=json.dumps({"model": "azure", "stream": True, "seed": 1000000000000001,
                                                  "messages": [{"role": "user", "content": "x"}]}).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        events = [json.loads(l[6:]) for l in resp.read().decode().splitlines() if l.startswith("data: {")]
    assert events[0]["choices"] == [] and events[0]["prompt_filter_results"][0]["prompt_index"] == 0
    seed = last_body(upstream)["seed"]
    assert seed == 1000000000000001 and isinstance(seed, int)


def test_usage_details_and_the_request_id_on_every_answer(client):
    raw = client.chat.completions.with_raw_response.create(model="echo", messages=[{"role": "user", "content": "hi"}])
    r = raw.parse()
    assert raw.headers["x-request-id"] == r.id
    assert r.usage.completion_tokens_details.reasoning_tokens == 0 and r.usage.prompt_tokens_details.cached_tokens == 0
    chunks = list(client.chat.completions.create(model="echo", messages=[{"role": "user", "content": "hi"}], stream=True,
                                                 stream_options={"include_usage": True}))
    assert chunks[-1].usage.prompt_tokens_details.cached_tokens == 0
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="e400", messages=MESSAGES)
    assert e.value.response.headers["x-request-id"].startswith("chatcmpl-")


def test_the_operator_denies_fields_and_caps_n(client, upstream):
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="echo", messages=[{"role": "user", "content": "hi"}], service_tier="priority")
    assert e.value.body["param"] == "service_tier"
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="n2", messages=[{"role": "user", "content": "hi"}], n=5)
    assert e.value.body["param"] == "n"
    assert not [r for r in upstream.recorded() if r["body"].get("service_tier") or r["body"].get("n") == 5], "nothing reached the upstream"


def test_a_chat_preset_reaches_the_upstream_as_a_client_would_have_sent_it(node, client, upstream):
    import uuid
    req = urllib.request.Request(node.url + "/v1/presets", method="POST", headers={"Content-Type": "application/json"},
                                 data=json.dumps({"name": "chat-" + uuid.uuid4().hex[:6], "mode": "chat",
                                                  "parameters": {"model": "echo", "temperature": 0.25},
                                                  "messages": [{"role": "system", "content": "You speak {{lang}}."},
                                                               {"role": "user", "content": "Translate: {{input}}"}]}).encode())
    with urllib.request.urlopen(req, timeout=10) as r:
        preset = json.loads(r.read())
    out = client.chat.completions.create(model="echo", messages=[{"role": "user", "content": "and politely"}], top_p=0.5,
                                         extra_body={"preset_id": preset["id"], "input_context": "good morning",
                                                     "variables": {"lang": "French"}})
    assert out.choices[0].message.content is not None
    body = last_body(upstream)
    assert body["messages"] == [{"role": "system", "content": "You speak French."},
                                {"role": "user", "content": "Translate: good morning"},
                                {"role": "user", "content": "and politely"}], "the preset's messages, then the request's"
    assert body["temperature"] == 0.25 and body["top_p"] == 0.5, "the preset's parameters under the request's"
    for k in ("preset_id", "preset_version", "variables", "input_context"):
        assert k not in body, k
