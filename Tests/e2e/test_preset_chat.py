"""Chat presets through the API and the official openai SDK: stored messages with variables, runs on
/v1/chat/completions (streamed and not), the wrong endpoint refused, versions, restore, export and
import keeping the messages, bad messages refused naming the field, hostile sizes refused at once."""
import time
import uuid

import openai
import pytest

from conftest import make_key, post, request

SYSTEM = {"role": "system", "content": "You explain {{topic}} to {{audience}}."}
TURN = {"role": "user", "content": "Start with: {{input}}"}


@pytest.fixture
def key():
    return make_key("chatp-" + uuid.uuid4().hex[:6])


def create(node, key, **extra):
    body = {"name": "Chat " + uuid.uuid4().hex[:6], "mode": "chat", "messages": [SYSTEM, TURN],
            "parameters": {"max_tokens": 4, "temperature": 0}} | extra
    status, p = post(node.url, key, body, path="/v1/presets")
    assert status == 201, p
    return p


def test_a_chat_preset_is_stored_and_runs_through_the_sdk(node, key):
    p = create(node, key)
    assert p["mode"] == "chat" and p["messages"] == [SYSTEM, TURN] and p["prompt"] == ""
    assert p["variables"] == ["topic", "audience", "input"]
    assert request(node, key, "GET", f"/v1/presets/{p['id']}")[1] == p
    client = openai.OpenAI(base_url=node.url + "/v1", api_key=key, max_retries=0, timeout=20)
    extra = {"preset_id": p["id"], "input_context": "the moon", "variables": {"topic": "tides", "audience": "kids"}}
    out = client.chat.completions.create(model="builtin", messages=[], extra_body=extra)
    assert out.object == "chat.completion" and out.choices[0].finish_reason == "length"
    assert out.usage.completion_tokens == 4, "the preset's max_tokens"
    # The messages the model saw were filled in: longer values, more prompt tokens, one per word.
    longer = dict(extra, variables={"topic": "the tides and currents of the northern seas", "audience": "kids"})
    more = client.chat.completions.create(model="builtin", messages=[], extra_body=longer)
    assert more.usage.prompt_tokens == out.usage.prompt_tokens + 7, (out.usage, more.usage)
    chunks = list(client.chat.completions.create(model="builtin", messages=[{"role": "user", "content": "more"}], stream=True,
                                                 max_tokens=6, extra_body=extra))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text and chunks[-1].choices[0].finish_reason in ("length", "stop")
    # Seeded and at temperature 0: the same run twice gives the same answer; another input, not the prompt alone.
    again = client.chat.completions.create(model="builtin", messages=[], extra_body=extra)
    assert again.choices[0].message.content == out.choices[0].message.content


def test_wrong_endpoints_and_bad_runs_are_refused_naming_the_field(node, key):
    p = create(node, key)
    run = {"preset_id": p["id"], "input_context": "x", "variables": {"topic": "t", "audience": "a"}}
    status, e = post(node.url, key, run)  # /v1/completions
    assert status == 400 and e["error"]["field"] == "preset_id" and "/v1/chat/completions" in e["error"]["message"], e
    status, plain = post(node.url, key, {"name": "Plain " + uuid.uuid4().hex[:6], "prompt": "Say {{input}}"}, path="/v1/presets")
    assert status == 201 and plain["mode"] == "completion" and plain["messages"] == []
    status, e = post(node.url, key, {"preset_id": plain["id"], "messages": [{"role": "user", "content": "x"}]}, path="/v1/chat/completions")
    assert status == 400 and e["error"]["field"] == "preset_id", e
    for variables, field in [({"topic": "t"}, "variables.audience"), ({"topic": "t", "audience": "a", "x": "y"}, "variables.x")]:
        status, e = post(node.url, key, dict(run, variables=variables), path="/v1/chat/completions")
        assert status == 400 and e["error"]["field"] == field, e
    status, e = post(node.url, key, dict(run, messages="hi"), path="/v1/chat/completions")
    assert status == 400 and e["error"]["field"] == "messages", e
    # Hostile: 50 messages of 70 placeholders each and a 64 KiB input would be 229 MB: refused from the sizes.
    status, bomb = post(node.url, key, {"name": "Bomb " + uuid.uuid4().hex[:6], "mode": "chat",
                                        "messages": [{"role": "user", "content": "{{input}}" * 70}] * 50}, path="/v1/presets")
    assert status == 201, bomb
    t0 = time.monotonic()
    status, e = post(node.url, key, {"preset_id": bomb["id"], "input_context": "a" * 65536}, path="/v1/chat/completions")
    assert status == 400 and e["error"]["field"] == "input_context", e
    assert time.monotonic() - t0 < 2


