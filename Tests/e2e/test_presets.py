"""Presets and identity against the real PostgreSQL the test script starts."""
import asyncio
import json
import os
import subprocess
import time
import urllib.request
import uuid

import pytest
import websockets
from websockets.exceptions import ConnectionClosed, InvalidStatus

from conftest import BINARY, ROOT, auth, make_key


def api(node, method, path, body=None, key=None, headers=None):
    h = {"Content-Type": "application/json", **(auth(key or node.key) if key is not False else {}), **(headers or {})}
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(node.url + path, data=data, method=method, headers=h)
    try:
        r = urllib.request.urlopen(req, timeout=10)
        return r.status, json.loads(r.read() or b"null"), r.headers
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null"), e.headers


@pytest.fixture
def user(node):
    """A fresh user (own key) per test, so tests never see each other's presets."""
    return make_key("u-" + uuid.uuid4().hex[:10])


def create(node, key, name, prompt="Say hello to {{input}}", **extra):
    status, body, _ = api(node, "POST", "/v1/presets", {"name": name, "prompt": prompt, **extra}, key=key)
    assert status == 201, body
    return body


def search(node, key, query="", limit=None, cursor=None):
    q = "?query=" + urllib.parse.quote(query)
    if limit:
        q += f"&limit={limit}"
    if cursor:
        q += "&cursor=" + urllib.parse.quote(cursor)
    status, body, _ = api(node, "GET", "/v1/presets" + q, key=key)
    assert status == 200, body
    return body


def test_crud(node, user):
    p = create(node, user, "Greeter", description="says hi", tags=["demo", "fun"],
               parameters={"temperature": 0.2, "max_tokens": 20, "stop": ["."]})
    assert p["version"] == 1 and p["tags"] == ["demo", "fun"] and p["parameters"]["temperature"] == 0.2
    status, got, _ = api(node, "GET", f"/v1/presets/{p['id']}", key=user)
    assert status == 200 and got == p
    status, upd, _ = api(node, "PATCH", f"/v1/presets/{p['id']}", {"description": "says hello", "tags": ["x"]}, key=user)
    assert status == 200 and upd["description"] == "says hello" and upd["tags"] == ["x"] and upd["version"] == 2
    assert upd["name"] == "Greeter" and upd["prompt"] == p["prompt"], "PATCH keeps what it does not name"
    assert upd["updated_at"] > p["updated_at"] and upd["created_at"] == p["created_at"]
    # A PATCH that does not name tags keeps them (and search still finds the preset by them).
    status, upd2, _ = api(node, "PATCH", f"/v1/presets/{p['id']}", {"prompt": "Say hi again"}, key=user)
    assert status == 200 and upd2["tags"] == ["x"] and upd2["prompt"] == "Say hi again" and upd2["version"] == 3
    found = api(node, "GET", "/v1/presets?query=x", key=user)[1]["data"]
    assert p["id"] in [f["id"] for f in found]
    status, body, _ = api(node, "DELETE", f"/v1/presets/{p['id']}", key=user)
    assert status == 200 and body == {"id": p["id"], "deleted": True}
    assert api(node, "GET", f"/v1/presets/{p['id']}", key=user)[0] == 404
    assert api(node, "DELETE", f"/v1/presets/{p['id']}", key=user)[0] == 404


def test_names_unique_per_user_ignoring_case(node, user):
    create(node, user, "My Preset")
    status, body, _ = api(node, "POST", "/v1/presets", {"name": "my preset", "prompt": "x"}, key=user)
    assert status == 409 and body["error"]["code"] == "conflict" and body["error"]["field"] == "name"
    other = create(node, user, "Other")
    status, body, _ = api(node, "PATCH", f"/v1/presets/{other['id']}", {"name": "MY PRESET"}, key=user)
    assert status == 409
    # Another user may use the same name.
    create(node, make_key("u-" + uuid.uuid4().hex[:8]), "My Preset")


