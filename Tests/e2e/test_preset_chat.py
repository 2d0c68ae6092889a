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


def test_what_a_hostile_probe_found_stays_fixed(node, key):
    """Each of these answered wrongly once (a 500, a wrong field, a silent no-op, a lost round trip)."""
    # A name of few visible characters but many code points: the database counts code points.
    family = "Family " + "👨‍👩‍👧‍👦" * 20  # 27 visible, 147 code points
    status, e = post(node.url, key, {"name": family, "prompt": "x"}, path="/v1/presets")
    assert status == 400 and e["error"]["field"] == "name", e
    status, p = post(node.url, key, {"name": "a" + "\u0301" * 119, "prompt": "x"}, path="/v1/presets")
    assert status == 201, p
    status, e = request(node, key, "PATCH", f"/v1/presets/{p['id']}", {"name": "a" + "\u0301" * 200})
    assert status == 400 and e["error"]["field"] == "name", e
    # A 32 KiB prompt sent JSON-escaped (\u0001 is six bytes a character) fits the body bound.
    import json as _json
    import urllib.request as _ur
    body = _json.dumps({"name": "Escaped " + uuid.uuid4().hex[:6], "prompt": "\x01" * 12000}).encode()
    assert len(body) > 64 * 1024
    req = _ur.Request(node.url + "/v1/presets", data=body, method="POST",
                      headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    with _ur.urlopen(req, timeout=10) as r:
        assert r.status == 201
    # States the API allows survive export and import.
    status, c1 = post(node.url, key, {"name": "Switched " + uuid.uuid4().hex[:6], "mode": "chat", "messages": [TURN]}, path="/v1/presets")
    assert request(node, key, "PATCH", f"/v1/presets/{c1['id']}", {"mode": "completion", "prompt": "P"})[0] == 200
    status, c2 = post(node.url, key, {"name": "Emptied " + uuid.uuid4().hex[:6], "mode": "chat", "messages": [TURN]}, path="/v1/presets")
    assert request(node, key, "PATCH", f"/v1/presets/{c2['id']}", {"messages": []})[0] == 200
    exported = {x["id"]: x for x in request(node, key, "GET", "/v1/presets/export")[1]["data"]}
    other = make_key("chatp-rt-" + uuid.uuid4().hex[:6])
    status, result = request(node, other, "POST", "/v1/presets/import", {"presets": [exported[c1["id"]], exported[c2["id"]]]})
    assert status == 200 and result["created"] == 2, result
    got = [x["preset"] for x in result["data"]]
    assert (got[0]["mode"], got[0]["messages"]) == ("completion", [TURN]) and (got[1]["mode"], got[1]["messages"]) == ("chat", [])
    # A query whose only word is too long to be one finds nothing (it used to list everything).
    status, found = request(node, key, "GET", "/v1/presets?query=" + "a" * 41)
    assert status == 200 and found["data"] == [], found["data"][:2]
    # Numbers past the database's integer and impossible times: 404 or 400 naming the field.
    assert request(node, key, "GET", f"/v1/presets/{p['id']}/versions/2147483648")[0] == 404
    status, e = request(node, key, "GET", f"/v1/presets/{p['id']}/versions?cursor=2147483648")
    assert status == 400 and e["error"]["field"] == "cursor", e
    status, e = post(node.url, key, {"preset_id": p["id"], "preset_version": 2147483648})
    assert status == 400 and e["error"]["field"] == "preset_version", e
    import base64
    for t in ("2026-01-01T25:61:61.000000Z", "2026-02-30T10:00:00.000000Z"):
        cursor = base64.urlsafe_b64encode(f"t|{t}|{p['id']}".encode()).decode().rstrip("=")
        status, e = request(node, key, "GET", "/v1/presets?cursor=" + cursor)
        assert status == 400 and e["error"]["field"] == "cursor", (t, e)
    # A chat run's error names the index of the client's own message.
    chat = create(node, key)
    run = {"preset_id": chat["id"], "input_context": "x", "variables": {"topic": "t", "audience": "a"},
           "messages": [{"role": "badrole", "content": "x"}]}
    status, e = post(node.url, key, run, path="/v1/chat/completions")
    assert status == 400 and "messages[0]" in e["error"]["message"], e
    # input_context without a preset is refused like variables without one.
    status, e = post(node.url, key, {"messages": [{"role": "user", "content": "hi"}], "input_context": "x"}, path="/v1/chat/completions")
    assert status == 400 and e["error"]["field"] == "input_context", e
    status, e = post(node.url, key, {"prompt": "hi", "input_context": "x"})
    assert status == 400 and e["error"]["field"] == "input_context", e
    # A PATCH that changes nothing makes no version; one that changes something makes one.
    v = request(node, key, "GET", f"/v1/presets/{chat['id']}")[1]["version"]
    for nothing in ({}, {"mode": None}, {"prompt": None}, {"messages": [SYSTEM, TURN]}, {"name": chat["name"]}):
        status, same = request(node, key, "PATCH", f"/v1/presets/{chat['id']}", nothing)
        assert status == 200 and same["version"] == v and same["updated_at"] == chat["updated_at"], (nothing, same["version"])
    status, changed = request(node, key, "PATCH", f"/v1/presets/{chat['id']}", {"description": "now described"})
    assert status == 200 and changed["version"] == v + 1
    versions = request(node, key, "GET", f"/v1/presets/{chat['id']}/versions")[1]["data"]
    assert [x["version"] for x in versions] == [v + 1, v]
