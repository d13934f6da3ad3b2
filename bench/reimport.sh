#!/usr/bin/env bash
# Benchmark (issue 10, target 1, second half): a re-import on PostgreSQL —
# every ref of the file exists, half of the rows change (metadata.city) —
# `intake ingest` against, in the same run and interleaved round by round,
# the raw upsert a DBA would write: `\copy` of the same valid rows into a
# staging table, then one `INSERT … SELECT … ORDER BY account, ref ON
# CONFLICT (account, ref) DO UPDATE … WHERE … IS DISTINCT FROM …` with
# intake's merge rules (addresses replaced, metadata/appdata keys merged).
# Both start from the same first import; only the re-import is timed.
#
# usage: bench/reimport.sh [ROWS]       (default 1000000)
# env:   PG_URL (default postgres://postgres@127.0.0.1:5432/postgres), ROUNDS (default 3),
#        BIN (a built intake; default: cargo build --release)
set -euo pipefail
cd "$(dirname "$0")/.."
ROWS=${1:-1000000}
ROUNDS=${ROUNDS:-3}
PG_URL=${PG_URL:-postgres://postgres@127.0.0.1:5432/postgres}
PG_BASE=${PG_URL%/*}
. bench/common.sh intake-reimport
COLUMNS="customer_id, account, ref, addresses, metadata, appdata, created_at, updated_at, last_job_id, last_line"

python3 bench/gen_customers.py "$ROWS" "$WORK/first.csv" "$WORK/first.raw.csv" bench
python3 bench/gen_customers.py "$ROWS" "$WORK/changed.csv" "$WORK/changed.raw.csv" bench --changed
VALID=$(wc -l < "$WORK/changed.raw.csv")
echo "== re-import of $ROWS rows ($VALID valid, every other one changed), $ROUNDS rounds"
INTAKE_R=() RAW_R=() RSS_R=()
for round in $(seq "$ROUNDS"); do
  # intake: the first import, then the re-import (timed).
  DB="intake_reimport_${round}_$$"
  fresh_pg "$DB"
  export INTAKE_DATA_DIR="$WORK/data-$round" INTAKE_DATABASE_URL="$PG_BASE/$DB"
  "$BIN" account add bench >/dev/null
  "$BIN" ingest "$WORK/first.csv" --account bench >/dev/null
  psql -q "$PG_BASE/$DB" -c "VACUUM ANALYZE customers"
  t0=$(now)
  /usr/bin/time -f "%M" -o "$WORK/rss" "$BIN" ingest "$WORK/changed.csv" --account bench >/dev/null
  t1=$(now)
  INTAKE_R+=("$(echo "$ROWS / ($t1 - $t0)" | bc -l)")
  RSS_R+=("$(cat "$WORK/rss")")
  counts=$(psql -qtA "$PG_BASE/$DB" -c "SELECT updated, unchanged, created FROM jobs ORDER BY received_at DESC LIMIT 1")
  # Raw: the same schema, the same first rows, then staging + one upsert (timed).
  RAWDB="intake_reimport_raw_${round}_$$"
  fresh_pg "$RAWDB"
  INTAKE_DATABASE_URL="$PG_BASE/$RAWDB" INTAKE_DATA_DIR="$WORK/raw-$round" "$BIN" account list >/dev/null
  psql -q "$PG_BASE/$RAWDB" -c "\\copy customers ($COLUMNS) from '$WORK/first.raw.csv' csv" -c "VACUUM ANALYZE customers"
  t0=$(now)
  raw_counts=$(psql -qtA "$PG_BASE/$RAWDB" <<SQL
BEGIN;
CREATE TEMP TABLE staging (LIKE customers) ON COMMIT DROP;
\\copy staging ($COLUMNS) from '$WORK/changed.raw.csv' csv
WITH up AS (
  INSERT INTO customers AS c ($COLUMNS)
  SELECT $COLUMNS FROM staging ORDER BY account, ref
  ON CONFLICT (account, ref) DO UPDATE SET
    addresses = EXCLUDED.addresses, metadata = c.metadata || EXCLUDED.metadata,
    appdata = c.appdata || EXCLUDED.appdata, updated_at = now(),
    last_job_id = EXCLUDED.last_job_id, last_line = EXCLUDED.last_line
  WHERE (EXCLUDED.addresses, c.metadata || EXCLUDED.metadata, c.appdata || EXCLUDED.appdata)
        IS DISTINCT FROM (c.addresses, c.metadata, c.appdata)
  RETURNING (xmax = 0) AS created
)
SELECT count(*) FILTER (WHERE NOT created), (SELECT count(*) FROM staging) - count(*), count(*) FILTER (WHERE created) FROM up;
COMMIT;
SQL
)
  t1=$(now)
  RAW_R+=("$(echo "$VALID / ($t1 - $t0)" | bc -l)")
  psql -q "$PG_URL" -c "DROP DATABASE $DB" -c "DROP DATABASE $RAWDB"
  rm -rf "$WORK/data-$round" "$WORK/raw-$round"
  echo "round $round: intake ${INTAKE_R[-1]} rows/s (updated|unchanged|created $counts), raw ${RAW_R[-1]} rows/s ($(echo "$raw_counts" | tail -1 | tr -d '\n')), rss ${RSS_R[-1]} KiB"
done
intake=$(printf '%s\n' "${INTAKE_R[@]}" | median)
raw=$(printf '%s\n' "${RAW_R[@]}" | median)
rss=$(printf '%s\n' "${RSS_R[@]}" | median)
printf 're-import rows=%s intake %8.0f rows/s   raw staging upsert %8.0f rows/s   ratio %.2f   peak RSS %.1f MiB\n' \
  "$ROWS" "$intake" "$raw" "$(echo "$intake / $raw" | bc -l)" "$(echo "$rss / 1024" | bc -l)"
