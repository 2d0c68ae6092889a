"""The official openai Python SDK against a running node: it must work unchanged."""
import json
import urllib.request
import uuid

import openai
import pytest
from conftest import auth


@pytest.fixture
def client(node):
    return openai.OpenAI(base_url=node.url + "/v1", api_key=node.key, max_retries=0, timeout=30)


def test_models_list(client):
    ids = [m.id for m in client.models.list().data]
    assert ids == ["builtin"]


def test_completion_non_streaming(client):
    r = client.completions.create(model="builtin", prompt="The garden was quiet", max_tokens=12, seed=3)
    assert r.object == "text_completion"
    assert r.choices[0].text.strip()
    assert r.choices[0].finish_reason in ("stop", "length")
    assert 1 <= r.usage.completion_tokens <= 12
    assert r.usage.prompt_tokens == 4
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def test_completion_streaming_matches_non_streaming(client):
    args = dict(model="builtin", prompt="The rocket stood", max_tokens=20, seed=11, temperature=0.8)
    whole = client.completions.create(**args).choices[0].text
    chunks = list(client.completions.create(stream=True, **args))
    text = "".join(c.choices[0].text for c in chunks)
    assert text == whole
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")
    assert sum(1 for c in chunks if c.choices[0].text) >= 2, "one chunk per token, not one blob"


def test_chat_non_streaming(client):
    r = client.chat.completions.create(model="builtin", messages=[
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Tell me about bread"}], max_tokens=10, seed=5)
    assert r.object == "chat.completion"
    assert r.choices[0].message.role == "assistant"
    assert r.choices[0].message.content.strip()


def test_chat_streaming(client):
    stream = client.chat.completions.create(model="builtin", messages=[{"role": "user", "content": "The train"}],
                                            max_tokens=15, seed=9, stream=True)
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text.strip()
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")


@pytest.mark.parametrize("field,value", [
    ("temperature", 2.5), ("temperature", -0.1), ("temperature", "hot"),
    ("top_p", 0), ("top_p", 1.01), ("max_tokens", 0), ("max_tokens", 5000), ("max_tokens", 2.5),
    ("presence_penalty", 2.01), ("frequency_penalty", -3), ("stop", ["a", "b", "c", "d", "e"]), ("stop", 7),
    ("stop", [""]), ("seed", 1.5), ("model", "gpt-nonexistent"), ("n", 2),
])
def test_invalid_parameter_names_the_field(client, field, value):
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model="builtin", prompt="x", max_tokens=5, extra_body={field: value})
    err = e.value.body
    assert err["code"] == "invalid_request"
    assert err["param"] == field
    assert field in err["message"]


def test_missing_prompt_is_an_error(client):
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model="builtin", prompt=None, max_tokens=5)
    assert e.value.body["param"] == "prompt"


def test_unknown_fields_are_ignored(client):
    r = client.completions.create(model="builtin", prompt="The cat", max_tokens=3,
                                  extra_body={"best_of": 1, "logit_bias": {}, "user": "u1", "whatever": [1, 2]})
    assert r.choices[0].text


def test_defaults_filled(client):
    r = client.completions.create(model="builtin", prompt="The city never sleeps")
    assert r.usage.completion_tokens <= 256


def test_stop_sequence_honoured(client):
    for seed in range(1, 6):
        r = client.completions.create(model="builtin", prompt="The sea was calm", max_tokens=80, temperature=0.9,
                                      seed=seed, stop=["."])
        assert "." not in r.choices[0].text
        assert r.choices[0].finish_reason in ("stop", "length")
    r = client.completions.create(model="builtin", prompt="The sea was calm", max_tokens=200, temperature=0, stop=[" the"])
    assert " the" not in r.choices[0].text


