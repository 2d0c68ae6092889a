"""Named variables in presets: the preset lists them, a run fills them, a missing or unknown one
is refused naming it, `{{input}}` keeps taking input_context, `\\{{` is a literal `{{`."""
import uuid

from conftest import make_key, post


def test_a_preset_lists_its_variables_and_a_run_fills_them(node):
    key = make_key("vars-" + uuid.uuid4().hex[:6])
    status, p = post(node.url, key, {"name": "Brief " + uuid.uuid4().hex[:6],
                                     "prompt": "Explain {{topic}} to {{audience}}, \\{{literally}}: {{input}}",
                                     "parameters": {"max_tokens": 3, "temperature": 0}}, path="/v1/presets")
    assert status == 201 and p["variables"] == ["topic", "audience", "input"], p
    run = {"preset_id": p["id"], "input_context": "go", "variables": {"topic": "tides", "audience": "kids"}}
    status, a = post(node.url, key, run)
    assert status == 200 and a["usage"]["completion_tokens"] == 3, a
    # "Explain tides to kids, {{literally}}: go" is 9 words: the prompt the model saw.
    assert a["usage"]["prompt_tokens"] >= 7, a
    for variables, field in [({"topic": "tides"}, "variables.audience"), ({"topic": "t", "audience": "a", "audiance": "b"}, "variables.audiance"),
                             ({"topic": "t", "audience": 5}, "variables.audience"), ("x", "variables"),
                             ({"topic": "t", "audience": "a", "input": "i"}, "variables.input")]:
        status, e = post(node.url, key, dict(run, variables=variables))
        assert status == 400 and e["error"]["field"] == field, (variables, e)
    status, e = post(node.url, key, {"prompt": "x", "variables": {"a": "b"}})
    assert status == 400 and e["error"]["field"] == "variables", "variables need a preset"
    # Hostile sizes: refused from the sizes, before anything is built.
    status, big = post(node.url, key, {"name": "Many " + uuid.uuid4().hex[:6], "prompt": "{{v}}" * 6000}, path="/v1/presets")
    assert status == 201 and big["variables"] == ["v"]
    status, e = post(node.url, key, {"preset_id": big["id"], "variables": {"v": "x" * 1000}})
    assert status == 400 and e["error"]["field"] == "variables", e