def test_ownership_is_invisible(node, user):
    mine = create(node, user, "Private thing", tags=["secret"])
    bob = make_key("bob-" + uuid.uuid4().hex[:6])
    pid = mine["id"]
    for method, path, body in [("GET", f"/v1/presets/{pid}", None), ("PATCH", f"/v1/presets/{pid}", {"name": "stolen"}),
                               ("DELETE", f"/v1/presets/{pid}", None)]:
        status, resp, _ = api(node, method, path, body, key=bob)
        assert status == 404 and resp["error"]["code"] == "not_found", (method, resp)
    assert search(node, bob, "private")["data"] == []
    assert search(node, bob)["data"] == []
    status, resp, _ = api(node, "POST", "/v1/completions", {"preset_id": pid, "input_context": "x"}, key=bob)
    assert status == 404 and resp["error"]["code"] == "not_found"
    # Still intact for its owner.
    assert api(node, "GET", f"/v1/presets/{pid}", key=user)[1]["name"] == "Private thing"


def test_search_ranking_substrings_and_misspellings(node, user):
    create(node, user, "Summarize for a 2nd grader", tags=["education"])
    create(node, user, "Translate to French", tags=["language"])
    create(node, user, "Summary of meeting notes", tags=["work"])
    create(node, user, "Grocery list", tags=["home"])
    names = lambda q: [p["name"] for p in search(node, user, q)["data"]]
    assert names("sumarize")[0] == "Summarize for a 2nd grader"
    assert names("summarize") == ["Summarize for a 2nd grader"] + [n for n in names("summarize")[1:]]
    assert names("grader") == ["Summarize for a 2nd grader"]
    assert names("frnch") == ["Translate to French"]
    assert "Translate to French" in names("langauge"), "tags are searched too"
    assert names("ummar")[:2] == sorted(names("ummar")[:2], key=lambda n: -("ummar" in n.lower())), "substring first"
    assert names("zzzzqqq") == []
    scores = [p["score"] for p in search(node, user, "summ")["data"]]
    assert scores == sorted(scores, reverse=True)
    # Empty query: newest first.
    assert names("") == ["Grocery list", "Summary of meeting notes", "Translate to French", "Summarize for a 2nd grader"]


@pytest.mark.parametrize("query", ["", "note"])
def test_keyset_pagination_no_duplicates_or_gaps_while_inserting(node, user, query):
    for i in range(25):
        create(node, user, f"note {i:02d}", tags=["notes"])
    seen, cursor, pages = [], None, 0
    while True:
        page = search(node, user, query, limit=7, cursor=cursor)
        seen += [p["id"] for p in page["data"]]
        pages += 1
        # Someone keeps adding presets while we page.
        create(node, user, f"new note {uuid.uuid4().hex[:6]}", tags=["notes"])
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert len(seen) == len(set(seen)), "duplicates across pages"
    originals = {p["id"] for p in search(node, user, query, limit=100)["data"] if p["name"].startswith("note ")}
    assert originals <= set(seen), "gaps: some presets that existed all along were skipped"
    assert pages >= 4


@pytest.mark.parametrize("text", ["100% done", "snake_case_name", "it's \"quoted\"", "'; DROP TABLE presets; --",
                                  "back\\slash", "emoji 🦜 party", "日本語のプロンプト", "%", "_", "a%_b"])
def test_hostile_strings_are_literal(node, user, text):
    p = create(node, user, text, prompt=text, tags=[text[:40]])
    assert p["name"] == text.strip() and p["prompt"] == text
    found = [x["name"] for x in search(node, user, text)["data"]]
    assert found and found[0] == text.strip()
    if text in ("%", "_"):
        assert all(text in n for n in found), f"{text!r} must match literally, not as a wildcard: {found}"


def test_limits_and_validation(node, user):
    cases = [
        ({"name": "x" * 121, "prompt": "p"}, "name"), ({"name": "   ", "prompt": "p"}, "name"), ({"prompt": "p"}, "name"),
        ({"name": "n"}, "prompt"), ({"name": "n", "prompt": "p" * (32 * 1024 + 1)}, "prompt"),
        ({"name": "n", "prompt": "p", "tags": ["t"] * 17}, "tags"), ({"name": "n", "prompt": "p", "tags": "t"}, "tags"),
        ({"name": "n", "prompt": "p", "parameters": {"temperature": 3}}, "parameters.temperature"),
        ({"name": "n", "prompt": "p", "parameters": {"max_tokens": 0}}, "parameters.max_tokens"),
        ({"name": "n", "prompt": "p", "parameters": []}, "parameters"), ({"name": "a\u0001b", "prompt": "p"}, "name"),
    ]
    for body, field in cases:
        status, resp, _ = api(node, "POST", "/v1/presets", body, key=user)
        assert status == 400 and resp["error"]["field"] == field, (body if len(str(body)) < 200 else field, resp)
    assert api(node, "POST", "/v1/presets", {"name": "x" * 120, "prompt": "p" * 32 * 1024}, key=user)[0] == 201
    assert api(node, "GET", "/v1/presets?limit=0", key=user)[0] == 400
    assert api(node, "GET", "/v1/presets?limit=101", key=user)[0] == 400
    status, resp, _ = api(node, "GET", "/v1/presets?cursor=garbage", key=user)
    assert status == 400 and resp["error"]["field"] == "cursor"
    assert api(node, "GET", "/v1/presets/not-a-uuid", key=user)[0] == 404
    assert api(node, "POST", "/v1/presets", None, key=user, headers={})[0] == 400