def test_seed_reproducible(client):
    args = dict(model="builtin", prompt="Music is made of", max_tokens=30, temperature=1.0)
    a = client.completions.create(seed=1234, **args).choices[0].text
    b = client.completions.create(seed=1234, **args).choices[0].text
    c = client.completions.create(seed=999, **args).choices[0].text
    assert a == b
    assert a != c


def test_temperature_visibly_changes_output(client):
    def distinct(t):
        return {client.completions.create(model="builtin", prompt="Tell me about the mountain trail", max_tokens=25,
                                          temperature=t, seed=s).choices[0].text for s in range(8)}
    low, high = distinct(0.2), distinct(0.9)
    assert len(low) < len(high), (low, high)


def test_cancel_streaming_completion(slow_node):
    client = openai.OpenAI(base_url=slow_node.url + "/v1", api_key=slow_node.key, max_retries=0, timeout=30)
    rid = "cancel-" + uuid.uuid4().hex
    # seed 3: an answer of 161 tokens, so the stream is surely running when the cancel lands.
    stream = client.completions.create(model="builtin", prompt="The library", max_tokens=500, stream=True,
                                       temperature=0.9, seed=3, extra_body={"request_id": rid})
    got = []
    cancelled = False
    for chunk in stream:
        if chunk.choices[0].text:
            got.append(chunk.choices[0].text)
        if len(got) == 2 and not cancelled:
            cancelled = True
            req = urllib.request.Request(f"{slow_node.url}/v1/completions/{rid}/cancel", method="POST", data=b"",
                                         headers=auth(slow_node.key))
            body = json.loads(urllib.request.urlopen(req, timeout=5).read())
            assert body == {"request_id": rid, "status": "cancelled"}
        if chunk.choices[0].finish_reason:
            assert chunk.choices[0].finish_reason == "cancelled"
            break
    assert 2 <= len(got) < 10


def test_cancel_unknown_request_is_404(node):
    req = urllib.request.Request(f"{node.url}/v1/completions/nope-{uuid.uuid4().hex}/cancel", method="POST", data=b"",
                                 headers=auth(node.key))
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=5)
    assert e.value.code == 404
    assert json.loads(e.value.read())["error"]["code"] == "not_found"


def test_body_over_one_mib_is_413(node):
    body = json.dumps({"model": "builtin", "prompt": "x" * (1 << 20)}).encode()
    req = urllib.request.Request(f"{node.url}/v1/completions", data=body, headers={"Content-Type": "application/json", **auth(node.key)})
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=10)
    assert e.value.code == 413
    assert json.loads(e.value.read())["error"]["code"] == "payload_too_large"


def test_malformed_json_body(node):
    req = urllib.request.Request(f"{node.url}/v1/completions", data=b'{"prompt": "x",', headers={"Content-Type": "application/json", **auth(node.key)})
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=5)
    assert e.value.code == 400
    assert json.loads(e.value.read())["error"]["code"] == "invalid_request"


def test_no_key_is_401(node):
    client = openai.OpenAI(base_url=node.url + "/v1", api_key="pgk_not-a-real-key-0000000000000000", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as e:
        client.completions.create(model="builtin", prompt="x", max_tokens=2)
    assert e.value.body["code"] == "unauthorized"
    req = urllib.request.Request(f"{node.url}/v1/models")
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=5)
    assert e.value.code == 401


def test_identity_never_comes_from_the_body(node):
    from conftest import key_for
    client = openai.OpenAI(base_url=node.url + "/v1", api_key=key_for("bob"), max_retries=0)
    rid = "owner-" + uuid.uuid4().hex
    client.completions.create(model="builtin", prompt="x", max_tokens=2, extra_body={"request_id": rid, "user_id": "alice", "user": "alice"})
    # alice cannot cancel or replay bob's request id: ids are scoped by the key's user, not by body fields.
    req = urllib.request.Request(f"{node.url}/v1/completions/{rid}/cancel", method="POST", data=b"", headers=auth(node.key))
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=5)
    assert e.value.code == 404
