#!/usr/bin/env bash
# KV throughput benchmark: pilotfish side by side with etcd 3.4, in the same run.
#
#   pilotfish: `pilotfish agent --data-dir DIR` (every write fsynced before its ack),
#              Consul API: PUT /v1/kv/bench/<n>, GET /v1/kv/bench/<n>.
#   etcd 3.4:  one member on loopback ports (Debian package etcd-server), its JSON
#              gateway: POST /v3/kv/put and POST /v3/kv/range (linearizable), base64.
#
# Load: wrk with tests/bench/kv.lua, CONNS connections (default 64), a 64-byte value,
# a fixed set of KEYS keys (PUTs overwrite them; GETs read them). Each phase runs
# DURATION after a short warm-up. Both data dirs live under BENCH_DIR, on the same
# filesystem, so both pay the same fsync.
#
# Usage:   tests/bench/kv.sh
# Env:     PILOTFISH=path/to/pilotfish (default: cargo build --release here)
#          ETCD=/usr/bin/etcd  CONNS=64  THREADS=2  DURATION=10s  WARMUP=2s  KEYS=1000
#          BENCH_DIR=/var/tmp (not tmpfs: fsync must cost what it costs on disk)
#
# Prints numbers only; exits non-zero when something could not be run (a missing tool,
# a server that did not start) or when a phase saw errors (non-2xx or socket errors).

set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
LUA=$REPO_ROOT/tests/bench/kv.lua
ETCD=${ETCD:-/usr/bin/etcd}
CONNS=${CONNS:-64}
THREADS=${THREADS:-2}
DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-2s}
KEYS=${KEYS:-1000}
BENCH_DIR=${BENCH_DIR:-/var/tmp}

die() { echo "kv.sh: $*" >&2; exit 1; }
log() { echo "# $*" >&2; }

# ---------------------------------------------------------------- prerequisites
need_pkgs=()
command -v wrk >/dev/null || need_pkgs+=(wrk)
[[ -x $ETCD ]] || need_pkgs+=(etcd-server)
command -v curl >/dev/null || need_pkgs+=(curl)
if ((${#need_pkgs[@]})); then
    if ((EUID == 0)) && command -v apt-get >/dev/null; then
        log "installing ${need_pkgs[*]}"
        apt-get update -q >/dev/null || true
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need_pkgs[@]}" >/dev/null ||
            die "apt-get install ${need_pkgs[*]} failed"
    else
        die "missing ${need_pkgs[*]} (run as root to install them with apt-get)"
    fi
fi
[[ -x $ETCD ]] || die "etcd not found at $ETCD"
etcd_version=$("$ETCD" --version 2>/dev/null | awk '/etcd Version/ { print $3 }')
[[ $etcd_version == 3.4.* ]] || log "warning: etcd $etcd_version, the reference figures are for 3.4"

if [[ -z ${PILOTFISH:-} ]]; then
    log "building pilotfish (cargo build --release)"
    (cd "$REPO_ROOT" && cargo build --release -q --bin pilotfish) || die "release build failed"
    PILOTFISH=${CARGO_TARGET_DIR:-$REPO_ROOT/target}/release/pilotfish
fi
[[ -x $PILOTFISH ]] || die "PILOTFISH=$PILOTFISH is not an executable"
"$PILOTFISH" agent --help 2>/dev/null | grep -q -- --data-dir ||
    die "$PILOTFISH has no 'agent --data-dir' yet"

mkdir -p "$BENCH_DIR"
TMP=$(mktemp -d "$BENCH_DIR/pf-kv-bench.XXXXXX")
fs_type=$(stat -f -c %T "$TMP")
[[ $fs_type != tmpfs ]] || log "warning: $TMP is on tmpfs: fsync costs nothing there"

PIDS=()
cleanup() {
    local p
    for p in "${PIDS[@]}"; do
        kill -KILL "$p" 2>/dev/null || true
        wait "$p" 2>/dev/null || true
    done
    rm -rf "$TMP"
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])' 2>/dev/null ||
        echo $((20000 + RANDOM % 20000))
}

wait_http() { # url, name, pid: up to 20 s
    local i
    for ((i = 0; i < 200; i++)); do
        kill -0 "$3" 2>/dev/null || die "$2 exited at start (log: $TMP/$2.log): $(tail -5 "$TMP/$2.log")"
        curl -fsS -o /dev/null --max-time 1 "$1" 2>/dev/null && return 0
        sleep 0.1
    done
    die "$2 did not answer $1 within 20 s (log: $TMP/$2.log)"
}

