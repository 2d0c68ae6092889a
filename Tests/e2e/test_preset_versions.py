"""Preset versions: every change is an immutable version, listed newest first and paginated,
readable one by one, restorable (a new version equal in content), runnable with preset_version;
owner only; gone with the preset."""
import uuid

from conftest import make_key, post
from conftest import request as call


def test_changes_make_versions_that_can_be_read_restored_and_run(node):
    key, other = make_key("ver-" + uuid.uuid4().hex[:6]), make_key("ver-o-" + uuid.uuid4().hex[:6])
    name = "Versioned " + uuid.uuid4().hex[:6]
    status, p = call(node, key, "POST", "/v1/presets", {"name": name, "prompt": "First {{input}}", "tags": ["a"],
                                                        "parameters": {"max_tokens": 2}})
    assert status == 201
    pid = p["id"]
    assert call(node, key, "PATCH", f"/v1/presets/{pid}", {"prompt": "Second {{input}}"})[0] == 200
    assert call(node, key, "PATCH", f"/v1/presets/{pid}", {"tags": ["b"], "parameters": {"max_tokens": 3}})[0] == 200
    status, page = call(node, key, "GET", f"/v1/presets/{pid}/versions?limit=2")
    assert status == 200 and [v["version"] for v in page["data"]] == [3, 2] and page["next_cursor"] == "2"
    status, rest = call(node, key, "GET", f"/v1/presets/{pid}/versions?limit=2&cursor=2")
    assert [v["version"] for v in rest["data"]] == [1] and rest["next_cursor"] is None
    v1 = rest["data"][0]
    assert v1["prompt"] == "First {{input}}" and v1["tags"] == ["a"] and v1["parameters"] == {"max_tokens": 2}
    assert v1["object"] == "preset.version" and v1["preset_id"] == pid and v1["variables"] == ["input"]
    status, one = call(node, key, "GET", f"/v1/presets/{pid}/versions/2")
    assert status == 200 and one["prompt"] == "Second {{input}}"
    # Restore: a new version (4) equal in content to version 1.
    status, restored = call(node, key, "POST", f"/v1/presets/{pid}/versions/1/restore")
    assert status == 200 and restored["version"] == 4 and restored["prompt"] == "First {{input}}" and restored["tags"] == ["a"]
    status, page = call(node, key, "GET", f"/v1/presets/{pid}/versions")
    assert [v["version"] for v in page["data"]] == [4, 3, 2, 1]
    # Run an older version: its parameters (max_tokens 3 in version 3).
    status, a = post(node.url, key, {"preset_id": pid, "preset_version": 3, "input_context": "x"})
    assert status == 200 and a["usage"]["completion_tokens"] == 3, a
    status, a = post(node.url, key, {"preset_id": pid, "input_context": "x"})
    assert status == 200 and a["usage"]["completion_tokens"] == 2, "the current one is version 4 (= 1)"
    for bad, field in [({"preset_id": pid, "preset_version": 0}, "preset_version"), ({"preset_id": pid, "preset_version": "2"}, "preset_version"),
                       ({"prompt": "x", "preset_version": 2}, "preset_version")]:
        status, e = post(node.url, key, bad)
        assert status == 400 and e["error"]["field"] == field, (bad, e)
    status, e = post(node.url, key, {"preset_id": pid, "preset_version": 99})
    assert status == 404, e
    # Owner only; 404 for a missing version; gone with the preset.
    for path in [f"/v1/presets/{pid}/versions", f"/v1/presets/{pid}/versions/1"]:
        assert call(node, other, "GET", path)[0] == 404
    assert call(node, other, "POST", f"/v1/presets/{pid}/versions/1/restore")[0] == 404
    assert call(node, key, "GET", f"/v1/presets/{pid}/versions/9")[0] == 404
    assert call(node, key, "GET", f"/v1/presets/{pid}/versions?limit=0")[0] == 400
    assert call(node, key, "DELETE", f"/v1/presets/{pid}")[0] == 200
    assert call(node, key, "GET", f"/v1/presets/{pid}/versions")[0] == 404
