#!/usr/bin/env bash
# A local Redis Cluster for tests and experiments: 3 masters and 3 replicas on loopback, ports
# BASE..BASE+5 (and their cluster bus ports, +10000: keep both below the ephemeral range,
# 32768 on Linux), data under DIR. Prints the seed list for `--redis-url redis-cluster://…` on `start`.
#   scripts/redis-cluster.sh start DIR BASE     (e.g. .data-test/cluster 7100)
#   scripts/redis-cluster.sh stop DIR
#   scripts/redis-cluster.sh --help
set -euo pipefail
usage() { sed -n '2,7p' "$0" | sed 's/^# \{0,1\}//'; }
case ${1:-} in
  -h|--help) usage; exit 0 ;;
  start|stop) ;;
  *) echo "redis-cluster.sh: unknown command '${1:-}'" >&2; usage >&2; exit 2 ;;
esac
[[ $# -ge 2 ]] || { echo "redis-cluster.sh: missing DIR" >&2; exit 2; }
cmd=$1; dir=$(realpath -m "$2")
command -v redis-server >/dev/null || { echo "redis-cluster.sh: redis-server not found (scripts/install-deps.sh installs it)" >&2; exit 1; }
stop_all() {
  local pids=() f pid
  for f in "$dir"/*/redis.pid; do
    [[ -f $f ]] || continue
    pid=$(cat "$f"); kill "$pid" 2>/dev/null && pids+=("$pid")
    rm -f "$f"
  done
  # All at once, then wait for each (up to 5 s, then SIGKILL).
  for pid in "${pids[@]}"; do
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
    kill -9 "$pid" 2>/dev/null || true
  done
}
case $cmd in
  start)
    # A start that fails stops what it started (nothing is left running).
    trap 'rc=$?; [[ $rc == 0 ]] || stop_all; exit $rc' EXIT
    [[ $# -eq 3 && $3 =~ ^[0-9]+$ ]] || { echo "redis-cluster.sh: start needs DIR and a numeric BASE port" >&2; exit 2; }
    base=$3
    ports=()
    for i in 0 1 2 3 4 5; do
      p=$((base + i)); ports+=("$p")
      mkdir -p "$dir/$p"
      if ! { [[ -f $dir/$p/redis.pid ]] && kill -0 "$(cat "$dir/$p/redis.pid")" 2>/dev/null; }; then
        redis-server --port "$p" --bind 127.0.0.1 --dir "$dir/$p" --daemonize yes --pidfile "$dir/$p/redis.pid" \
          --logfile "$dir/$p/redis.log" --save '' --appendonly no --cluster-enabled yes \
          --cluster-config-file "$dir/$p/nodes.conf" --cluster-node-timeout 1000 --cluster-replica-validity-factor 0 --cluster-require-full-coverage no --repl-ping-replica-period 1 --repl-diskless-sync-delay 0 --enable-debug-command yes >/dev/null
      fi
    done
    for p in "${ports[@]}"; do
      for _ in $(seq 100); do redis-cli -p "$p" ping 2>/dev/null | grep -q PONG && break; sleep 0.05; done
      redis-cli -p "$p" ping 2>/dev/null | grep -q PONG || { echo "redis-cluster.sh: port $p did not start" >&2; exit 1; }
    done
    if ! redis-cli -p "$base" cluster info 2>/dev/null | grep -q "cluster_state:ok"; then
      redis-cli --cluster create $(printf "127.0.0.1:%s " "${ports[@]}") --cluster-replicas 1 --cluster-yes >"$dir/create.log" 2>&1 \
        || { echo "redis-cluster.sh: cluster create failed (see $dir/create.log)" >&2; exit 1; }
      for _ in $(seq 200); do
        ok=1
        for p in "${ports[@]}"; do redis-cli -p "$p" cluster info | grep -q "cluster_state:ok" || ok=0; done
        [[ $ok == 1 ]] && break; sleep 0.05
      done
      [[ $ok == 1 ]] || { echo "redis-cluster.sh: the cluster did not become ok" >&2; exit 1; }
    fi
    # Ready means replicated too: a master killed before its replica finished the first sync
    # would lose its data (and a replica that never synced is not allowed to take over).
    for _ in $(seq 200); do
      online=$(for p in "${ports[@]}"; do redis-cli -p "$p" info replication | grep -c "state=online" || true; done | awk "{s+=\$1} END {print s+0}")
      [[ $online -ge 3 ]] && break; sleep 0.05
    done
    [[ $online -ge 3 ]] || { echo "redis-cluster.sh: the replicas did not finish syncing" >&2; exit 1; }
    echo "redis-cluster://$(IFS=,; echo "${ports[*]/#/127.0.0.1:}")"
    ;;
  stop)
    stop_all
    ;;
esac
