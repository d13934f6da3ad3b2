#!/usr/bin/env bash
# Upload throughput: intake's SFTP server vs OpenSSH sshd with internal-sftp.
#
# Uploads one SIZE_MB file (default 500 MB) with the OpenSSH `sftp` client and
# with `curl` (libssh2) to both servers on loopback, in interleaved rounds
# (ROUNDS, default 5), and prints the median MB/s of each and the ratios.
# Issue 3's targets: intake >= 1.2x sshd with OpenSSH sftp; curl to intake
# >= 0.8x curl to sshd.
#
# Starts its own sshd (own config, host key, port) and intake's SFTP server
# (examples/sftp_only, release build), and stops both by PID on exit.
# Installs openssh-server with apt-get if sshd is missing.
#
# CLIENTS picks the clients (default "sftp curl"); node-put and node-fastPut
# are ssh2-sftp-client's put() (one 32 KiB write outstanding: stop-and-wait)
# and fastPut() (pipelined), from tests/clients (npm ci --prefix tests/clients).
#
#   bench/sftp.sh                    # 500 MB, 5 rounds
#   SIZE_MB=100 ROUNDS=3 bench/sftp.sh
#   SIZE_MB=50 ROUNDS=3 CLIENTS="node-put node-fastPut" bench/sftp.sh
set -euo pipefail

SIZE_MB=${SIZE_MB:-500}
ROUNDS=${ROUNDS:-5}
CLIENTS=${CLIENTS:-sftp curl}
INTAKE_PORT=${INTAKE_PORT:-22322}
SSHD_PORT=${SSHD_PORT:-22323}
ROOT=$(cd "$(dirname "$0")/.." && pwd)

SSHD=$(command -v sshd || true)
[ -z "$SSHD" ] && [ -x /usr/sbin/sshd ] && SSHD=/usr/sbin/sshd
if [ -z "$SSHD" ]; then
    echo "installing openssh-server..." >&2
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
    $SUDO apt-get install -y -qq openssh-server >/dev/null
    SSHD=/usr/sbin/sshd
fi
for tool in sftp curl ssh-keygen python3; do
    command -v "$tool" >/dev/null || { echo "missing $tool" >&2; exit 1; }
done

WORK=$(mktemp -d /tmp/intake-sftp-bench.XXXXXX)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT

echo "building intake (release)..." >&2
(cd "$ROOT" && cargo build --release --quiet --example sftp_only)

ssh-keygen -q -t ed25519 -N "" -f "$WORK/client_key"
ssh-keygen -q -t ed25519 -N "" -f "$WORK/sshd_host_key"
cp "$WORK/client_key.pub" "$WORK/authorized_keys"
chmod 600 "$WORK/authorized_keys"
mkdir -p "$WORK/sshd-target"
ME=$(id -un)

cat >"$WORK/sshd_config" <<EOF
Port $SSHD_PORT
ListenAddress 127.0.0.1
HostKey $WORK/sshd_host_key
PidFile $WORK/sshd.pid
AuthorizedKeysFile $WORK/authorized_keys
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin yes
StrictModes no
UsePAM no
Subsystem sftp internal-sftp
ForceCommand internal-sftp
EOF
mkdir -p /run/sshd 2>/dev/null || true
"$SSHD" -f "$WORK/sshd_config" -D -e 2>"$WORK/sshd.log" &
PIDS+=($!)

"${CARGO_TARGET_DIR:-$ROOT/target}/release/examples/sftp_only" --listen "127.0.0.1:$INTAKE_PORT" --data "$WORK/intake" \
    --user bench --authorized-keys "$WORK/client_key.pub" >"$WORK/intake.log" 2>&1 &
PIDS+=($!)

wait_port() {
    for _ in $(seq 1 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.1
    done
    echo "nothing listening on port $1; logs in $WORK" >&2
    cat "$WORK"/*.log >&2
    exit 1
}
wait_port "$SSHD_PORT"
wait_port "$INTAKE_PORT"

echo "generating a ${SIZE_MB} MB file..." >&2
head -c "${SIZE_MB}M" /dev/urandom >"$WORK/upload.csv"

SSH_OPTS=(-F /dev/null -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null
          -o BatchMode=yes -o IdentitiesOnly=yes -o LogLevel=ERROR -i "$WORK/client_key")
CURL_OPTS=(-sS --insecure --key "$WORK/client_key" --pubkey "$WORK/client_key.pub")

now() { date +%s.%N; }

# upload <client> <server>: prints MB/s
upload() {
    local client=$1 server=$2 port user target start end
    if [ "$server" = intake ]; then
        port=$INTAKE_PORT; user=bench; target=/customers/bench.csv
    else
        port=$SSHD_PORT; user=$ME; target=$WORK/sshd-target/bench.csv
    fi
    start=$(now)
    if [ "$client" = sftp ]; then
        echo "put $WORK/upload.csv $target" | sftp "${SSH_OPTS[@]}" -P "$port" -b - "$user@127.0.0.1" >/dev/null
    elif [ "$client" = node-put ] || [ "$client" = node-fastPut ]; then
        node "$ROOT/tests/clients/ssh2_put.js" "${client#node-}" 127.0.0.1 "$port" "$user" "$WORK/client_key" \
            "$WORK/upload.csv" "$target" >/dev/null
    else
        curl "${CURL_OPTS[@]}" -u "$user:" -T "$WORK/upload.csv" "sftp://127.0.0.1:$port$target"
    fi
    end=$(now)
    rm -f "$WORK/intake/accounts/bench/customers/bench.csv" "$WORK/sshd-target/bench.csv"
    python3 -c "print(f'{$SIZE_MB / ($end - $start):.1f}')"
}

declare -A RESULTS
for client in $CLIENTS; do
    for server in intake sshd; do RESULTS[$client-$server]=""; done
done
for round in $(seq 1 "$ROUNDS"); do
    for client in $CLIENTS; do
        # Alternate which server goes first, so neither always gets a warm cache.
        if [ $((round % 2)) -eq 1 ]; then order="intake sshd"; else order="sshd intake"; fi
        for server in $order; do
            v=$(upload "$client" "$server")
            RESULTS[$client-$server]+="$v "
            echo "round $round  $client -> $server: $v MB/s" >&2
        done
    done
done

median() { python3 -c "import statistics,sys; print(f'{statistics.median(map(float, sys.argv[1:])):.1f}')" $1; }
echo
echo "upload of $SIZE_MB MB, $ROUNDS interleaved rounds, median MB/s ($(nproc) cores, loopback)"
for client in $CLIENTS; do
    i=$(median "${RESULTS[$client-intake]}")
    s=$(median "${RESULTS[$client-sshd]}")
    ratio=$(python3 -c "print(f'{$i / $s:.2f}')")
    printf '%-12s  intake %8s MB/s   OpenSSH sshd %8s MB/s   ratio %sx\n' "$client" "$i" "$s" "$ratio"
done
