#!/usr/bin/env bash
# Benchmark: the cost of a mapping profile. `intake ingest` of N generated
# rows (bench/gen_customers.py) with our own column names, and of the same
# rows under a merchant's header read through a mapping profile, interleaved
# round by round on fresh databases, both backends. Prints medians of rows/s
# and the mapped/unmapped ratio.
#
# usage: bench/mapping.sh [ROWS]      (default 1000000)
# env:   PG_URL (default postgres://postgres@127.0.0.1:5432/postgres), ROUNDS (default 3),
#        BIN (a built intake; default: cargo build --release)
set -euo pipefail
cd "$(dirname "$0")/.."
ROWS=${1:-1000000}
ROUNDS=${ROUNDS:-3}
PG_URL=${PG_URL:-postgres://postgres@127.0.0.1:5432/postgres}
PG_BASE=${PG_URL%/*}
. bench/common.sh intake-mapping

python3 bench/gen_customers.py "$ROWS" "$WORK/ours.csv" "$WORK/raw.csv" bench
# The same rows under the column names of a merchant's CRM export.
{ echo "Customer ID,E-mail,Mobile,Full Name,Town,CRM Id"; tail -n +2 "$WORK/ours.csv"; } > "$WORK/theirs.csv"
cat > "$WORK/crm.toml" <<'TOML'
[columns]
"Customer ID" = "ref"
"E-mail" = "email"
"Mobile" = "phone"
"Full Name" = "metadata.name"
"Town" = "metadata.city"
"CRM Id" = "appdata.crm_id"
TOML
echo "== $ROWS rows, $(du -h "$WORK/ours.csv" | cut -f1), $ROUNDS rounds"
declare -A R=()
for round in $(seq "$ROUNDS"); do
  for backend in sqlite postgres; do
    for file in ours theirs; do
      DATA="$WORK/data-$backend-$file-$round"
      if [ $backend = sqlite ]; then
        URL="sqlite://$DATA/intake.db"
      else
        DB="intake_mapbench_${round}_${file}_$$"
        fresh_pg "$DB"
        URL="$PG_BASE/$DB"
      fi
      export INTAKE_DATA_DIR=$DATA INTAKE_DATABASE_URL=$URL
      "$BIN" account add bench >/dev/null
      "$BIN" mapping set bench crm --file "$WORK/crm.toml" >/dev/null
      sync
      t0=$(now)
      "$BIN" ingest "$WORK/$file.csv" --account bench >/dev/null
      t1=$(now)
      grep -q '"mapping": null' "$DATA/accounts/bench/outbox/$file.summary.json" && used=no || used=yes
      [ "$file" = theirs ] && [ "$used" = no ] && { echo "the profile was not applied" >&2; exit 1; }
      R[$backend-$file]+="$(echo "$ROWS / ($t1 - $t0)" | bc -l) "
      [ $backend = postgres ] && psql -q "$PG_URL" -c "DROP DATABASE IF EXISTS $DB"
      rm -rf "$DATA"
    done
  done
done
for backend in sqlite postgres; do
  ours=$(echo "${R[$backend-ours]}" | tr ' ' '\n' | grep . | median)
  theirs=$(echo "${R[$backend-theirs]}" | tr ' ' '\n' | grep . | median)
  printf '%-8s unmapped %8.0f rows/s   mapped %8.0f rows/s   ratio %.3f   (rounds: %s| %s)\n' \
    "$backend" "$ours" "$theirs" "$(echo "$theirs / $ours" | bc -l)" "${R[$backend-ours]}" "${R[$backend-theirs]}"
done
