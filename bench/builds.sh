#!/usr/bin/env bash
# Benchmark: two (or more) builds of intake on the same files, interleaved
# round by round on fresh databases: `intake ingest` of N new customers on
# SQLite and PostgreSQL, and the PostgreSQL re-import of the same N with
# every other row changed. Prints each build's median rows/s and its ratio to
# the first build. For "no regression" checks of a change (the ratio to the
# raw load is in bench/ingest.sh and bench/reimport.sh).
#
# usage: bench/builds.sh ROWS NAME=BIN NAME=BIN ...
# env:   PG_URL (default postgres://postgres@127.0.0.1:5432/postgres), ROUNDS (default 3)
set -euo pipefail
cd "$(dirname "$0")/.."
ROWS=$1; shift
ROUNDS=${ROUNDS:-3}
PG_URL=${PG_URL:-postgres://postgres@127.0.0.1:5432/postgres}
PG_BASE=${PG_URL%/*}
BIN=${BIN:-true} . bench/common.sh intake-builds
python3 bench/gen_customers.py "$ROWS" "$WORK/first.csv" "$WORK/first.raw.csv" bench
python3 bench/gen_customers.py "$ROWS" "$WORK/changed.csv" "$WORK/changed.raw.csv" bench --changed
# No config file: each build reads only its environment (an older build
# refuses the keys a newer config.toml has).
: > "$WORK/empty.toml"
declare -A R=()
names=()
for spec in "$@"; do names+=("${spec%%=*}"); done
for round in $(seq "$ROUNDS"); do
  for spec in "$@"; do
    name=${spec%%=*} bin=${spec#*=}
    # SQLite: new customers.
    export INTAKE_DATA_DIR="$WORK/s-$name-$round" INTAKE_DATABASE_URL="sqlite://$WORK/s-$name-$round/intake.db"
    "$bin" account add bench --config "$WORK/empty.toml" >/dev/null; sync
    t0=$(now); "$bin" ingest "$WORK/first.csv" --account bench --config "$WORK/empty.toml" >/dev/null; t1=$(now)
    R[$name-sqlite]+="$(echo "$ROWS / ($t1 - $t0)" | bc -l) "
    rm -rf "$WORK/s-$name-$round"
    # PostgreSQL: new customers, then the re-import.
    DB="intake_builds_${round}_${name}_$$"
    fresh_pg "$DB"
    export INTAKE_DATA_DIR="$WORK/p-$name-$round" INTAKE_DATABASE_URL="$PG_BASE/$DB"
    "$bin" account add bench --config "$WORK/empty.toml" >/dev/null; sync
    t0=$(now); "$bin" ingest "$WORK/first.csv" --account bench --config "$WORK/empty.toml" >/dev/null; t1=$(now)
    R[$name-postgres]+="$(echo "$ROWS / ($t1 - $t0)" | bc -l) "
    psql -q "$PG_BASE/$DB" -c "VACUUM ANALYZE customers"
    t0=$(now); "$bin" ingest "$WORK/changed.csv" --account bench --config "$WORK/empty.toml" >/dev/null; t1=$(now)
    R[$name-reimport]+="$(echo "$ROWS / ($t1 - $t0)" | bc -l) "
    psql -q "$PG_URL" -c "DROP DATABASE IF EXISTS $DB"
    rm -rf "$WORK/p-$name-$round"
  done
done
for what in sqlite postgres reimport; do
  base=$(echo "${R[${names[0]}-$what]}" | tr ' ' '\n' | grep . | median)
  for name in "${names[@]}"; do
    m=$(echo "${R[$name-$what]}" | tr ' ' '\n' | grep . | median)
    printf '%-9s %-8s %8.0f rows/s  %.3fx %s   (rounds: %s)\n' "$what" "$name" "$m" "$(echo "$m / $base" | bc -l)" \
      "${names[0]}" "${R[$name-$what]}"
  done
done
