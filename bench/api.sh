#!/usr/bin/env bash
# Benchmark of the HTTP API (issue 22), release build, both backends:
# single-customer creates per second with 1, 8 and 32 concurrent clients
# (p50/p99 latency) against a plain INSERT loop over one connection into the
# same table in the same run, and a ROWS-row bulk job's rows/s against the
# same file over SFTP in the same run (target >= 0.95x). See bench/api.py.
#
# usage: bench/api.sh [ROWS]        (default 1000000)
# env:   PG_URL (default postgres://postgres@127.0.0.1:5432/postgres), SECONDS_PER_LEVEL
#        per client level (default 10), ROUNDS of the bulk comparison (default 1),
#        BACKENDS (default "sqlite postgres"), BIN (default: cargo build --release)
set -euo pipefail
cd "$(dirname "$0")/.."
ROWS=${1:-1000000}
export PG_URL=${PG_URL:-postgres://postgres@127.0.0.1:5432/postgres}
if [ -z "${BIN:-}" ]; then
  cargo build --release --quiet --bin intake
  export BIN=${CARGO_TARGET_DIR:-$PWD/target}/release/intake
fi
for tool in sftp ssh-keygen psql python3; do
  command -v "$tool" >/dev/null || { echo "missing $tool" >&2; exit 1; }
done
echo "machine: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
for backend in ${BACKENDS:-sqlite postgres}; do
  python3 bench/api.py --backend "$backend" --rows "$ROWS" --seconds "${SECONDS_PER_LEVEL:-10}" \
    --rounds "${ROUNDS:-1}"
done