@pytest.mark.parametrize("body,field", [
    ({"mode": "chat"}, "messages"),
    ({"mode": "chat", "messages": []}, "messages"),
    ({"mode": "dialogue", "prompt": "p"}, "mode"),
    ({"prompt": "p", "messages": [{"role": "user", "content": "x"}]}, "messages"),
    ({"mode": "chat", "messages": [{"role": "tool", "content": "x"}]}, "messages[0].role"),
    ({"mode": "chat", "messages": [{"role": "user", "content": "x"}, {"role": "user"}]}, "messages[1].content"),
    ({"mode": "chat", "messages": [{"role": "user", "content": ["parts"]}]}, "messages[0].content"),
    ({"mode": "chat", "messages": [{"role": "user", "content": "a\u0000b"}]}, "messages[0].content"),
    ({"mode": "chat", "messages": [{"role": "user", "content": "x"}] * 51}, "messages"),
    ({"mode": "chat", "messages": [{"role": "user", "content": "x" * 20000}] * 2}, "messages"),
    ({"mode": "chat", "messages": {"role": "user"}}, "messages"),
])
def test_bad_chat_presets_are_refused_naming_the_field(node, key, body, field):
    status, e = post(node.url, key, {"name": "Bad " + uuid.uuid4().hex[:6]} | body, path="/v1/presets")
    assert status == 400 and e["error"]["field"] == field, (body, e)


def test_versions_restore_preset_version_export_and_import_keep_the_messages(node, key):
    p = create(node, key)
    newer = [{"role": "system", "content": "Be brief about {{topic}}."}, {"role": "user", "content": "{{input}}"},
             {"role": "assistant", "content": "Sure."}]
    status, v2 = request(node, key, "PATCH", f"/v1/presets/{p['id']}", {"messages": newer})
    assert status == 200 and v2["version"] == 2 and v2["messages"] == newer and v2["variables"] == ["topic", "input"]
    status, old = request(node, key, "GET", f"/v1/presets/{p['id']}/versions/1")
    assert status == 200 and old["messages"] == [SYSTEM, TURN] and old["mode"] == "chat"
    # preset_version 1 still needs its audience; the current version does not.
    base = {"preset_id": p["id"], "input_context": "x", "variables": {"topic": "t"}}
    assert post(node.url, key, base, path="/v1/chat/completions")[0] == 200
    status, e = post(node.url, key, dict(base, preset_version=1), path="/v1/chat/completions")
    assert status == 400 and e["error"]["field"] == "variables.audience", e
    status, restored = request(node, key, "POST", f"/v1/presets/{p['id']}/versions/1/restore")
    assert status == 200 and restored["version"] == 3 and restored["messages"] == [SYSTEM, TURN]
    # Export, then import into another user: the chat preset arrives whole.
    status, exported = request(node, key, "GET", "/v1/presets/export")
    item = next(x for x in exported["data"] if x["id"] == p["id"])
    assert item["mode"] == "chat" and item["messages"] == [SYSTEM, TURN]
    other = make_key("chatp-imp-" + uuid.uuid4().hex[:6])
    status, result = request(node, other, "POST", "/v1/presets/import", {"presets": [item]})
    assert status == 200 and result["created"] == 1, result
    copy = result["data"][0]["preset"]
    assert copy["mode"] == "chat" and copy["messages"] == [SYSTEM, TURN] and copy["id"] != p["id"]
    # A completion preset switched to chat by a PATCH, without messages yet: its runs say what is missing.
    status, plain = post(node.url, key, {"name": "Switch " + uuid.uuid4().hex[:6], "prompt": "p"}, path="/v1/presets")
    status, switched = request(node, key, "PATCH", f"/v1/presets/{plain['id']}", {"mode": "chat"})
    assert status == 200 and switched["mode"] == "chat"
    status, e = post(node.url, key, {"preset_id": plain["id"]}, path="/v1/chat/completions")
    assert status == 400 and e["error"]["field"] == "messages", e