def test_run_preset_with_input_and_overrides(node, user):
    p = create(node, user, "Seeded", prompt="The garden was quiet. {{input}}",
               parameters={"temperature": 0.9, "seed": 5, "max_tokens": 12})
    run = lambda extra: api(node, "POST", "/v1/completions", {"preset_id": p["id"], "input_context": "The sea", **extra}, key=user)[1]
    a, b = run({}), run({})
    assert a["choices"][0]["text"] == b["choices"][0]["text"], "the preset's seed applies"
    assert a["usage"]["completion_tokens"] <= 12
    assert a["usage"]["prompt_tokens"] == 7, "input replaced {{input}}: The garden was quiet . The sea"
    c = run({"max_tokens": 3})
    assert c["usage"]["completion_tokens"] <= 3, "request parameters override the preset's"
    plain = create(node, user, "No placeholder", prompt="Summarize:")
    r = api(node, "POST", "/v1/completions", {"preset_id": plain["id"], "input_context": "one two three", "max_tokens": 2}, key=user)[1]
    assert r["usage"]["prompt_tokens"] == 5, "input follows the prompt after a blank line"
    status, body, _ = api(node, "POST", "/v1/completions", {"preset_id": p["id"], "temperature": 7}, key=user)
    assert status == 400 and body["error"]["field"] == "temperature"


def test_presets_over_the_websocket_envelope(node, user):
    async def go():
        async with websockets.connect(node.ws_url, additional_headers=auth(user)) as ws:
            await ws.send(json.dumps({"id": "c", "method": "POST", "path": "/v1/presets", "body": {"name": "via ws", "prompt": "hi {{input}}"}}))
            m = json.loads(await ws.recv())
            assert m["id"] == "c" and m["status"] == 201
            pid = m["body"]["id"]
            await ws.send(json.dumps({"id": "s", "method": "GET", "path": "/v1/presets?query=via"}))
            m = json.loads(await ws.recv())
            assert m["body"]["data"][0]["id"] == pid
            await ws.send(json.dumps({"id": "r", "method": "POST", "path": "/v1/completions",
                                      "body": {"preset_id": pid, "input_context": "there", "max_tokens": 3}}))
            types = []
            while not types or types[-1] not in ("done", "error"):
                types.append(json.loads(await ws.recv())["type"])
            assert types[0] == "accepted" and types[-1] == "done"
            await ws.send(json.dumps({"id": "d", "method": "DELETE", "path": f"/v1/presets/{pid}"}))
            assert json.loads(await ws.recv())["status"] == 200
    asyncio.run(go())


def test_revoked_key_stops_at_once(node):
    key = make_key("revokee-" + uuid.uuid4().hex[:6])
    assert api(node, "GET", "/v1/presets", key=key)[0] == 200

    async def go():
        async with websockets.connect(node.ws_url, additional_headers=auth(key)) as ws:
            await ws.send(json.dumps({"id": 1, "method": "GET", "path": "/v1/models"}))
            assert json.loads(await ws.recv())["status"] == 200
            prefix = key[:12]
            out = subprocess.run([BINARY, "admin", "keys", "revoke", prefix], capture_output=True, text=True, cwd=ROOT)
            assert out.returncode == 0, out.stderr
            t0 = time.time()
            # REST refuses it on the next request.
            assert api(node, "GET", "/v1/presets", key=key)[0] == 401
            # The open socket's next request is refused too, and the socket is closed.
            await ws.send(json.dumps({"id": 2, "method": "GET", "path": "/v1/models"}))
            m = json.loads(await ws.recv())
            assert m["type"] == "error" and m["error"]["code"] == "unauthorized"
            with pytest.raises(ConnectionClosed) as e:
                await ws.recv()
            assert e.value.rcvd.code == 1008
            assert time.time() - t0 < 2
    asyncio.run(go())
    assert api(node, "GET", "/v1/models", key=key)[0] == 401


