#!/usr/bin/env python3
"""Writes Public/openapi.json, the OpenAPI 3.1 document of Playground's public HTTP API (served by
every node at /openapi.json). The document is kept in the repository; the test command checks it
is what this script makes and runs schemathesis against a live node with it.

  scripts/openapi.py            write Public/openapi.json
  scripts/openapi.py --check    exit 1 if Public/openapi.json is not what this script makes
"""
import argparse
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "Public", "openapi.json")

NULLABLE_STR = {"type": ["string", "null"]}


def ref(name):
    return {"$ref": f"#/components/schemas/{name}"}


def json_body(schema, required=True):
    return {"required": required, "content": {"application/json": {"schema": schema}}}


def answer(description, schema=None, content_type="application/json", headers=None):
    a = {"description": description}
    if schema is not None:
        a["content"] = {content_type: {"schema": schema}}
    if headers:
        a["headers"] = headers
    return a


ERROR = answer("An error: `error.code` is stable (docs/API.md); an upstream model server's own 4xx carries its error object as it wrote it", ref("Error"))
# One server-sent event: `data:` holds a chunk (JSON), or `[DONE]` at the end.
SSE = {"type": "object", "required": ["data"],
       "description": "`data: {chunk}` events (chat.completion.chunk / text_completion; an error after the stream began as "
                      "`{\"error\": {...}}`), then `data: [DONE]` (docs/API.md)",
       "properties": {"event": {"type": "string"}, "id": {"type": "string"}, "retry": {"type": "integer"},
                      "data": {"type": "string", "pattern": "^(\\[DONE\\]|\\{.*\\})$", "contentMediaType": "application/json"}}}


def errors(*statuses):
    return {str(s): ERROR for s in statuses} | {"default": ERROR}


NUMBER_0_2 = {"type": ["number", "null"], "minimum": 0, "maximum": 2}
PENALTY = {"type": ["number", "null"], "minimum": -2, "maximum": 2}
COMMON_FIELDS = {
    "model": {"type": ["string", "null"], "description": "`builtin` or an alias of the models file (GET /v1/models)"},
    "temperature": NUMBER_0_2,
    "top_p": {"type": ["number", "null"], "exclusiveMinimum": 0, "maximum": 1},
    "max_tokens": {"type": ["integer", "null"], "minimum": 1, "description": "at most the node's cap (--max-tokens-cap, 2048)"},
    "max_completion_tokens": {"type": ["integer", "null"], "minimum": 1},
    "stop": {"oneOf": [{"type": "string", "minLength": 1, "maxLength": 256},
                       {"type": "array", "maxItems": 4, "items": {"type": "string", "minLength": 1, "maxLength": 256}},
                       {"type": "null"}]},
    "presence_penalty": PENALTY,
    "frequency_penalty": PENALTY,
    "seed": {"type": ["integer", "null"]},
    "n": {"type": ["integer", "null"], "minimum": 1, "maximum": 8, "description": "1 for the built-in model"},
    "stream": {"type": ["boolean", "null"]},
    "stream_options": {"type": ["object", "null"], "properties": {"include_usage": {"type": ["boolean", "null"]}}},
    "request_id": {"type": ["string", "null"], "pattern": "^[A-Za-z0-9._:-]{1,128}$"},
}

USAGE = {"type": "object", "required": ["prompt_tokens", "completion_tokens", "total_tokens"],
         "properties": {"prompt_tokens": {"type": "integer"}, "completion_tokens": {"type": "integer"},
                        "total_tokens": {"type": "integer"}}}
TIMINGS = {"type": "object", "properties": {"queue_ms": {"type": "number"}, "ttft_ms": {"type": ["number", "null"]},
                                            "total_ms": {"type": "number"}, "upstream": {"type": "string"}}}
FINISH = {"type": ["string", "null"], "description": "stop, length, cancelled, or an upstream's own (tool_calls, content_filter, …)"}

PRESET_PARAMETERS = {"type": ["object", "null"], "description": "checked like a completion's; stored as given",
                     "properties": {k: v for k, v in COMMON_FIELDS.items()
                                    if k in ("model", "temperature", "top_p", "max_tokens", "stop", "presence_penalty",
                                             "frequency_penalty", "seed")}}
