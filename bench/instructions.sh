#!/usr/bin/env bash
# Benchmark (issue 26): CPU per row as instructions, which a shared, noisy
# machine does not change. `intake ingest` of ROWS rows of a bench/shapes.py
# shape on SQLite under valgrind's callgrind, for each build given; prints
# instructions in all and per row. Two builds run side by side (two cores).
#
# usage: bench/instructions.sh BIN [BIN ...]
# env:   SHAPES (default "asc random"), ROWS (default 100000)
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 1 ] || { echo "usage: $0 BIN [BIN ...]" >&2; exit 2; }
command -v valgrind >/dev/null || { apt-get update -qq && apt-get install -y -qq valgrind; }
ROWS=${ROWS:-100000}
WORK=$(mktemp -d /tmp/intake-instructions.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
one() { # BIN CSV OUT
  local data
  data=$(mktemp -d "$WORK/run.XXXXXX")
  INTAKE_DATA_DIR=$data INTAKE_DATABASE_URL=sqlite://$data/intake.db "$1" account add bench >/dev/null
  INTAKE_DATA_DIR=$data INTAKE_DATABASE_URL=sqlite://$data/intake.db \
    valgrind --tool=callgrind --callgrind-out-file="$data/cg.out" "$1" ingest "$2" --account bench >/dev/null 2>"$data/err"
  grep -o 'Collected : [0-9]*' "$data/err" | grep -o '[0-9]*$' > "$3"
}
for shape in ${SHAPES:-asc random}; do
  python3 bench/shapes.py "$shape" "$ROWS" "$WORK/$shape.csv" "$WORK/$shape.raw.csv" bench
  i=0
  for bin in "$@"; do
    one "$bin" "$WORK/$shape.csv" "$WORK/$shape.$i" &
    i=$((i + 1))
    if [ $((i % 2)) = 0 ]; then wait; fi
  done
  wait
  i=0
  for bin in "$@"; do
    n=$(cat "$WORK/$shape.$i")
    printf '%-11s rows=%-8s %-40s instructions %14s   per row %8.0f\n' "$shape" "$ROWS" "$bin" "$n" "$(echo "$n / $ROWS" | bc -l)"
    i=$((i + 1))
  done
done
