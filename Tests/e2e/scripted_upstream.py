"""A scripted OpenAI-compatible model server for the proxy fidelity tests: it records every
request it gets (`GET /requests`, `DELETE /requests`) and answers as OpenAI does, by scenario —
the scenario is the `model` it is asked for (the upstream's `model` in the models file):

  echo       content "Hello", " world", finish "stop"
  tools      two parallel tool calls, one after the other as OpenAI streams them, finish "tool_calls"
  toolsmix   the same with their argument fragments interleaved
  logprobs   content with per-token logprobs (and top_logprobs)
  json       a JSON object as content, in fragments
  refusal    a refusal in fragments
  n2         two choices (index 0 and 1), each with its own finish
  extra      chunks with fields nobody knows yet (kept through the proxy)
  reason     20 `reasoning_content` chunks before the content (a reasoning model)
  nlong      two choices of 4 tokens each
  azure      a first `choices: []` chunk with `prompt_filter_results`, then content
  e400 / e401 / e402 / e404 / e422 / e500   that HTTP status with an OpenAI error object

Streams carry `usage` in a final `choices: []` chunk when `stream_options.include_usage` is set,
as OpenAI does; non-streamed requests get one chat.completion object."""
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def _chunk(model, choices, **extra):
    return dict({"id": "chatcmpl-up", "object": "chat.completion.chunk", "created": 1700000000, "model": model,
                 "system_fingerprint": "fp_scripted", "choices": choices}, **extra)


