#!/usr/bin/env bash
# Benchmark (issue 26): the file-shape matrix. For each shape of
# bench/shapes.py, bench/ingest.sh (intake ingest against the raw load of the
# same valid rows, both backends, interleaved, medians of ROUNDS) without the
# Python loader; prints one line per backend and shape.
#
# usage: bench/matrix.sh [ROWS]        (default 1000000)
# env:   SHAPES (default: all), ROUNDS, BIN, PG_URL as bench/ingest.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ROWS=${1:-1000000}
SHAPES=${SHAPES:-"gen asc shuffled random list one-country wide"}
if [ -z "${BIN:-}" ]; then
  cargo build --release --quiet
  export BIN=$PWD/target/release/intake
fi
out=$(mktemp)
trap 'rm -f "$out"' EXIT
for shape in $SHAPES; do
  SHAPE=$shape LOADER=0 bench/ingest.sh "$ROWS" | tee -a "$out"
done
echo "== matrix, $ROWS rows"
grep -E '^(sqlite|postgres) ' "$out" | sort -s -k1,1
