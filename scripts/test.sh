#!/usr/bin/env bash
# Runs every test: unit and live tests (swift test), the Autobahn|Testsuite, and bounded fuzzing.
# Installs what it needs first. A stage whose server does not start fails; nothing is skipped.
#   scripts/test.sh            everything (FUZZ_SECONDS=60 per target by default)
set -uo pipefail
cd "$(dirname "$0")/.."
FUZZ_SECONDS=${FUZZ_SECONDS:-60}
mkdir -p reports
passed=0; failed=0; failures=()

stage() {
  local name=$1; shift
  local start=$(date +%s)
  echo "=== $name"
  if "$@"; then
    passed=$((passed + 1)); echo "=== $name: ok ($(( $(date +%s) - start )) s)"
  else
    failed=$((failed + 1)); failures+=("$name"); echo "=== $name: FAILED ($(( $(date +%s) - start )) s)"
  fi
}

scripts/install-deps.sh --test || { echo "dependency installation failed"; echo "stages: 0 passed, 1 failed"; exit 1; }

# A PostgreSQL of the tests' own (fsync off), stopped on exit. Tests fail, never skip, without it.
PG_DIR=.data-test/postgres
export DATABASE_URL
if ! DATABASE_URL=$(scripts/pg.sh start "$PG_DIR" "${PLAYGROUND_TEST_PG_PORT:-5434}" --fast); then
  echo "PostgreSQL did not start"; echo "stages: 0 passed, 1 failed"; exit 1
fi
# And a Redis of their own (no persistence, DEBUG allowed), emptied first.
REDIS_DIR=.data-test/redis
export REDIS_URL
if ! REDIS_URL=$(scripts/redis.sh start "$REDIS_DIR" "${PLAYGROUND_TEST_REDIS_PORT:-6390}" --ephemeral); then
  scripts/pg.sh stop "$PG_DIR"; echo "Redis did not start"; echo "stages: 0 passed, 1 failed"; exit 1
fi
trap 'scripts/pg.sh stop "$PG_DIR"; scripts/redis.sh stop "$REDIS_DIR"' EXIT
redis-cli -p "${PLAYGROUND_TEST_REDIS_PORT:-6390}" FLUSHALL >/dev/null
# Every run starts from an empty database: migrations are tested from scratch each time.
runuser -u postgres -- "$(ls -d /usr/lib/postgresql/15/bin)/psql" -q -d "$DATABASE_URL" \
  -c "SET client_min_messages = warning" -c "DROP SCHEMA public CASCADE" -c "CREATE SCHEMA public" >/dev/null

swift_tests() {
  swift build --build-tests 2>&1 | grep -vE "prohibited flag|^warning: 'main'" | tail -3
  swift test --skip-build 2>&1 | tee reports/swift-test.log | grep -E "error:|failed|Executed .* tests" | tail -15
  return "${PIPESTATUS[0]}"
}
release_build() { swift build -c release 2>&1 | grep -v "prohibited flag" | tail -1; return "${PIPESTATUS[0]}"; }

stage "swift test (unit, corpus, live sockets)" swift_tests
stage "release build" release_build
e2e() {
  (cd Tests/e2e && python3 -m pytest -q -p no:cacheprovider .) > reports/e2e.log 2>&1
  local rc=$?
  if ((rc)); then grep -E "^(E  |FAILED|ERROR)" reports/e2e.log | head -60; fi
  tail -1 reports/e2e.log
  return $rc
}
stage "end to end: openai SDK, websockets, headless Chromium" e2e
stage "autobahn testsuite (groups 1-7, 9, 10)" scripts/autobahn.sh .build/release/playground
stage "fuzzing (${FUZZ_SECONDS}s per target)" scripts/fuzz.sh "$FUZZ_SECONDS"

echo
if ((failed)); then printf 'failed stage: %s\n' "${failures[@]}"; fi
echo "stages: $passed passed, $failed failed"
((failed == 0))