def _choice(delta, finish=None, index=0, **extra):
    return dict({"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}, **extra)


def _tool_call_chunks(model, interleaved):
    """Two parallel tool calls: one after the other as OpenAI streams them, or with their
    argument fragments interleaved (what a looser server may do)."""
    starts = [(0, "call_a", "get_weather"), (1, "call_b", "get_time")]
    pieces = [(0, '{"city"'), (0, ': "Paris"}'), (1, '{"tz":'), (1, ' "CET"}')]
    yield _chunk(model, [_choice({"role": "assistant", "content": None})])
    if interleaved:
        order = [("start", 0), ("start", 1), ("piece", 0), ("piece", 2), ("piece", 1), ("piece", 3)]
    else:
        order = [("start", 0), ("piece", 0), ("piece", 1), ("start", 1), ("piece", 2), ("piece", 3)]
    for kind, i in order:
        if kind == "start":
            index, id_, name = starts[i]
            yield _chunk(model, [_choice({"tool_calls": [{"index": index, "id": id_, "type": "function",
                                                          "function": {"name": name, "arguments": ""}}]})])
        else:
            index, piece = pieces[i]
            yield _chunk(model, [_choice({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})])
    yield _chunk(model, [_choice({}, "tool_calls")])


def _content_chunks(model, pieces, finish="stop", logprobs=False, field="content"):
    yield _chunk(model, [_choice({"role": "assistant", "content": "" if field == "content" else None})])
    for i, p in enumerate(pieces):
        lp = None
        if logprobs:
            lp = {"content": [{"token": p, "logprob": -0.1 * (i + 1), "bytes": list(p.encode()),
                               "top_logprobs": [{"token": p, "logprob": -0.1 * (i + 1), "bytes": list(p.encode())},
                                                {"token": "x", "logprob": -5.0, "bytes": [120]}]}], "refusal": None}
        c = _choice({field: p})
        c["logprobs"] = lp
        yield _chunk(model, [c])
    yield _chunk(model, [_choice({}, finish)])


def scenario_chunks(model, body):
    if model in ("tools", "toolsmix"):
        return _tool_call_chunks(model, interleaved=model == "toolsmix")
    if model == "logprobs":
        return _content_chunks(model, ["Hello", " world"], logprobs=True)
    if model == "json":
        return _content_chunks(model, ['{"name": ', '"Ada", ', '"age": 36}'])
    if model == "refusal":
        return _content_chunks(model, ["I can't ", "help with that."], field="refusal")
    if model == "n2":
        def two():
            for i in range(2):
                yield _chunk(model, [_choice({"role": "assistant", "content": ""}, index=i)])
            for text in ["one", "two"]:
                for i in range(2):
                    yield _chunk(model, [_choice({"content": f"{text}{i}"}, index=i)])
            for i in range(2):
                yield _chunk(model, [_choice({}, "stop" if i == 0 else "length", index=i)])
        return two()
    if model == "reason":
        def reason():
            yield _chunk(model, [_choice({"role": "assistant", "content": ""})])
            for i in range(20):
                yield _chunk(model, [_choice({"reasoning_content": f"r{i} "})])
            yield _chunk(model, [_choice({"content": "42"})])
            yield _chunk(model, [_choice({}, "stop")])
        return reason()
    if model == "nlong":
        def nlong():
            for t in range(4):
                for i in range(2):
                    yield _chunk(model, [_choice({"content": f"c{i}t{t} "}, index=i)])
            for i in range(2):
                yield _chunk(model, [_choice({}, "length", index=i)])
        return nlong()
    if model == "azure":
        def azure():
            yield _chunk(model, [], prompt_filter_results=[{"prompt_index": 0, "content_filter_results": {}}])
            yield from _content_chunks(model, ["Hello", " world"])
        return azure()
    if model == "extra":
        def extra():
            yield _chunk(model, [_choice({"role": "assistant", "content": "", "annotations": []}, future_flag=True)],
                         service_tier="default")
            yield _chunk(model, [_choice({"content": "ok", "audio": {"id": "audio_1"}}, future_flag=True)], service_tier="default")
            yield _chunk(model, [_choice({}, "stop")], service_tier="default")
        return extra()
    return _content_chunks(model, ["Hello", " world"])


ERRORS = {
    "e400": (400, {"message": "Invalid schema for function 'get_weather'", "type": "invalid_request_error",
                   "param": "tools[0].function.parameters", "code": "invalid_function_parameters"}),
    "e401": (401, {"message": "Incorrect API key provided", "type": "invalid_request_error", "param": None,
                   "code": "invalid_api_key"}),
    "e402": (402, {"message": "Insufficient credits on the gateway account", "type": "insufficient_quota", "param": None,
                   "code": "insufficient_quota"}),
    "e404": (404, {"message": "The model `x` does not exist", "type": "invalid_request_error", "param": None,
                   "code": "model_not_found"}),
    "e422": (422, {"message": "Unprocessable: messages[1].content", "type": "invalid_request_error",
                   "param": "messages", "code": None}),
    "e500": (500, {"message": "boom", "type": "server_error", "param": None, "code": None}),
}


def _usage(body):
    return {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18,
            "completion_tokens_details": {"reasoning_tokens": 0}, "prompt_tokens_details": {"cached_tokens": 0}}


def _as_text(chunk):
    """A chat chunk in the legacy completions shape (a `/v1/completions` upstream)."""
    return dict(chunk, object="text_completion",
                choices=[{"index": c["index"], "text": c["delta"].get("content") or "", "logprobs": None,
                          "finish_reason": c["finish_reason"]} for c in chunk["choices"]])


def _aggregate(model, chunks):
    """The non-streamed answer the same scenario gives: choices merged as OpenAI would."""
    choices = {}
    for c in chunks:
        for ch in c["choices"]:
            m = choices.setdefault(ch["index"], {"index": ch["index"], "message": {"role": "assistant", "content": None},
                                                  "logprobs": None, "finish_reason": None})
            d = ch["delta"]
            for k in ("content", "refusal"):
                if d.get(k):
                    m["message"][k] = (m["message"].get(k) or "") + d[k]
            for tc in d.get("tool_calls", []):
                calls = m["message"].setdefault("tool_calls", [])
                while len(calls) <= tc["index"]:
                    calls.append({"id": None, "type": "function", "function": {"name": "", "arguments": ""}})
                t = calls[tc["index"]]
                if tc.get("id"):
                    t["id"] = tc["id"]
                f = tc.get("function", {})
                t["function"]["name"] += f.get("name", "")
                t["function"]["arguments"] += f.get("arguments", "")
            if ch.get("logprobs"):
                m["logprobs"] = m["logprobs"] or {"content": [], "refusal": None}
                m["logprobs"]["content"] += ch["logprobs"]["content"]
            if ch.get("finish_reason"):
                m["finish_reason"] = ch["finish_reason"]
    return {"id": "chatcmpl-up", "object": "chat.completion", "created": 1700000000, "model": model,
            "system_fingerprint": "fp_scripted", "choices": [choices[i] for i in sorted(choices)]}


class ScriptedUpstream:
    def __init__(self):
        self.requests = []
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _send(self, status, obj):
                data = json.dumps(obj).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                with outer.lock:
                    self._send(200, list(outer.requests))

            def do_DELETE(self):
                with outer.lock:
                    outer.requests.clear()
                self._send(200, {})

            def do_POST(self):
                n = int(self.headers.get("Content-Length", "0"))
                raw = self.rfile.read(n)
                body = json.loads(raw)
                with outer.lock:
                    outer.requests.append({"path": self.path, "body": body,
                                           "authorization": self.headers.get("Authorization")})
                model = body.get("model", "")
                if model in ERRORS:
                    status, err = ERRORS[model]
                    return self._send(status, {"error": err})
                chunks = list(scenario_chunks(model, body))
                if "/chat/" not in self.path:
                    chunks = [_as_text(c) for c in chunks]
                if not body.get("stream") and "/chat/" in self.path:
                    answer = _aggregate(model, chunks)
                    answer["usage"] = _usage(body)
                    return self._send(200, answer)
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()

                def write(text):
                    data = text.encode()
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                    self.wfile.flush()
                for c in chunks:
                    write("data: " + json.dumps(c) + "\n\n")
                    time.sleep(0.002)
                if (body.get("stream_options") or {}).get("include_usage"):
                    write("data: " + json.dumps(_chunk(model, [], usage=_usage(body))) + "\n\n")
                write("data: [DONE]\n\n")
                self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def base_url(self):
        return f"http://127.0.0.1:{self.port}/v1"

    def recorded(self):
        with self.lock:
            return list(self.requests)

    def clear(self):
        with self.lock:
            self.requests.clear()

    def close(self):
        self.server.shutdown()
        self.server.server_close()
