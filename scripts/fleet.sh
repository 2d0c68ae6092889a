#!/usr/bin/env bash
# A whole fleet on one machine, without Docker: Redis and PostgreSQL (loopback), gateways and
# workers, and haproxy in front of the gateways (health checks on /readyz, timeouts that keep
# WebSockets and long streams open).
#   scripts/fleet.sh up [--dir DIR] [--port N] [--gateways N] [--workers N] [--fleet NAME] [-- NODE FLAGS…]
#   scripts/fleet.sh down [--dir DIR]
#   scripts/fleet.sh status [--dir DIR]
# Defaults: --dir .data/fleet, --port 8090 (haproxy; gateways on the next ports, workers 100 above),
# 2 gateways, 2 workers, fleet "main". DATABASE_URL / REDIS_URL, when set, are used instead of
# starting PostgreSQL / Redis. Node flags after `--` go to every gateway and worker.
set -euo pipefail
cd "$(dirname "$0")/.."
usage() { sed -n 2,10p "$0" | sed 's/^# \{0,1\}//' >&2; }
cmd=${1:-}; [[ -n $cmd ]] && shift || true
dir=.data/fleet; port=8090; gateways=2; workers=2; fleet=main; node_flags=()
while (($#)); do
  case $1 in
    --dir|--port|--gateways|--workers|--fleet)
      [[ $# -ge 2 ]] || { echo "fleet.sh: $1 needs a value" >&2; exit 2; }
      case $1 in --dir) dir=$2;; --port) port=$2;; --gateways) gateways=$2;; --workers) workers=$2;; --fleet) fleet=$2;; esac
      shift 2 ;;
    --) shift; node_flags=("$@"); break ;;
    -h|--help) usage; exit 0 ;;
    *) echo "fleet.sh: unknown argument '$1'" >&2; usage; exit 2 ;;
  esac
done
for n in "$port" "$gateways" "$workers"; do [[ $n =~ ^[0-9]+$ ]] || { echo "fleet.sh: '$n' is not a number" >&2; exit 2; }; done
dir=$(realpath -m "$dir")
BIN=$PWD/.build/release/playground
pids=$dir/pids; logs=$dir/logs

# Whether a pid runs (a zombie left for an init that does not reap is not running).
alive() { [[ -r /proc/$1/stat ]] && [[ $(cut -d' ' -f3 "/proc/$1/stat" 2>/dev/null) != Z ]]; }

# Stops the process in a pid file: SIGTERM, then SIGKILL after $2 seconds.
stop_pidfile() {
  local f=$1 wait=${2:-10} pid
  [[ -f $f ]] || return 0
  pid=$(cat "$f")
  if alive "$pid"; then
    kill "$pid" 2>/dev/null || true
    for _ in $(seq $((wait * 20))); do alive "$pid" || break; sleep 0.05; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$f"
}

down() {
  # The reverse of up: the door first, then gateways (they drain), then workers, then the stores.
  stop_pidfile "$pids/haproxy.pid" 5
  for f in "$pids"/gateway-*.pid; do [[ -e $f ]] && stop_pidfile "$f" 15; done
  for f in "$pids"/worker-*.pid; do [[ -e $f ]] && stop_pidfile "$f" 15; done
  [[ -f $dir/started-redis ]] && { scripts/redis.sh stop "$dir/redis"; rm -f "$dir/started-redis"; }
  [[ -f $dir/started-postgres ]] && { scripts/pg.sh stop "$dir/postgres" >/dev/null; rm -f "$dir/started-postgres"; }
  return 0
}

# Starts one node in the background, waits for its "listening on" line.
start_node() {
  local role=$1 name=$2 node_port=$3
  setsid "$BIN" "$role" --host 127.0.0.1 --port "$node_port" --fleet "$fleet" --drain-seconds 10 "${node_flags[@]}" \
    > "$logs/$name.out" 2> "$logs/$name.log" < /dev/null &
  echo $! > "$pids/$name.pid"
  for _ in $(seq 200); do
    grep -q "listening on" "$logs/$name.out" 2>/dev/null && return 0
    alive "$(cat "$pids/$name.pid")" || break
    sleep 0.05
  done
  echo "fleet.sh: $name did not start (see $logs/$name.log):" >&2
  tail -5 "$logs/$name.log" >&2
  return 1
}

