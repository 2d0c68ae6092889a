#!/usr/bin/env bash
# Runs the Autobahn|Testsuite fuzzing client (groups 1-7, 9, 10) against /_conformance/echo and
# fails unless every case's behavior and behaviorClose are OK, NON-STRICT or INFORMATIONAL.
#   scripts/autobahn.sh [path/to/playground]
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-.build/release/playground}
WSTEST=.build-tools/autobahn/bin/wstest
[[ -x $WSTEST ]] || { echo "autobahn: $WSTEST missing (run scripts/install-deps.sh --test)"; exit 1; }
OUT=reports/autobahn
rm -rf "$OUT"; mkdir -p "$OUT"
LOG=$OUT/server.log
PORT_FILE=$OUT/port
"$BIN" serve --host 127.0.0.1 --port 0 --conformance-echo --log-level warning --auth off >"$PORT_FILE" 2>"$LOG" &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT
for _ in $(seq 100); do grep -q "listening on" "$PORT_FILE" 2>/dev/null && break; sleep 0.05; done
URL=$(sed -n 's#^listening on http://##p' "$PORT_FILE")
[[ -n $URL ]] || { echo "autobahn: server did not start"; cat "$LOG"; exit 1; }
cat >"$OUT/spec.json" <<JSON
{
  "outdir": "$OUT/html",
  "servers": [{"agent": "playground", "url": "ws://$URL/_conformance/echo"}],
  "cases": ["1.*", "2.*", "3.*", "4.*", "5.*", "6.*", "7.*", "9.*", "10.*"],
  "exclude-cases": [],
  "exclude-agent-cases": {}
}
JSON
start=$(date +%s)
"$WSTEST" -m fuzzingclient -s "$OUT/spec.json" >"$OUT/wstest.log" 2>&1 || { tail -20 "$OUT/wstest.log"; exit 1; }
echo "autobahn: wstest finished in $(( $(date +%s) - start )) s"
kill -0 $SERVER 2>/dev/null || { echo "autobahn: server died during the run"; cat "$LOG"; exit 1; }
python3 - "$OUT/html/index.json" <<'PY'
import json, sys
report = json.load(open(sys.argv[1]))
ok = {"OK", "NON-STRICT", "INFORMATIONAL"}
cases = report["playground"]
bad = [(k, v["behavior"], v["behaviorClose"]) for k, v in sorted(cases.items()) if v["behavior"] not in ok or v["behaviorClose"] not in ok]
counts = {}
for v in cases.values():
    counts[v["behavior"]] = counts.get(v["behavior"], 0) + 1
print("autobahn: %d cases, behaviors %s" % (len(cases), counts))
for b in bad:
    print("autobahn: FAILED case %s behavior=%s close=%s" % b)
if not cases:
    print("autobahn: no cases ran"); sys.exit(1)
print("%d passed, %d failed" % (len(cases) - len(bad), len(bad)))
sys.exit(1 if bad else 0)
PY