PRESET_FIELDS = {
    "name": {"type": "string", "minLength": 1, "maxLength": 120},
    "prompt": {"type": "string", "maxLength": 32768},
    "description": {"type": ["string", "null"], "maxLength": 2000},
    "tags": {"type": ["array", "null"], "maxItems": 16, "items": {"type": "string", "maxLength": 40}},
    "parameters": PRESET_PARAMETERS,
    "mode": {"enum": ["completion", "chat", None], "description": "completion (one prompt, the default) or chat (messages)"},
    "messages": {"type": ["array", "null"], "maxItems": 50, "description": "a chat preset's messages (contents ≤ 32 KiB in all)",
                 "items": {"type": "object", "required": ["role", "content"],
                           "properties": {"role": {"enum": ["system", "user", "assistant"]}, "content": {"type": "string"}}}},
}
PRESET_MESSAGES = {"type": "array", "items": {"type": "object", "required": ["role", "content"],
                                              "properties": {"role": {"type": "string"}, "content": {"type": "string"}}}}

SCHEMAS = {
    "Error": {
        "type": "object", "required": ["error"],
        "properties": {"error": {
            "type": "object", "required": ["message"],
            "properties": {"code": NULLABLE_STR, "message": {"type": "string"}, "type": NULLABLE_STR, "param": NULLABLE_STR,
                           "field": {"type": "string"}, "retry_after_ms": {"type": "integer", "minimum": 0}}}}},
    "CompletionRequest": {
        "type": "object", "description": "POST /v1/completions: a prompt, or a preset run (preset_id and input_context). "
                                         "For an upstream model every field is forwarded as sent (docs/API.md).",
        "properties": COMMON_FIELDS | {
            "prompt": {"oneOf": [{"type": "string"}, {"type": "array", "minItems": 1, "maxItems": 1, "items": {"type": "string"}},
                                 {"type": "null"}]},
            "preset_id": {"type": ["string", "null"], "minLength": 1, "maxLength": 64},
            "input_context": {"type": ["string", "null"]},
            "preset_version": {"type": ["integer", "null"], "minimum": 1},
            "variables": {"type": ["object", "null"], "additionalProperties": {"type": "string"},
                          "description": "values of the preset's {{name}} placeholders"},
            "logprobs": {"type": ["integer", "boolean", "null"]}}},
    "ChatMessage": {
        "type": "object", "required": ["role"],
        "properties": {"role": {"enum": ["system", "user", "assistant", "developer", "tool"]},
                       "content": {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "object"}}, {"type": "null"}]},
                       "name": {"type": "string"}, "tool_call_id": {"type": "string"},
                       "tool_calls": {"type": "array", "items": {"type": "object"}}, "refusal": NULLABLE_STR}},
    "ChatCompletionRequest": {
        "type": "object",
        "description": "messages, or a chat preset's run (preset_id, input_context, variables; messages then follow the preset's). "
                       "For an upstream model every field is forwarded as sent: tools, tool_choice, response_format, logprobs, "
                       "…; the built-in model refuses those it cannot do with 400 naming the field.",
        "properties": COMMON_FIELDS | {
            "messages": {"type": "array", "minItems": 1, "maxItems": 256, "items": ref("ChatMessage")},
            "preset_id": {"type": ["string", "null"], "minLength": 1, "maxLength": 64},
            "input_context": {"type": ["string", "null"]},
            "preset_version": {"type": ["integer", "null"], "minimum": 1},
            "variables": {"type": ["object", "null"], "additionalProperties": {"type": "string"},
                          "description": "values of the chat preset's {{name}} placeholders"},
            "tools": {"type": ["array", "null"], "items": {"type": "object"}},
            "tool_choice": {"oneOf": [{"type": "string"}, {"type": "object"}, {"type": "null"}]},
            "response_format": {"type": ["object", "null"], "properties": {"type": {"type": "string"}}},
            "logprobs": {"type": ["boolean", "null"]},
            "top_logprobs": {"type": ["integer", "null"]}}},
    "Completion": {
        "type": "object", "required": ["id", "object", "created", "model", "choices"],
        "properties": {"id": {"type": "string"}, "object": {"enum": ["text_completion", "chat.completion"]},
                       "created": {"type": "integer"}, "model": {"type": "string"},
                       "choices": {"type": "array", "items": {
                           "type": "object", "required": ["index", "finish_reason"],
                           "properties": {"index": {"type": "integer"}, "text": {"type": "string"},
                                          "message": {"type": "object", "properties": {
                                              "role": {"const": "assistant"}, "content": NULLABLE_STR, "refusal": NULLABLE_STR,
                                              "tool_calls": {"type": "array", "items": {
                                                  "type": "object", "properties": {
                                                      "id": NULLABLE_STR, "type": {"type": "string"},
                                                      "function": {"type": "object", "properties": {
                                                          "name": {"type": "string"}, "arguments": {"type": "string"}}}}}}}},
                                          "logprobs": {"type": ["object", "null"]}, "finish_reason": FINISH}}},
                       "usage": USAGE, "timings": TIMINGS}},
    "CancelResult": {"type": "object", "required": ["request_id", "status"],
                     "properties": {"request_id": {"type": "string"}, "status": {"enum": ["cancelled", "finished"]}}},
    "Model": {"type": "object", "required": ["id", "object", "created", "owned_by"],
              "properties": {"id": {"type": "string"}, "object": {"const": "model"}, "created": {"type": "integer"},
                             "owned_by": {"type": "string"}}},
    "ModelList": {"type": "object", "required": ["object", "data"],
                  "properties": {"object": {"const": "list"}, "data": {"type": "array", "items": ref("Model")}}},
    "PresetCreate": {"type": "object", "required": ["name"], "properties": PRESET_FIELDS,
                     "description": "prompt is required for a completion preset, messages for a chat preset"},
    "PresetUpdate": {"type": "object", "properties": PRESET_FIELDS},
    "Preset": {
        "type": "object", "required": ["id", "object", "name", "prompt"],
        "properties": {"id": {"type": "string"}, "object": {"const": "preset"}, "name": {"type": "string"},
                       "description": {"type": "string"}, "tags": {"type": "array", "items": {"type": "string"}},
                       "prompt": {"type": "string"}, "variables": {"type": "array", "items": {"type": "string"}},
                       "mode": {"enum": ["completion", "chat"]}, "messages": PRESET_MESSAGES,
                       "parameters": {"type": "object"},
                       "created_at": {"type": "string"}, "updated_at": {"type": "string"}, "version": {"type": "integer"},
                       "score": {"type": "number"}, "pending": {"type": "boolean"}, "degraded": {"type": "boolean"}}},
    "PresetList": {"type": "object", "required": ["object", "data"],
                   "properties": {"object": {"const": "list"}, "data": {"type": "array", "items": ref("Preset")},
                                  "next_cursor": NULLABLE_STR, "degraded": {"type": "boolean"}}},
    "Deleted": {"type": "object", "required": ["id", "deleted"],
                "properties": {"id": {"type": "string"}, "deleted": {"const": True}, "pending": {"type": "boolean"},
                               "verified": {"type": "boolean"}, "message": {"type": "string"}}},
    "PendingList": {"type": "object", "required": ["object", "data"],
                    "properties": {"object": {"const": "list"}, "data": {"type": "array", "items": {
                        "type": "object", "required": ["key", "op", "status"],
                        "properties": {"key": {"type": "string"}, "object": {"const": "preset.write"},
                                       "op": {"enum": ["create", "update", "delete"]}, "preset_id": {"type": "string"},
                                       "status": {"enum": ["queued", "failed"]}, "queued_at": {"type": "string"},
                                       "failed_at": {"type": "string"}, "fields": {"type": "object"},
                                       "error": {"type": "object"}}}}}},
    "PresetVersion": {
        "type": "object", "required": ["object", "preset_id", "version", "prompt"],
        "properties": {"object": {"const": "preset.version"}, "preset_id": {"type": "string"}, "version": {"type": "integer"},
                       "created_at": {"type": "string"}, "name": {"type": "string"}, "description": {"type": "string"},
                       "tags": {"type": "array", "items": {"type": "string"}}, "prompt": {"type": "string"},
                       "variables": {"type": "array", "items": {"type": "string"}}, "parameters": {"type": "object"},
                       "mode": {"enum": ["completion", "chat"]}, "messages": PRESET_MESSAGES}},
    "VersionList": {"type": "object", "required": ["object", "data"],
                    "properties": {"object": {"const": "list"}, "data": {"type": "array", "items": ref("PresetVersion")},
                                   "next_cursor": NULLABLE_STR}},
    "ImportResults": {
        "type": "object", "required": ["object", "data", "created", "failed"],
        "properties": {"object": {"const": "list"}, "created": {"type": "integer"}, "failed": {"type": "integer"},
                       "data": {"type": "array", "items": {
                           "type": "object", "required": ["index", "status"],
                           "properties": {"index": {"type": "integer"}, "status": {"enum": ["created", "failed"]},
                                          "preset": ref("Preset"), "error": {"type": "object"}}}}}},
    "Dismissed": {"type": "object", "required": ["key", "dismissed"],
                  "properties": {"key": {"type": "string"}, "dismissed": {"const": True}}},
    "Identity": {"type": "object", "required": ["user_id"],
                 "properties": {"user_id": {"type": "string"}, "org_id": NULLABLE_STR}},
    "Status": {"type": "object", "required": ["status"], "properties": {"status": {"type": "string"}}},
}

