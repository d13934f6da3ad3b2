#!/usr/bin/env bash
# Contract test of the HTTP API: starts the debug `intake` on a temp data dir
# (SQLite), makes an account, a user and a token, and runs schemathesis
# against the served OpenAPI document with its default checks (no 5xx, status
# codes, content types and bodies as documented, negative data rejected),
# bounded in examples and time. Fails when schemathesis finds a problem.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${INTAKE_BIN:-target/debug/intake}
[ -x "$BIN" ] || cargo build --locked --bin intake
WORK=$(mktemp -d)
DAEMON=
cleanup() {
  if [ -n "$DAEMON" ]; then kill "$DAEMON" 2>/dev/null || true; wait "$DAEMON" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT
cat > "$WORK/config.toml" <<TOML
data_dir = "$WORK/data"
[sftp]
enabled = false
[http]
listen = "127.0.0.1:0"
[api]
listen = "127.0.0.1:0"
[[accounts]]
avid = "acme"
[[users]]
username = "acme"
account = "acme"
password = "not-used-here"
TOML
# schemathesis sends many requests with invalid tokens on purpose: no penalty.
export INTAKE_SFTP__MAX_LOGIN_FAILURES_PER_SOURCE=0
# ... and many with the one valid token, faster than an integrator would.
export INTAKE_API__RATE_PER_TOKEN=0
"$BIN" serve --config "$WORK/config.toml" >"$WORK/serve.log" 2>&1 &
DAEMON=$!
for _ in $(seq 100); do [ -s "$WORK/data/api.addr" ] && break; sleep 0.2; done
[ -s "$WORK/data/api.addr" ] || { cat "$WORK/serve.log"; echo "the daemon did not start" >&2; exit 1; }
ADDR=$(cat "$WORK/data/api.addr")
TOKEN=$("$BIN" token create acme --config "$WORK/config.toml" | tail -n 1)
# Requests go to the token's account (other AVIDs are 404 by design). A body
# the schema allows may still fail the row rules (an invalid phone number):
# that is the documented 422.
cat > "$WORK/schemathesis.toml" <<'STOML'
[parameters]
"path.avid" = "acme"

[checks.positive_data_acceptance]
expected-statuses = ["2xx", "401", "403", "404", "409", "422", "429"]
STOML
status=0
timeout 600 st --config-file "$WORK/schemathesis.toml" run "http://$ADDR/api/v1/openapi.json" \
  --header "Authorization: Bearer $TOKEN" \
  --max-examples "${SCHEMATHESIS_MAX_EXAMPLES:-25}" \
  --request-timeout 10 \
  --seed 1 \
  --suppress-health-check all \
  || status=$?
if [ "$status" -ne 0 ]; then
  echo "--- daemon log" >&2; tail -n 50 "$WORK/serve.log" >&2
fi
exit "$status"
