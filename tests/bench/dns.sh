#!/usr/bin/env bash
# DNS throughput benchmark: pilotfish's Consul DNS side by side with dnsmasq, in
# the same run, measured with dnsperf over UDP.
#
# Both servers answer the same three A records (web, db and cache
# .service.consul, one address each, TTL 0); dnsperf cycles through the three
# questions for DURATION seconds with CLIENTS clients, one server after the
# other, ROUNDS times, and prints queries/s.
#
# pilotfish side: `pilotfish agent --dev` (DNS on DNS_PORT, services
# registered through the HTTP API on HTTP_PORT).
#
# Usage:   tests/bench/dns.sh
# Env:     PILOTFISH=path/to/pilotfish (default: cargo build --release here)
#          DURATION=10  CLIENTS=4  THREADS=2  ROUNDS=2
#          DNS_PORT=8600 HTTP_PORT=8500 (agent)
#          DNSMASQ_PORT=18601
#
# Only prints numbers; it exits non-zero only when something could not be run.

set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
DURATION=${DURATION:-10}
CLIENTS=${CLIENTS:-4}
THREADS=${THREADS:-2}
ROUNDS=${ROUNDS:-2}
DNS_PORT=${DNS_PORT:-8600}
HTTP_PORT=${HTTP_PORT:-8500}
DNSMASQ_PORT=${DNSMASQ_PORT:-18601}

die() { echo "dns.sh: $*" >&2; exit 1; }
log() { echo "# $*" >&2; }

# ---------------------------------------------------------------- prerequisites
need_pkgs=()
command -v dnsperf >/dev/null || need_pkgs+=(dnsperf)
command -v dnsmasq >/dev/null || need_pkgs+=(dnsmasq-base)
command -v dig >/dev/null || need_pkgs+=(bind9-dnsutils)
command -v curl >/dev/null || need_pkgs+=(curl)
if ((${#need_pkgs[@]})); then
    if ((EUID == 0)) && command -v apt-get >/dev/null; then
        log "installing ${need_pkgs[*]}"
        apt-get update -q >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need_pkgs[@]}" >/dev/null ||
            die "apt-get install ${need_pkgs[*]} failed"
    else
        die "missing ${need_pkgs[*]} (run as root to install them with apt-get)"
    fi
fi

WORK=$(mktemp -d)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT

RECORDS=(web:10.0.0.1 db:10.0.0.2 cache:10.0.0.3)
for r in "${RECORDS[@]}"; do
    echo "${r%%:*}.service.consul A"
done >"$WORK/queries.txt"

# Wait until `dig` gets 10.0.0.1 for web.service.consul from port $1.
wait_answer() {
    local port=$1 what=$2
    for _ in $(seq 1 100); do
        if dig @127.0.0.1 -p "$port" +short +tries=1 +time=1 web.service.consul A 2>/dev/null |
            grep -qx 10.0.0.1; then
            return 0
        fi
        sleep 0.1
    done
    die "$what did not answer web.service.consul on port $port"
}

# ---------------------------------------------------------------- pilotfish
if [[ -z ${PILOTFISH:-} ]]; then
    PILOTFISH=${CARGO_TARGET_DIR:-$REPO_ROOT/target}/release/pilotfish
    log "building $PILOTFISH (release)"
    (cd "$REPO_ROOT" && cargo build --release -q) || die "release build failed"
fi

start_agent() {
    "$PILOTFISH" agent --help 2>/dev/null | grep -q -- '--dev' || return 1
    PILOTFISH_LOG=${PILOTFISH_LOG:-warn} "$PILOTFISH" agent --dev >"$WORK/agent.log" 2>&1 &
    local pid=$!
    for _ in $(seq 1 50); do
        kill -0 "$pid" 2>/dev/null || return 1
        curl -fsS "http://127.0.0.1:$HTTP_PORT/v1/status/leader" >/dev/null 2>&1 && break
        sleep 0.1
    done
    PIDS+=("$pid")
    local r name addr
    for r in "${RECORDS[@]}"; do
        name=${r%%:*} addr=${r#*:}
        curl -fsS -X PUT "http://127.0.0.1:$HTTP_PORT/v1/catalog/register" \
            -d "{\"Node\":\"$name-node\",\"Address\":\"$addr\",\"Service\":{\"Service\":\"$name\",\"Port\":80}}" \
            >/dev/null || return 1
    done
    PF_PORT=$DNS_PORT
    PF_KIND="pilotfish agent --dev"
}

start_agent || die "pilotfish agent --dev did not start (see $WORK/agent.log)"
wait_answer "$PF_PORT" "pilotfish"

# ---------------------------------------------------------------- dnsmasq
host_records=()
for r in "${RECORDS[@]}"; do
    host_records+=("--host-record=${r%%:*}.service.consul,${r#*:}")
done
dnsmasq --no-daemon --conf-file=/dev/null --port="$DNSMASQ_PORT" --listen-address=127.0.0.1 \
    --bind-interfaces --no-resolv --no-hosts --pid-file= --user=root "${host_records[@]}" \
    >"$WORK/dnsmasq.log" 2>&1 &
PIDS+=("$!")
wait_answer "$DNSMASQ_PORT" "dnsmasq"

# ---------------------------------------------------------------- measure
run_perf() {
    local port=$1 out
    out=$(dnsperf -s 127.0.0.1 -p "$port" -d "$WORK/queries.txt" -c "$CLIENTS" -T "$THREADS" \
        -l "$DURATION" 2>&1) || die "dnsperf failed against port $port: $out"
    local qps lost lat
    qps=$(awk '/Queries per second:/ {print $4}' <<<"$out")
    lost=$(awk '/Queries lost:/ {print $3}' <<<"$out")
    lat=$(awk '/Average Latency/ {print $4}' <<<"$out")
    printf '%s %s %s\n' "${qps:-?}" "${lost:-?}" "${lat:-?}"
}

echo "dnsperf: $CLIENTS clients, $THREADS threads, ${DURATION}s per run, 3 A records, $(nproc) cores"
echo "pilotfish: $PF_KIND on port $PF_PORT; dnsmasq $(dnsmasq --version | head -1 | awk '{print $3}') on port $DNSMASQ_PORT"
printf '%-6s %-10s %14s %10s %14s\n' round server "queries/s" lost "avg lat (s)"
for round in $(seq 1 "$ROUNDS"); do
    read -r qps lost lat < <(run_perf "$PF_PORT")
    printf '%-6s %-10s %14s %10s %14s\n' "$round" pilotfish "$qps" "$lost" "$lat"
    read -r qps lost lat < <(run_perf "$DNSMASQ_PORT")
    printf '%-6s %-10s %14s %10s %14s\n' "$round" dnsmasq "$qps" "$lost" "$lat"
done
