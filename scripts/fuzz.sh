#!/usr/bin/env bash
# Builds the libFuzzer targets (HTTP parser, WebSocket frame parser + state machine, JSON parser,
# WebSocket envelope → request decoding, upstream HTTP response + SSE parsers, stream-link frames) with AddressSanitizer and runs each for a bounded time
# over a copy of the committed seed corpus.
#   scripts/fuzz.sh [seconds-per-target] [target...]     (default 60 s, every target)
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER_TARGET=${1:-60}
PAIRS="FuzzHTTP:http FuzzWebSocket:websocket FuzzJSON:json FuzzEnvelope:envelope FuzzUpstream:upstream FuzzLink:link"
if [ $# -gt 1 ]; then
  shift
  selected=""
  for want in "$@"; do
    match=$(for pair in $PAIRS; do [ "${pair%%:*}" = "$want" ] && echo "$pair"; done)
    [ -n "$match" ] || { echo "fuzz: no target $want (have: $PAIRS)" >&2; exit 2; }
    selected="$selected $match"
  done
  PAIRS=$selected
fi
export SWIFT_BACKTRACE=enable=no ASAN_OPTIONS=detect_leaks=0
# One scratch path: modules the targets share compile once.
for pair in $PAIRS; do
  product=${pair%%:*}
  swift build --scratch-path .build-fuzz -c debug -Xswiftc -sanitize=fuzzer,address -Xswiftc -DFUZZING -Xswiftc -Xclang-linker -Xswiftc -fuse-ld=lld \
    --product $product 2>&1 | grep -v "prohibited flag" | tail -1
done
mkdir -p reports/fuzz
status=0
for pair in $PAIRS; do
  target=${pair%%:*}; seeds=${pair##*:}
  work=$(mktemp -d)
  cp Tests/fuzz-corpus/$seeds/* "$work/"
  log=reports/fuzz/$target.log
  if .build-fuzz/debug/$target "$work" -max_total_time="$SECONDS_PER_TARGET" -timeout=10 -rss_limit_mb=2048 \
       -artifact_prefix=reports/fuzz/$target- -print_final_stats=1 >"$log" 2>&1; then
    runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo "?")
    echo "fuzz: $target ok, $runs runs in ${SECONDS_PER_TARGET}s, 0 crashes"
  else
    echo "fuzz: $target FAILED (see $log)"; tail -30 "$log"; status=1
  fi
  rm -rf "$work"
done
exit $status
