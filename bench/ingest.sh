#!/usr/bin/env bash
# Benchmark: `intake ingest` of N generated rows on SQLite and PostgreSQL,
# against, in the same run and interleaved round by round:
#   - a raw load of the same valid rows into the same schema, fresh database:
#     SQLite `sqlite3 .import` in one transaction with intake's own page
#     cache (cache_size), WAL and synchronous=NORMAL; PostgreSQL `psql \copy`;
#   - the loader a team would write instead (bench/loader.py: csv,
#     phonenumbers, email-validator, psycopg; same upserts, per-row results).
# Prints medians of rows/s, intake's ratio to each, and intake's peak RSS.
#
# usage: bench/ingest.sh [ROWS ...]      (default 1000000)
# env:   SHAPE: the file's shape (bench/shapes.py; default gen, bench/gen_customers.py's)
# env:   PG_URL (default postgres://postgres@127.0.0.1:5432/postgres), ROUNDS (default 3),
#        BIN (a built intake; default: cargo build --release), LOADER=0 to skip the Python loader,
#        SQLITE_CACHE_KIB (default 36864: intake's page caches, 32 MiB for batches + 2 x 2 MiB)
set -euo pipefail
cd "$(dirname "$0")/.."
ROWS_LIST=("${@:-1000000}")
ROUNDS=${ROUNDS:-3}
LOADER=${LOADER:-1}
SQLITE_CACHE_KIB=${SQLITE_CACHE_KIB:-36864}
PG_URL=${PG_URL:-postgres://postgres@127.0.0.1:5432/postgres}
PG_BASE=${PG_URL%/*}
command -v sqlite3 >/dev/null || { apt-get update -qq && apt-get install -y -qq sqlite3; }
if [ "$LOADER" = 1 ]; then
  python3 -c 'import phonenumbers, email_validator, psycopg' 2>/dev/null ||
    python3 -m pip install -q phonenumbers email-validator 'psycopg[binary]'
fi
. bench/common.sh intake-bench

for ROWS in "${ROWS_LIST[@]}"; do
  python3 bench/shapes.py "${SHAPE:-gen}" "$ROWS" "$WORK/customers.csv" "$WORK/raw.csv" bench
  VALID=$(wc -l < "$WORK/raw.csv")
  echo "== ${SHAPE:-gen}: $ROWS rows ($VALID valid), $(du -h "$WORK/customers.csv" | cut -f1), $ROUNDS rounds"
  declare -A R=()
  for round in $(seq "$ROUNDS"); do
    for backend in sqlite postgres; do
      DATA="$WORK/data-$backend-$round"
      if [ $backend = sqlite ]; then
        URL="sqlite://$DATA/intake.db"
      else
        DB="intake_bench_${round}_$$"
        fresh_pg "$DB"
        URL="$PG_BASE/$DB"
      fi
      export INTAKE_DATA_DIR=$DATA INTAKE_DATABASE_URL=$URL
      "$BIN" account add bench >/dev/null
      sync
      t0=$(now)
      /usr/bin/time -f "%M" -o "$WORK/rss" "$BIN" ingest "$WORK/customers.csv" --account bench >/dev/null
      t1=$(now)
      R[$backend-intake]+="$(echo "$ROWS / ($t1 - $t0)" | bc -l) "
      R[$backend-rss]+="$(cat "$WORK/rss") "
      # Raw load of the same valid rows into the same schema, fresh database.
      RAW="$WORK/raw-$backend-$round"
      if [ $backend = sqlite ]; then
        INTAKE_DATABASE_URL="sqlite://$RAW.db" INTAKE_DATA_DIR="$RAW" "$BIN" account list >/dev/null
        sync
        t0=$(now)
        sqlite3 "$RAW.db" "PRAGMA cache_size=-$SQLITE_CACHE_KIB; PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;" \
          ".import --csv $WORK/raw.csv customers" >/dev/null
        t1=$(now)
        LURL="sqlite://$RAW.loader.db"
        INTAKE_DATABASE_URL="$LURL" INTAKE_DATA_DIR="$RAW" "$BIN" account list >/dev/null
      else
        RAWDB="intake_raw_${round}_$$"
        fresh_pg "$RAWDB"
        INTAKE_DATABASE_URL="$PG_BASE/$RAWDB" INTAKE_DATA_DIR="$RAW" "$BIN" account list >/dev/null
        t0=$(now)
        psql -q "$PG_BASE/$RAWDB" -c "\\copy customers (customer_id, account, ref, addresses, metadata, appdata, created_at, updated_at, last_job_id, last_line) from '$WORK/raw.csv' csv"
        t1=$(now)
        LDB="intake_loader_${round}_$$"
        fresh_pg "$LDB"
        LURL="$PG_BASE/$LDB"
        INTAKE_DATABASE_URL="$LURL" INTAKE_DATA_DIR="$RAW" "$BIN" account list >/dev/null
      fi
      R[$backend-raw]+="$(echo "$VALID / ($t1 - $t0)" | bc -l) "
      if [ "$LOADER" = 1 ]; then
        sync
        t0=$(now)
        python3 bench/loader.py "$WORK/customers.csv" "$WORK/loader.results.csv" bench "$LURL"
        t1=$(now)
        R[$backend-loader]+="$(echo "$ROWS / ($t1 - $t0)" | bc -l) "
      fi
      if [ $backend = postgres ]; then
        psql -q "$PG_URL" -c "DROP DATABASE $RAWDB" -c "DROP DATABASE $DB" -c "DROP DATABASE $LDB"
      fi
      rm -rf "$DATA" "$RAW" "$RAW".*
      echo "round $round $backend: intake $(echo ${R[$backend-intake]} | awk '{print $NF}') raw $(echo ${R[$backend-raw]} | awk '{print $NF}') loader $(echo ${R[$backend-loader]:-0} | awk '{print $NF}') rss $(cat "$WORK/rss")"
    done
  done
  for backend in sqlite postgres; do
    intake=$(echo ${R[$backend-intake]} | tr ' ' '\n' | median)
    raw=$(echo ${R[$backend-raw]} | tr ' ' '\n' | median)
    rss=$(echo ${R[$backend-rss]} | tr ' ' '\n' | median)
    printf '%-9s %-11s rows=%-8s intake %8.0f rows/s   raw load %8.0f rows/s   ratio %.2f   peak RSS %.1f MiB\n' \
      "$backend" "${SHAPE:-gen}" "$ROWS" "$intake" "$raw" "$(echo "$intake / $raw" | bc -l)" "$(echo "$rss / 1024" | bc -l)"
    if [ "$LOADER" = 1 ]; then
      loader=$(echo ${R[$backend-loader]} | tr ' ' '\n' | median)
      printf '%-9s rows=%-8s Python loader %8.0f rows/s   intake / loader %.2f\n' \
        "$backend" "$ROWS" "$loader" "$(echo "$intake / $loader" | bc -l)"
    fi
  done
done
