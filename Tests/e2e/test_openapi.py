"""The OpenAPI 3.1 document (Public/openapi.json, made by scripts/openapi.py) describes the live
API: schemathesis generates requests from it against a node with authentication, PostgreSQL and
the built-in model, and every answer must match the document — no 5xx, documented statuses,
content types and shapes (SSE events too), auth enforced, 405 with the right Allow header."""
import json
import os
import subprocess
import urllib.request

from conftest import ROOT, Node, make_key

ST = os.path.join(ROOT, ".build-tools", "schemathesis", "bin", "st")
CHECKS = ["not_a_server_error", "status_code_conformance", "content_type_conformance", "response_schema_conformance",
          "response_headers_conformance", "ignored_auth", "unsupported_method", "allow_header_conformance"]


def test_the_document_is_what_the_script_makes_and_the_node_serves_it():
    out = subprocess.run(["python3", os.path.join(ROOT, "scripts", "openapi.py"), "--check"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    node = Node("--model-ttft-ms", "0", "--model-token-ms", "0", redis=False)
    try:
        with urllib.request.urlopen(node.url + "/openapi.json", timeout=5) as r:
            served = json.loads(r.read())
        with open(os.path.join(ROOT, "Public", "openapi.json")) as f:
            assert served == json.load(f)
        assert served["openapi"].startswith("3.1")
    finally:
        node.stop()


def test_every_answer_matches_the_document():
    assert os.access(ST, os.X_OK), f"{ST} missing: run scripts/install-deps.sh --test"
    key = make_key("openapi-user")
    node = Node("--rate-limit-rpm", "0", "--max-concurrent", "0", "--model-ttft-ms", "0", "--model-token-ms", "0", redis=False)
    try:
        def schemathesis():
            return subprocess.run([ST, "--no-color", "run", node.url + "/openapi.json", "-H", f"Authorization: Bearer {key}",
                                   "--checks", ",".join(CHECKS), "--max-time", "75", "--workers", "2",
                                   "--seed", "18"],
                                  capture_output=True, text=True, cwd=ROOT, timeout=240)
        out = schemathesis()
        # CPython 3.11's parser can fail inside the tool itself (hypothesis describing a lambda near
        # the recursion limit): not an answer of ours. Run again once; any other failure stands.
        if out.returncode != 0 and "AST constructor recursion depth mismatch" in out.stdout + out.stderr:
            out = schemathesis()
        tail = out.stdout[-6000:] + out.stderr[-2000:]
        assert out.returncode == 0, tail
        assert "passed" in out.stdout and node.proc.poll() is None, tail
    finally:
        node.stop()
