#!/usr/bin/env bash
# A private Redis for Playground: loopback only, data in a project folder. Prints the REDIS_URL on
# `start`.
#   scripts/redis.sh start DIR PORT [--ephemeral]   (--ephemeral: no persistence, DEBUG allowed: tests)
#   scripts/redis.sh stop DIR
set -euo pipefail
cmd=$1; dir=$(realpath -m "$2"); port=${3:-6380}
command -v redis-server >/dev/null || { echo "redis.sh: redis-server not found (scripts/install-deps.sh installs it)" >&2; exit 1; }
case $cmd in
  start)
    mkdir -p "$dir"
    if [[ -f $dir/redis.pid ]] && kill -0 "$(cat "$dir/redis.pid")" 2>/dev/null; then
      echo "redis://127.0.0.1:$port/0"; exit 0
    fi
    extra=(--appendonly yes --appendfsync everysec)
    [[ ${4:-} == --ephemeral ]] && extra=(--appendonly no --enable-debug-command yes)
    redis-server --port "$port" --bind 127.0.0.1 --dir "$dir" --daemonize yes --pidfile "$dir/redis.pid" \
      --logfile "$dir/redis.log" --save '' "${extra[@]}" >/dev/null
    for _ in $(seq 100); do redis-cli -p "$port" ping 2>/dev/null | grep -q PONG && break; sleep 0.05; done
    redis-cli -p "$port" ping 2>/dev/null | grep -q PONG || { echo "redis.sh: redis did not start (see $dir/redis.log)" >&2; exit 1; }
    echo "redis://127.0.0.1:$port/0"
    ;;
  stop)
    if [[ -f $dir/redis.pid ]]; then
      pid=$(cat "$dir/redis.pid"); kill "$pid" 2>/dev/null || true
      for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
      rm -f "$dir/redis.pid"
    fi
    ;;
  *) echo "usage: redis.sh start|stop DIR [PORT] [--ephemeral]" >&2; exit 2 ;;
esac
