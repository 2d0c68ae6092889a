#!/usr/bin/env bash
# A private PostgreSQL 15 for Playground: data in a project folder, loopback only, run as the
# postgres user (PostgreSQL refuses root). Prints the DATABASE_URL on `start`.
#   scripts/pg.sh start DIR PORT [--fast]     (--fast: fsync off, for tests)
#   scripts/pg.sh stop DIR
set -euo pipefail
cmd=$1; dir=$(realpath -m "$2"); port=${3:-5433}
bin=$(ls -d /usr/lib/postgresql/15/bin 2>/dev/null || true)
[[ -x $bin/pg_ctl ]] || { echo "pg.sh: PostgreSQL 15 binaries not found (scripts/install-deps.sh installs them)" >&2; exit 1; }
as_pg() { runuser -u postgres -- "$@"; }
case $cmd in
  start)
    # PostgreSQL needs every parent of its data folder to be readable by the postgres user.
    mkdir -p "$dir"
    p=$dir; while [[ $p != / ]]; do chmod o+x "$p" 2>/dev/null || true; p=$(dirname "$p"); done
    chown postgres:postgres "$dir"
    if [[ ! -f $dir/data/PG_VERSION ]]; then
      as_pg mkdir -p "$dir/data" "$dir/run"
      as_pg "$bin/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >/dev/null
    fi
    as_pg mkdir -p "$dir/run"
    if ! as_pg "$bin/pg_ctl" -D "$dir/data" status >/dev/null 2>&1; then
      extra=()
      [[ ${4:-} == --fast ]] && extra=(-c fsync=off -c synchronous_commit=off -c full_page_writes=off)
      as_pg "$bin/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -w -t 30 start \
        -o "-c listen_addresses=127.0.0.1 -c port=$port -c unix_socket_directories=$dir/run -c max_connections=200 ${extra[*]}" >/dev/null
    fi
    as_pg "$bin/psql" -h 127.0.0.1 -p "$port" -U postgres -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname='playground'" | grep -q 1 || \
      as_pg "$bin/createdb" -h 127.0.0.1 -p "$port" -U postgres playground
    echo "postgresql://postgres@127.0.0.1:$port/playground"
    ;;
  stop)
    as_pg "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null 2>&1 || true
    ;;
  *) echo "usage: pg.sh start|stop DIR [PORT] [--fast]" >&2; exit 2 ;;
esac