COMPLETION_ANSWERS = {
    "200": {"description": "the whole answer, or with `stream: true` an SSE stream of chunks",
            "content": {"application/json": {"schema": ref("Completion")}, "text/event-stream": {"schema": SSE}},
            "headers": {"X-RateLimit-Limit": {"schema": {"type": "string"}},
                        "X-RateLimit-Remaining": {"schema": {"type": "string"}}}},
} | errors(400, 401, 404, 409, 413, 415, 422, 429, 502, 503)

ID = {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}

PATHS = {
    "/v1/completions": {"post": {
        "operationId": "createCompletion", "summary": "A text completion, streamed or whole; a preset run",
        "requestBody": json_body(ref("CompletionRequest")), "responses": COMPLETION_ANSWERS}},
    "/v1/chat/completions": {"post": {
        "operationId": "createChatCompletion", "summary": "A chat completion, streamed or whole",
        "requestBody": json_body(ref("ChatCompletionRequest")), "responses": COMPLETION_ANSWERS}},
    "/v1/completions/{request_id}/cancel": {"post": {
        "operationId": "cancelCompletion", "summary": "Stops a running completion of yours",
        "parameters": [{"name": "request_id", "in": "path", "required": True, "schema": {"type": "string"}}],
        "responses": {"200": answer("cancelled, or already finished", ref("CancelResult"))} | errors(404)}},
    "/v1/models": {"get": {
        "operationId": "listModels", "summary": "builtin and the models file's aliases",
        "responses": {"200": answer("the models", ref("ModelList"))} | errors(401)}},
    "/v1/models/{model}": {"get": {
        "operationId": "retrieveModel", "summary": "One model",
        "parameters": [{"name": "model", "in": "path", "required": True, "schema": {"type": "string"}}],
        "responses": {"200": answer("the model", ref("Model"))} | errors(401, 404)}},
    "/v1/presets": {
        "post": {"operationId": "createPreset", "summary": "Saves a preset (202 while PostgreSQL is down: applied later)",
                 "requestBody": json_body(ref("PresetCreate")),
                 "responses": {"201": answer("created", ref("Preset")), "202": answer("queued", ref("Preset"))}
                              | errors(400, 401, 409, 413, 503)},
        "get": {"operationId": "searchPresets", "summary": "Fuzzy search, or your presets newest first",
                "parameters": [{"name": "query", "in": "query", "schema": {"type": "string"}},
                               {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 100}},
                               {"name": "cursor", "in": "query", "schema": {"type": "string"}}],
                "responses": {"200": answer("a page of presets", ref("PresetList"))} | errors(400, 401, 503)}},
    "/v1/presets/export": {"get": {
        "operationId": "exportPresets", "summary": "Your presets, whole, newest first, up to 1,000 a page",
        "parameters": [{"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000}},
                       {"name": "cursor", "in": "query", "schema": {"type": "string"}}],
        "responses": {"200": answer("a page of presets", ref("PresetList"))} | errors(400, 401, 503)}},
    "/v1/presets/import": {"post": {
        "operationId": "importPresets", "summary": "Creates each preset of the list on its own; a result per item",
        "requestBody": json_body({"type": "object", "required": ["presets"],
                                  "properties": {"presets": {"type": "array", "maxItems": 1000, "items": {"type": "object"}}}}),
        "responses": {"200": answer("one result per item, in order", ref("ImportResults"))} | errors(400, 401, 413, 503)}},
    "/v1/presets/{id}/versions": {"get": {
        "operationId": "listPresetVersions", "summary": "A preset's versions, newest first",
        "parameters": [ID, {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 100}},
                       {"name": "cursor", "in": "query", "schema": {"type": "string"}}],
        "responses": {"200": answer("a page of versions", ref("VersionList"))} | errors(400, 401, 404, 503)}},
    "/v1/presets/{id}/versions/{version}": {"get": {
        "operationId": "getPresetVersion", "parameters": [ID, {"name": "version", "in": "path", "required": True, "schema": {"type": "integer"}}],
        "responses": {"200": answer("the version", ref("PresetVersion"))} | errors(401, 404, 503)}},
    "/v1/presets/{id}/versions/{version}/restore": {"post": {
        "operationId": "restorePresetVersion", "summary": "A new version equal in content to this one",
        "parameters": [ID, {"name": "version", "in": "path", "required": True, "schema": {"type": "integer"}}],
        "responses": {"200": answer("the preset", ref("Preset")), "202": answer("queued", ref("Preset"))}
                     | errors(401, 404, 409, 503)}},
    "/v1/presets/pending": {"get": {
        "operationId": "listPendingPresetWrites", "summary": "Your preset writes not in the database yet",
        "responses": {"200": answer("queued and failed writes", ref("PendingList"))} | errors(401, 503)}},
    "/v1/presets/pending/{key}": {"delete": {
        "operationId": "dismissPendingPresetWrite", "summary": "Dismisses a failed write",
        "parameters": [{"name": "key", "in": "path", "required": True, "schema": {"type": "string"}}],
        "responses": {"200": answer("dismissed", ref("Dismissed"))} | errors(401, 404, 409, 503)}},
    "/v1/presets/{id}": {
        "get": {"operationId": "getPreset", "parameters": [ID],
                "responses": {"200": answer("the preset", ref("Preset"))} | errors(401, 404, 503)},
        "patch": {"operationId": "updatePreset", "parameters": [ID], "requestBody": json_body(ref("PresetUpdate")),
                  "responses": {"200": answer("updated", ref("Preset")), "202": answer("queued", ref("Preset"))}
                               | errors(400, 401, 404, 409, 413, 503)},
        "delete": {"operationId": "deletePreset", "parameters": [ID],
                   "responses": {"200": answer("deleted", ref("Deleted")), "202": answer("queued", ref("Deleted"))}
                                | errors(401, 404, 503)}},
    "/v1/session": {
        "post": {"operationId": "signIn", "summary": "A browser session from an API key (sets the pg_session cookie)",
                 "security": [],
                 "requestBody": json_body({"type": "object", "properties": {"api_key": {"type": "string"}}}, required=False),
                 "responses": {"200": answer("who you are", ref("Identity"))} | errors(400, 401, 403, 415, 503)},
        "get": {"operationId": "whoAmI", "responses": {"200": answer("who you are", ref("Identity"))} | errors(401)},
        "delete": {"operationId": "signOut", "summary": "Ends the session, if any, and clears the cookie", "security": [],
                   "responses": {"200": answer("signed out", {"type": "object"})} | errors(403)}},
    "/healthz": {"get": {"operationId": "health", "security": [],
                         "responses": {"200": answer("the process runs", ref("Status"))}}},
    "/readyz": {"get": {"operationId": "ready", "security": [],
                        "responses": {"200": answer("ready or degraded", ref("Status")),
                                      "503": answer("draining, or no capacity", ref("Status"))}}},
    "/metrics": {"get": {"operationId": "metrics", "security": [],
                         "responses": {"200": answer("Prometheus text", {"type": "string"}, "text/plain")}}},
}