def test_session_cookie_flags_and_sign_out(node):
    status, body, headers = api(node, "POST", "/v1/session", {"api_key": node.key}, key=False)
    assert status == 200 and body["user_id"] == "alice"
    cookie = headers["Set-Cookie"]
    attrs = [a.strip() for a in cookie.split(";")]
    assert attrs[0].startswith("pg_session=") and len(attrs[0]) > 40
    assert "HttpOnly" in attrs and "SameSite=Strict" in attrs and "Path=/" in attrs
    token = attrs[0].split("=", 1)[1]
    c = {"Cookie": f"pg_session={token}"}
    assert api(node, "GET", "/v1/session", key=False, headers=c)[1]["user_id"] == "alice"
    assert api(node, "GET", "/v1/presets", key=False, headers=c)[0] == 200
    # Cookie-authenticated writes from a foreign page are refused.
    status, _, _ = api(node, "POST", "/v1/presets", {"name": "csrf", "prompt": "x"}, key=False,
                       headers={**c, "Origin": "https://evil.example"})
    assert status == 403
    status, _, headers = api(node, "DELETE", "/v1/session", key=False, headers=c)
    assert status == 200 and "Max-Age=0" in headers["Set-Cookie"]
    assert api(node, "GET", "/v1/presets", key=False, headers=c)[0] == 401
    assert api(node, "POST", "/v1/session", {"api_key": "pgk_wrong_wrong_wrong_wrong"}, key=False)[0] == 401
    assert api(node, "POST", "/v1/session", {}, key=False)[0] == 400


def test_websocket_with_cookie_checks_origin(node):
    status, _, headers = api(node, "POST", "/v1/session", {"api_key": node.key}, key=False)
    token = headers["Set-Cookie"].split(";")[0].split("=", 1)[1]

    async def go():
        cookie = {"Cookie": f"pg_session={token}"}
        async with websockets.connect(node.ws_url, additional_headers=cookie, origin=node.url) as ws:
            await ws.send(json.dumps({"id": 1, "method": "GET", "path": "/v1/models"}))
            assert json.loads(await ws.recv())["status"] == 200
        with pytest.raises(InvalidStatus) as e:
            async with websockets.connect(node.ws_url, additional_headers=cookie, origin="https://evil.example"):
                pass
        assert e.value.response.status_code == 403
    asyncio.run(go())


def test_migrations_rerun_are_a_no_op():
    out = subprocess.run([BINARY, "migrate"], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0 and "up to date" in out.stdout, out.stdout + out.stderr


def test_admin_keys_list_shows_no_secret():
    out = subprocess.run([BINARY, "admin", "keys", "list"], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0 and "alice" in out.stdout
    for line in out.stdout.splitlines()[1:]:
        prefix = line.split("\t")[1]
        assert len(prefix) <= 13, "only a short prefix of a key is ever shown"


def test_concurrent_identity_lookups_answer_each_credential(node):
    """Lookups are batched into one query: each request must still get its own answer."""
    from concurrent.futures import ThreadPoolExecutor
    users = [f"batch-{uuid.uuid4().hex[:6]}" for _ in range(4)]
    keys = {u: make_key(u) for u in users}
    bad = ["pgk_invalid_" + uuid.uuid4().hex for _ in range(4)]

    def who(key):
        req = urllib.request.Request(node.url + "/v1/session", headers=auth(key))
        try:
            return json.loads(urllib.request.urlopen(req, timeout=10).read())["user_id"]
        except urllib.error.HTTPError as e:
            return e.code

    jobs = [(u, k) for u, k in keys.items()] * 15 + [(401, b) for b in bad] * 10
    with ThreadPoolExecutor(32) as ex:
        results = list(ex.map(lambda j: (j[0], who(j[1])), jobs))
    assert all(expected == got for expected, got in results), [r for r in results if r[0] != r[1]][:5]
