"""Export and import of presets: an export pages through all of a user's presets whole; an import
creates each item on its own (never half an item), answers a result per item in order, and takes
an export back as it is."""
import uuid

from conftest import make_key, post, request


def get(node, key, path):
    return request(node, key, "GET", path)


def test_export_pages_through_everything_and_import_takes_it_back(node):
    alice, bob = make_key("exp-a-" + uuid.uuid4().hex[:6]), make_key("exp-b-" + uuid.uuid4().hex[:6])
    made = []
    for i in range(5):
        status, p = post(node.url, alice, {"name": f"Export {i}", "prompt": f"Say {i}: {{{{input}}}}", "tags": ["t", f"n{i}"],
                                               "description": f"number {i}", "parameters": {"temperature": 0.5, "max_tokens": 7}},
                         path="/v1/presets")
        assert status == 201, p
        made.append(p)
    pages, cursor = [], None
    while True:
        status, page = get(node, alice, "/v1/presets/export?limit=2" + (f"&cursor={cursor}" if cursor else ""))
        assert status == 200, page
        pages.append(page["data"])
        cursor = page["next_cursor"]
        if not cursor:
            break
    exported = [p for page in pages for p in page]
    assert [len(p) for p in pages] == [2, 2, 1]
    assert sorted(p["id"] for p in exported) == sorted(p["id"] for p in made), "every preset once"
    assert {p["name"]: p["prompt"] for p in exported} == {p["name"]: p["prompt"] for p in made}

    # Bob imports Alice's export as it is, plus a bad item and a name he already uses.
    status, mine = post(node.url, bob, {"name": "Export 3", "prompt": "mine"}, path="/v1/presets")
    assert status == 201
    items = exported[:3] + [{"name": "", "prompt": "x"}, {"prompt": "no name"}] + exported[3:]
    status, out = post(node.url, bob, {"presets": items}, path="/v1/presets/import")
    assert status == 200, out
    assert [r["index"] for r in out["data"]] == list(range(len(items)))
    by = {r["index"]: r for r in out["data"]}
    assert by[3]["status"] == "failed" and by[3]["error"]["field"] == "presets[3].name"
    assert by[4]["status"] == "failed" and by[4]["error"]["field"] == "presets[4].name"
    conflicts = [r for r in out["data"] if r["status"] == "failed" and r["error"]["code"] == "conflict"]
    assert len(conflicts) == 1 and conflicts[0]["error"]["field"].endswith(".name")
    assert out["created"] == 4 and out["failed"] == 3
    for r in out["data"]:
        if r["status"] == "created":
            src = items[r["index"]]
            p = r["preset"]
            assert p["id"] != src["id"] and p["name"] == src["name"] and p["prompt"] == src["prompt"]
            assert p["tags"] == src["tags"] and p["description"] == src["description"] and p["parameters"] == src["parameters"]
            assert p["version"] == 1
    status, page = get(node, bob, "/v1/presets/export")
    assert status == 200 and len(page["data"]) == 5 and page["next_cursor"] is None
    # Alice's presets are untouched by Bob's import.
    status, page = get(node, alice, "/v1/presets/export")
    assert len(page["data"]) == 5


def test_bad_imports_and_exports_are_refused_naming_the_field(node):
    key = make_key("exp-bad-" + uuid.uuid4().hex[:6])
    for body, field in [({}, "presets"), ({"presets": {}}, "presets"), ({"presets": [1]}, "presets[0]"),
                        ({"presets": [{"name": "x", "prompt": "p"}] * 1001}, "presets")]:
        status, out = post(node.url, key, body, path="/v1/presets/import")
        if field == "presets[0]":
            assert status == 200 and out["data"][0]["error"]["field"] == field, out
        else:
            assert status == 400 and out["error"]["field"] == field, (body if len(str(body)) < 200 else "1001 items", out)
    for q in ["limit=0", "limit=1001", "limit=x", "cursor=garbage"]:
        status, out = get(node, key, "/v1/presets/export?" + q)
        assert status == 400, (q, out)