DOCUMENT = {
    "openapi": "3.1.0",
    "info": {"title": "Playground", "version": "1",
             "description": "Self-hosted LLM prompt playground and streaming gateway: OpenAI-compatible completions, presets, "
                            "sessions. The WebSocket at /v1/ws carries the same routes in envelopes (docs/API.md)."},
    "servers": [{"url": "/"}],
    "security": [{"bearer": []}, {"cookie": []}],
    "paths": PATHS,
    "components": {
        "schemas": SCHEMAS,
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "description": "an API key (pgk_…)"},
                            "cookie": {"type": "apiKey", "in": "cookie", "name": "pg_session"}}},
}


def render():
    return json.dumps(DOCUMENT, indent=1, sort_keys=False) + "\n"


def main():
    ap = argparse.ArgumentParser(description="Writes (or checks) Public/openapi.json.")
    ap.add_argument("--check", action="store_true", help="exit 1 if the file is not what this script makes")
    args = ap.parse_args()
    text = render()
    if args.check:
        try:
            with open(OUT) as f:
                same = f.read() == text
        except FileNotFoundError:
            same = False
        if not same:
            print(f"{OUT} is out of date: run scripts/openapi.py", file=sys.stderr)
            return 1
        return 0
    with open(OUT, "w") as f:
        f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
