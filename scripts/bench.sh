#!/usr/bin/env bash
# Runs the benchmarks and prints their figures (not a test: nothing here passes or fails on speed).
#   scripts/bench.sh            all of them (~3 minutes on 2 cores, plus ~6 the first time the 10 M presets are seeded)
#   scripts/bench.sh ws|ws100k|completions|fleet|presets|proxy|outbox   (fleet and proxy need REDIS_URL; presets also DATABASE_URL)
set -euo pipefail
cd "$(dirname "$0")/.."
swift build -c release 2>&1 | grep -v "prohibited flag" | tail -1
BIN=.build/release/playground
what=${1:-all}
if [[ $what == all || $what == ws ]]; then
  echo "## one node: 19,000 idle WebSockets + 100 active echoing 16-byte frames, window 16"
  $BIN bench-ws --idle 19000 --active 100 --window 16 --duration 10 --clients 2
  echo "## one node: 100 connections in strict ping-pong (window 1), no coalescing possible"
  $BIN bench-ws --idle 0 --active 100 --window 1 --duration 10 --clients 1
fi
if [[ $what == all || $what == ws100k ]]; then
  echo "## six node processes sharing one port (SO_REUSEPORT): 100,000 idle WebSockets"
  $BIN bench-ws --servers 6 --server-loops 1 --idle 100000 --active 0 --duration 1 --warmup 0 --clients 6
fi
if [[ $what == all || $what == completions ]]; then
  echo "## completions: WebSocket open loop at 1,000/s, closed loop, and SSE"
  $BIN bench --rate 1000 --duration 8 --connections 64 --window 8
fi
if [[ $what == all || $what == fleet ]]; then
  if [[ -z ${REDIS_URL:-} ]]; then
    echo "## fleet: skipped (set REDIS_URL)"
  else
    echo "## the distributed path (gateway → Redis → worker → Redis → gateway) beside one node, same run"
    $BIN bench --paths local,fleet --phases rate,max,sse --duration 5
    echo "## cancel latency through the fleet"
    python3 scripts/bench-cancel.py --rounds 300
  fi
fi
if [[ $what == all || $what == presets ]]; then
  echo "## preset search at scale: typo-tolerant beside the trigram search of before, quiet and with writes (its own PostgreSQL)"
  scripts/bench-presets.sh "${PRESETS_N:-10000000}" "${PRESETS_USERS:-100000}"
  if [[ -z ${REDIS_URL:-} || -z ${DATABASE_URL:-} ]]; then
    echo "## preset cache: skipped (set REDIS_URL and DATABASE_URL)"
  else
    echo "## preset load by id through the Redis cache vs PostgreSQL (one at a time, then 16 in flight); outbox replay"
    $BIN bench-preset-cache --concurrency 1 --loads 5000 --writes 0
    $BIN bench-preset-cache --concurrency 16 --loads 20000 --writes 2000
  fi
fi
if [[ $what == all || $what == proxy ]]; then
  if [[ -z ${REDIS_URL:-} ]]; then
    echo "## model proxy: skipped (set REDIS_URL)"
  else
    echo "## the model proxy: straight to a model-server vs gateway → worker (proxy) → model-server, same run"
    python3 scripts/bench-proxy.py --requests 500 --runs 3 --concurrency 1 --streams 10
    python3 scripts/bench-proxy.py --requests 2000 --runs 3 --concurrency 16 --streams 1000
  fi
fi
if [[ $what == all || $what == outbox ]]; then
  echo "## preset writes refused at the outbox's bound during a PostgreSQL outage: their cost, and other users meanwhile"
  python3 scripts/bench-outbox-refusals.py --writes 300
fi
