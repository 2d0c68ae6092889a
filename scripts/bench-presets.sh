#!/usr/bin/env bash
# Preset search benchmark: seeds N presets across U users (generated, loaded with COPY) into a
# PostgreSQL of its own, then measures per-user search latency through the product's own queries.
#   scripts/bench-presets.sh [N=10000000] [U=100000]
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-10000000}; U=${2:-100000}
BIN=.build/release/playground
swift build -c release 2>&1 | grep -v "prohibited flag" | tail -1
DATABASE_URL=$(scripts/pg.sh start .data-bench/postgres "${PLAYGROUND_BENCH_PG_PORT:-5435}" --fast)
export DATABASE_URL
PSQL=("$(ls -d /usr/lib/postgresql/15/bin)/psql" -q -v ON_ERROR_STOP=1 -d "$DATABASE_URL")
$BIN migrate
# The trigram search of before is measured beside today's: its column lives on in this database.
runuser -u postgres -- "${PSQL[@]}" -c "ALTER TABLE presets ADD COLUMN IF NOT EXISTS search_text text"
have=$(runuser -u postgres -- "${PSQL[@]}" -tAc "SELECT count(*) FROM presets")
if [[ $have -ne $N ]]; then
  echo "seeding $N presets for $U users (COPY with triggers off; the dictionary and indexes built afterwards)…"
  start=$(date +%s)
  runuser -u postgres -- "${PSQL[@]}" -c "TRUNCATE presets, preset_words CASCADE" \
    -c "DROP INDEX IF EXISTS presets_user_name, presets_user_created, presets_user_search, presets_user_words" \
    -c "ALTER TABLE presets DISABLE TRIGGER USER"
  python3 scripts/gen-presets.py "$N" "$U" | runuser -u postgres -- "${PSQL[@]}" \
    -c "COPY presets (user_id, name, description, tags, prompt, parameters, search_text, title_words, words) FROM STDIN"
  echo "loaded in $(( $(date +%s) - start )) s; building the dictionary and indexes…"
  runuser -u postgres -- "${PSQL[@]}" -c "ALTER TABLE presets ENABLE TRIGGER USER" -c "SET maintenance_work_mem = '2GB'" \
    -c "INSERT INTO preset_words (user_id, word, uses) SELECT user_id, w, count(*) FROM presets, unnest(words) AS w GROUP BY user_id, w" \
    -c "CREATE UNIQUE INDEX presets_user_name ON presets (user_id, lower(name))" \
    -c "CREATE INDEX presets_user_created ON presets (user_id, created_at DESC, id DESC)" \
    -c "CREATE INDEX presets_user_search ON presets USING gin (user_id, search_text gin_trgm_ops)" \
    -c "CREATE INDEX presets_user_words ON presets USING gin (user_id, words)" \
    -c "VACUUM ANALYZE presets" -c "VACUUM ANALYZE preset_words"
  echo "seeded and indexed in $(( $(date +%s) - start )) s"
fi
runuser -u postgres -- "${PSQL[@]}" -tAc "SELECT 'presets, table + indexes: ' || pg_size_pretty(pg_total_relation_size('presets')) || '; dictionary: ' || (SELECT count(*) FROM preset_words) || ' words, ' || pg_size_pretty(pg_total_relation_size('preset_words'))"
$BIN bench-presets --users "$U" --queries "${QUERIES:-3000}"
