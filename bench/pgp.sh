#!/usr/bin/env bash
# Benchmark: an OpenPGP-encrypted upload against the same file in plain text.
# `intake ingest` of N generated rows (bench/gen_customers.py) as plain CSV
# and encrypted by gpg to the account's key (ZLIB, as gpg does by default),
# interleaved round by round on fresh databases. Prints medians of rows/s,
# the encrypted/plain ratio, and each one's peak RSS (VmHWM, /usr/bin/time).
#
# usage: bench/pgp.sh [ROWS]      (default 1000000)
# env:   ROUNDS (default 3), BIN (a built intake; default: cargo build --release),
#        BACKEND (sqlite, the default, or postgres at PG_URL)
set -euo pipefail
cd "$(dirname "$0")/.."
ROWS=${1:-1000000}
ROUNDS=${ROUNDS:-3}
PG_URL=${PG_URL:-postgres://postgres@127.0.0.1:5432/postgres}
. bench/common.sh intake-pgp

python3 bench/gen_customers.py "$ROWS" "$WORK/plain.csv" "$WORK/raw.csv" bench
export GNUPGHOME=$WORK/gnupg
mkdir -m 700 "$GNUPGHOME"
echo "== ${BACKEND:-sqlite}, $ROWS rows, $(du -h "$WORK/plain.csv" | cut -f1), $ROUNDS rounds"
declare -A R=() M=()
for round in $(seq "$ROUNDS"); do
  for file in plain encrypted; do
    DATA="$WORK/data-$file-$round"
    URL="sqlite://$DATA/intake.db"
    if [ "${BACKEND:-sqlite}" = postgres ]; then
      DB="intake_pgp_${round}_$$"
      fresh_pg "$DB"
      URL="${PG_URL%/*}/$DB"
    fi
    export INTAKE_DATA_DIR=$DATA INTAKE_DATABASE_URL=$URL
    "$BIN" account add bench >/dev/null
    input="$WORK/plain.csv"
    if [ $file = encrypted ]; then
      "$BIN" pgp show bench > "$WORK/intake-$round.asc"
      gpg -q --batch --import "$WORK/intake-$round.asc"
      input="$WORK/encrypted.csv.gpg"
      gpg -q --batch --yes --trust-model always -r "intake account bench" -o "$input" -e "$WORK/plain.csv"
      gpg -q --batch --yes --delete-keys "$(gpg --with-colons --list-keys 'intake account bench' | awk -F: '/^fpr/{print $10; exit}')"
    fi
    sync
    t0=$(now)
    /usr/bin/time -f %M -o "$WORK/rss" "$BIN" ingest "$input" --account bench >/dev/null
    t1=$(now)
    created=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['rows'])" "$DATA/accounts/bench/outbox/$file.summary.json")
    [ "$created" = "$ROWS" ] || { echo "$file: $created rows read, not $ROWS" >&2; exit 1; }
    R[$file]+="$(echo "$ROWS / ($t1 - $t0)" | bc -l) "
    M[$file]+="$(cat "$WORK/rss") "
    rm -rf "$DATA"
    if [ "${BACKEND:-sqlite}" = postgres ]; then psql -q "$PG_URL" -c "DROP DATABASE $DB"; fi
  done
done
for file in plain encrypted; do
  rate=$(echo "${R[$file]}" | tr ' ' '\n' | grep . | median)
  rss=$(echo "${M[$file]}" | tr ' ' '\n' | grep . | median)
  printf '%-10s %8.0f rows/s (%s)  peak RSS %.1f MiB\n' "$file" "$rate" "${R[$file]}" "$(echo "$rss / 1024" | bc -l)"
done
plain=$(echo "${R[plain]}" | tr ' ' '\n' | grep . | median)
encrypted=$(echo "${R[encrypted]}" | tr ' ' '\n' | grep . | median)
printf 'encrypted/plain: %.3fx\n' "$(echo "$encrypted / $plain" | bc -l)"