case $cmd in
  up)
    if [[ -d $pids ]] && ls "$pids"/*.pid >/dev/null 2>&1; then
      echo "fleet.sh: a fleet is already up in $dir (scripts/fleet.sh down --dir $dir first)" >&2; exit 1
    fi
    scripts/install-deps.sh
    command -v haproxy >/dev/null || {
      echo "installing: haproxy" >&2
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends haproxy >/dev/null
    }
    swift build -c release 2>&1 | grep -v "prohibited flag" | tail -1 >&2
    mkdir -p "$pids" "$logs"
    # Whatever fails from here on takes down what was started.
    trap 'echo "fleet.sh: start failed; stopping what was started" >&2; down' ERR
    if [[ -z ${DATABASE_URL:-} ]]; then
      DATABASE_URL=$(scripts/pg.sh start "$dir/postgres" $((port + 300)))
      touch "$dir/started-postgres"
    fi
    if [[ -z ${REDIS_URL:-} ]]; then
      REDIS_URL=$(scripts/redis.sh start "$dir/redis" $((port + 301)))
      touch "$dir/started-redis"
    fi
    export DATABASE_URL REDIS_URL
    "$BIN" migrate >/dev/null
    for i in $(seq "$workers"); do start_node worker "worker-$i" $((port + 100 + i)); done
    servers=""
    for i in $(seq "$gateways"); do
      start_node gateway "gateway-$i" $((port + i))
      servers+="    server gateway-$i 127.0.0.1:$((port + i)) check inter 1s fall 2 rise 2"$'\n'
    done
    # maxconn: each client connection costs haproxy two descriptors, under the 20,000 limit.
    cat > "$dir/haproxy.cfg" <<EOF
global
    maxconn 9900
    pidfile $pids/haproxy.pid
    daemon

defaults
    mode http
    option forwardfor
    # A gateway that just died (before its health check fails): the request goes to another.
    retries 3
    option redispatch
    # A request sent on a connection the dead gateway never answered is sent again elsewhere
    # (nothing was started for it; a duplicate at worst counts against the user's limits twice).
    retry-on conn-failure empty-response junk-response
    option http-buffer-request
    timeout connect 2s
    timeout http-request 10s
    # A stream between tokens (SSE keepalives come every 15 s) and idle keep-alive connections.
    timeout client 75s
    timeout server 75s
    # An upgraded WebSocket (the node pings every 30 s).
    timeout tunnel 1h
    timeout client-fin 5s

frontend playground
    bind 127.0.0.1:$port
    default_backend gateways

backend gateways
    balance leastconn
    option httpchk GET /readyz
    http-check expect status 200
$servers
EOF
    haproxy -c -q -f "$dir/haproxy.cfg"
    haproxy -f "$dir/haproxy.cfg"
    for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break; sleep 0.05; done
    curl -sf "http://127.0.0.1:$port/readyz" >/dev/null || { echo "fleet.sh: haproxy does not answer on $port" >&2; false; }
    trap - ERR
    echo "fleet up: http://127.0.0.1:$port ($gateways gateways on $((port + 1))…, $workers workers on $((port + 101))…, fleet '$fleet')" >&2
    echo "  REDIS_URL=$REDIS_URL DATABASE_URL=$DATABASE_URL   logs in $logs   stop: scripts/fleet.sh down --dir $dir" >&2
    echo "http://127.0.0.1:$port"
    ;;
  down) down ;;
  status)
    shopt -s nullglob
    files=("$pids"/*.pid)
    ((${#files[@]})) || { echo "no fleet in $dir"; exit 1; }
    bad=0
    for f in "${files[@]}"; do
      name=$(basename "$f" .pid); pid=$(cat "$f")
      if alive "$pid"; then state=running; else state=dead; bad=1; fi
      extra=""
      if [[ $name != haproxy && $state == running ]]; then
        p=$(grep -o 'listening on http://[0-9.:]*' "$logs/$name.out" | sed 's/.*://')
        extra=" port $p readyz $(curl -s -m 2 "http://127.0.0.1:$p/readyz" || echo unreachable)"
      fi
      printf '%-12s pid %-8s %s%s\n' "$name" "$pid" "$state" "$extra"
    done
    exit $bad
    ;;
  *) usage; exit 2 ;;
esac
