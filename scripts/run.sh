#!/usr/bin/env bash
# Installs what is missing, builds a release binary and starts one node on loopback.
#   scripts/run.sh                       (PLAYGROUND_PORT=8080 PLAYGROUND_HOST=127.0.0.1 by default)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
echo "building (release)…" >&2
swift build -c release 2>&1 | grep -v "prohibited flag" | tail -1
export PLAYGROUND_HOST=${PLAYGROUND_HOST:-127.0.0.1}
export PLAYGROUND_PORT=${PLAYGROUND_PORT:-8080}
echo "Playground node: http://$PLAYGROUND_HOST:$PLAYGROUND_PORT  (health: /healthz; Ctrl-C stops it)" >&2
exec .build/release/playground serve "$@"