# ---------------------------------------------------------------- servers
PF_HTTP=$(free_port)
PF_DNS=$(free_port)
"$PILOTFISH" agent --server --data-dir "$TMP/pilotfish" --http-port "$PF_HTTP" --dns-port "$PF_DNS" \
    --server-port "$(free_port)" --bind 127.0.0.1 --client 127.0.0.1 --node bench >"$TMP/pilotfish.log" 2>&1 &
PIDS+=($!)
PF_PID=$!
PF_URL=http://127.0.0.1:$PF_HTTP
wait_http "$PF_URL/v1/status/leader" pilotfish "$PF_PID"

ETCD_CLIENT=$(free_port)
ETCD_PEER=$(free_port)
"$ETCD" --name bench --data-dir "$TMP/etcd" \
    --listen-client-urls "http://127.0.0.1:$ETCD_CLIENT" \
    --advertise-client-urls "http://127.0.0.1:$ETCD_CLIENT" \
    --listen-peer-urls "http://127.0.0.1:$ETCD_PEER" \
    --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER" \
    --initial-cluster "bench=http://127.0.0.1:$ETCD_PEER" \
    --initial-cluster-state new --log-level error >"$TMP/etcd.log" 2>&1 &
PIDS+=($!)
ETCD_PID=$!
ETCD_URL=http://127.0.0.1:$ETCD_CLIENT
wait_http "$ETCD_URL/health" etcd "$ETCD_PID"

# One request each, checked, so a wrong URL or body fails here and not as "fast errors".
put_ok=$(curl -fsS -X PUT --data-binary v "$PF_URL/v1/kv/bench/check") || die "pilotfish PUT failed"
[[ $put_ok == true ]] || die "pilotfish PUT answered $put_ok, not true"
curl -fsS -X POST -d '{"key":"YmVuY2gvY2hlY2s=","value":"dg=="}' "$ETCD_URL/v3/kv/put" >/dev/null ||
    die "etcd PUT through the gateway failed"

# ---------------------------------------------------------------- load
declare -A RPS P50 P99 ERRS
run_phase() { # system url op
    local system=$1 url=$2 op=$3 out line
    wrk -t "$THREADS" -c "$CONNS" -d "$WARMUP" -s "$LUA" "$url" -- "$system" "$op" "$KEYS" >/dev/null 2>&1 ||
        die "wrk warm-up against $system failed"
    out=$(wrk -t "$THREADS" -c "$CONNS" -d "$DURATION" --timeout 10s -s "$LUA" "$url" -- "$system" "$op" "$KEYS" 2>&1) ||
        die "wrk against $system failed: $out"
    line=$(grep '^RESULT' <<<"$out") || die "no RESULT line from wrk: $out"
    RPS[$system.$op]=$(sed -E 's/.*rps=([0-9.]+).*/\1/' <<<"$line")
    P50[$system.$op]=$(sed -E 's/.*p50_ms=([0-9.]+).*/\1/' <<<"$line")
    P99[$system.$op]=$(sed -E 's/.*p99_ms=([0-9.]+).*/\1/' <<<"$line")
    ERRS[$system.$op]=$(sed -E 's/.*errors=([0-9]+).*/\1/' <<<"$line")
    log "$system $op: $line"
}

log "$("$PILOTFISH" --version 2>/dev/null | head -1) at $PF_URL, etcd $etcd_version at $ETCD_URL"
log "data dirs under $TMP ($fs_type); $CONNS connections, $THREADS wrk threads, $DURATION per phase"
# Alternate the systems so neither always runs on a warmer machine.
run_phase pilotfish "$PF_URL" put
run_phase etcd "$ETCD_URL" put
run_phase etcd "$ETCD_URL" get
run_phase pilotfish "$PF_URL" get

# Both servers must still hold what was written.
curl -fsS "$PF_URL/v1/kv/bench/0?raw" >/dev/null || die "pilotfish lost bench/0"

printf '\n%-22s %12s %10s %10s %8s\n' "KV, $CONNS connections" "requests/s" "p50 ms" "p99 ms" "errors"
failed=0
for op in put get; do
    for system in pilotfish etcd; do
        k=$system.$op
        label="$system $op"
        [[ $system == etcd ]] && label="etcd $etcd_version $op"
        printf '%-22s %12s %10s %10s %8s\n' "$label" "${RPS[$k]}" "${P50[$k]}" "${P99[$k]}" "${ERRS[$k]}"
        ((ERRS[$k] == 0)) || failed=1
    done
done
echo "(pilotfish: --data-dir, group commit: one fsync per batch of queued writes; etcd: one member, gateway, linearizable range)"
((failed == 0)) || die "some requests failed (see the errors column)"
