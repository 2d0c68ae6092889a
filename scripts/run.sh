#!/usr/bin/env bash
# Installs what is missing, builds a release binary, starts a local PostgreSQL 15 and a local Redis
# (data in .data/, loopback only) unless DATABASE_URL / REDIS_URL point elsewhere, mints a local API
# key once, and starts one node. Prints a URL that signs the browser in.
#   scripts/run.sh                       (PLAYGROUND_PORT=8080 PLAYGROUND_HOST=127.0.0.1 by default)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
echo "building (release)…" >&2
swift build -c release 2>&1 | grep -v "prohibited flag" | tail -1
BIN=.build/release/playground
mkdir -p .data
if [[ -z ${DATABASE_URL:-} ]]; then
  DATABASE_URL=$(scripts/pg.sh start .data/postgres "${PLAYGROUND_PG_PORT:-5433}")
  echo "PostgreSQL 15: $DATABASE_URL (data in .data/postgres; stop with: scripts/pg.sh stop .data/postgres)" >&2
fi
export DATABASE_URL
if [[ -z ${REDIS_URL:-} ]]; then
  REDIS_URL=$(scripts/redis.sh start .data/redis "${PLAYGROUND_REDIS_PORT:-6389}")
  echo "Redis: $REDIS_URL (data in .data/redis; stop with: scripts/redis.sh stop .data/redis)" >&2
fi
export REDIS_URL
$BIN migrate >&2
# One local key, kept in .data/local-key (mode 600) and reused while it is valid.
if [[ ! -s .data/local-key ]] || ! $BIN admin keys check --key "$(cat .data/local-key)"; then
  (umask 077; $BIN admin keys create --user local 2>/dev/null > .data/local-key)
fi
export PLAYGROUND_HOST=${PLAYGROUND_HOST:-127.0.0.1}
export PLAYGROUND_PORT=${PLAYGROUND_PORT:-8080}
echo >&2
echo "Playground: http://$PLAYGROUND_HOST:$PLAYGROUND_PORT/#key=$(cat .data/local-key)" >&2
echo "  (that link signs this browser in as 'local'; API key for SDKs: $(cat .data/local-key))" >&2
echo "  health: /healthz   metrics: /metrics   Ctrl-C stops the node" >&2
exec $BIN serve "$@"
