#!/usr/bin/env bash
# Cluster benchmark: a 3-server pilotfish cluster side by side with a 3-member etcd 3.4
# cluster, on this machine, in the same run.
#
#   pilotfish: `pilotfish agent --server --bootstrap-expect 3 --retry-join ...`, one
#              server per loopback address 127.0.0.1-3 (same ports on each), raft via
#              openraft, every write fsynced before its ack. Consul API:
#              PUT /v1/kv/<key>, GET /v1/status/leader.
#   etcd 3.4:  three members on 127.0.1.1-3 (Debian package etcd-server), default
#              heartbeat/election (100 ms / 1000 ms), its JSON gateway:
#              POST /v3/kv/put (base64), POST /v3/maintenance/status.
#
# What it measures, the two systems interleaved phase by phase:
#   1. bootstrap: from just before the first of the 3 processes starts until a leader is
#      known and a first write is acknowledged (polled every 10 ms); BOOT_ROUNDS rounds
#      with fresh data dirs, median.
#   2. failover: SIGKILL the leader, then start a write every PROBE_EVERY (client timeout
#      CLIENT_TIMEOUT each, alternating between the two survivors, several in flight)
#      until one is acknowledged; the earliest acknowledgement counts. FAIL_ROUNDS
#      rounds, median and max.
#      Between rounds the killed member is restarted on its data dir and must have
#      caught up (a marker written through a survivor is readable locally on it).
#   3. KV PUT with wrk (tests/bench/kv.lua) at 1 connection (1 thread) and 64 connections
#      (2 threads), DURATION each after a WARMUP, against the leader of each system, and
#      against a pilotfish follower (which forwards writes to the leader).
#
# While one system is measured the other cluster sits idle (heartbeats only); in all
# bootstrap rounds but the last, only the cluster being measured runs.
#
# Usage:   tests/bench/cluster.sh
# Env:     PILOTFISH=path/to/pilotfish (default: cargo build --release here)
#          ETCD=/usr/bin/etcd  DURATION=10s  WARMUP=2s  KEYS=1000
#          BOOT_ROUNDS=3  FAIL_ROUNDS=5  CLIENT_TIMEOUT=0.5  PROBE_EVERY=0.02
#          BENCH_DIR=/var/tmp (data dirs; not tmpfs: fsync must cost what it costs on disk)
#          OUT=${TMPDIR:-/tmp}/pilotfish-cluster-bench.txt (the table is also written here)
#          KEEP=1 keeps the data dirs and server logs (processes are always stopped)
#          PF_ENCRYPT=KEY the cluster key the pilotfish servers authenticate with
#                     (default: a fresh `pilotfish keygen`, as a secured cluster runs;
#                     PF_ENCRYPT=none runs the cluster port unauthenticated)
#
# Prints numbers only; exits non-zero when something could not be run (a missing tool,
# a cluster that did not form or recover) or when a wrk phase saw errors.

set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
LUA=$REPO_ROOT/tests/bench/kv.lua
ETCD=${ETCD:-/usr/bin/etcd}
DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-2s}
KEYS=${KEYS:-1000}
BOOT_ROUNDS=${BOOT_ROUNDS:-3}
FAIL_ROUNDS=${FAIL_ROUNDS:-5}
CLIENT_TIMEOUT=${CLIENT_TIMEOUT:-0.5}
PROBE_EVERY=${PROBE_EVERY:-0.02}
BENCH_DIR=${BENCH_DIR:-/var/tmp}
OUT=${OUT:-${TMPDIR:-/tmp}/pilotfish-cluster-bench.txt}
# How long a cluster gets to form, fail over or take a member back before we give up.
DEADLINE_US=30000000

die() { echo "cluster.sh: $*" >&2; exit 1; }
log() { echo "# $*" >&2; }

# ---------------------------------------------------------------- prerequisites
need_pkgs=()
command -v wrk >/dev/null || need_pkgs+=(wrk)
[[ -x $ETCD ]] || need_pkgs+=(etcd-server)
command -v curl >/dev/null || need_pkgs+=(curl)
command -v python3 >/dev/null || need_pkgs+=(python3)
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
"$PILOTFISH" agent --help 2>/dev/null | grep -q -- --bootstrap-expect ||
    die "$PILOTFISH has no 'agent --bootstrap-expect' yet"
PF_ENCRYPT=${PF_ENCRYPT:-$("$PILOTFISH" keygen)}
PF_KEY_ARGS=()
[[ $PF_ENCRYPT == none ]] || PF_KEY_ARGS=(--encrypt "$PF_ENCRYPT")
pf_version=$("$PILOTFISH" --version 2>/dev/null | head -1)
pf_commit=$(git -C "$REPO_ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)

mkdir -p "$BENCH_DIR"
TMP=$(mktemp -d "$BENCH_DIR/pf-cluster-bench.XXXXXX")
fs_type=$(stat -f -c %T "$TMP")
[[ $fs_type != tmpfs ]] || log "warning: $TMP is on tmpfs: fsync costs nothing there"

# Every process this script started and that may still run: servers by
# "<system>.<member>", and the failover probes in flight.
declare -A PID=()
PROBE_PIDS=()
cleanup() {
    local k
    for k in "${PROBE_PIDS[@]}"; do kill -KILL "$k" 2>/dev/null || true; done
    for k in "${!PID[@]}"; do
        kill -KILL "${PID[$k]}" 2>/dev/null || true
        wait "${PID[$k]}" 2>/dev/null || true
    done
    if [[ -n ${KEEP:-} ]]; then log "kept the data dirs and logs in $TMP"; else rm -rf "$TMP"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Ports free for TCP and UDP on every address given, all distinct: both clusters use
# the same ports on each of their three addresses.
free_ports() { # count addr...
    python3 - "$@" <<'EOF'
import random, socket, sys
count, addrs = int(sys.argv[1]), sys.argv[2:]
found = []
for _ in range(1000):
    port = random.randint(20000, 60000)
    if port in found:
        continue
    socks, ok = [], True
    try:
        for a in addrs:
            for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
                s = socket.socket(socket.AF_INET, kind)
                socks.append(s)
                s.bind((a, port))
    except OSError:
        ok = False
    for s in socks:
        s.close()
    if ok:
        found.append(port)
        if len(found) == count:
            print(" ".join(map(str, found)))
            sys.exit(0)
sys.exit(1)
EOF
}
read -r PF_HTTP PF_DNS PF_SERVER ETCD_CLIENT ETCD_PEER < <(free_ports 5 \
    127.0.0.1 127.0.0.2 127.0.0.3 127.0.1.1 127.0.1.2 127.0.1.3) ||
    die "no free ports on 127.0.0.1-3 and 127.0.1.1-3"

SYSTEMS=(pf etcd)
declare -A NAME=([pf]=pilotfish [etcd]="etcd $etcd_version")
declare -A LUA_SYSTEM=([pf]=pilotfish [etcd]=etcd) # kv.lua's name for each
declare -A URL=()
for i in 1 2 3; do
    URL[pf.$i]=http://127.0.0.$i:$PF_HTTP
    URL[etcd.$i]=http://127.0.1.$i:$ETCD_CLIENT
done
ETCD_CLUSTER=e1=http://127.0.1.1:$ETCD_PEER,e2=http://127.0.1.2:$ETCD_PEER,e3=http://127.0.1.3:$ETCD_PEER
# The data dir of each system's running cluster.
declare -A DIR=()

# Wall clock in microseconds, without a fork: sets NOW.
now() { NOW=${EPOCHREALTIME//[.,]/}; }
ms() { awk -v us="$1" 'BEGIN { printf "%.0f", us / 1000 }'; } # µs → whole ms

declare -A B64=()
b64() { [[ -n ${B64[$1]+x} ]] || B64[$1]=$(printf %s "$1" | base64 -w0); }

# ---------------------------------------------------------------- one member
start() { # sys member: start it on DIR[sys], logs appended across restarts
    local sys=$1 i=$2 dir=${DIR[$1]}
    case $sys in
    pf)
        "$PILOTFISH" agent --server --bootstrap-expect 3 --data-dir "$dir/s$i" --node "s$i" \
            --bind "127.0.0.$i" --client "127.0.0.$i" --http-port "$PF_HTTP" \
            --dns-port "$PF_DNS" --server-port "$PF_SERVER" \
            --retry-join 127.0.0.1 --retry-join 127.0.0.2 --retry-join 127.0.0.3 \
            "${PF_KEY_ARGS[@]}" --log-level warn >>"$dir/s$i.log" 2>&1 &
        ;;
    etcd)
        local peer=http://127.0.1.$i:$ETCD_PEER client=http://127.0.1.$i:$ETCD_CLIENT
        # On a restart the data dir already holds the membership; the flags are ignored.
        "$ETCD" --name "e$i" --data-dir "$dir/e$i" \
            --listen-client-urls "$client" --advertise-client-urls "$client" \
            --listen-peer-urls "$peer" --initial-advertise-peer-urls "$peer" \
            --initial-cluster "$ETCD_CLUSTER" --initial-cluster-state new \
            --initial-cluster-token "${dir##*/}" --logger zap --log-level error >>"$dir/e$i.log" 2>&1 &
        ;;
    esac
    PID[$sys.$i]=$!
}

kill_member() { # sys member
    local k=$1.$2
    kill -KILL "${PID[$k]}" 2>/dev/null || true
    wait "${PID[$k]}" 2>/dev/null || true
    unset "PID[$k]"
}

check_alive() { # sys: every member that should run does
    local i
    for i in 1 2 3; do
        [[ -z ${PID[$1.$i]:-} ]] || kill -0 "${PID[$1.$i]}" 2>/dev/null ||
            die "${NAME[$1]} member $i exited (log: ${DIR[$1]}): $(tail -5 "${DIR[$1]}"/?"$i".log)"
    done
}

# A write acknowledged by member i (0) or not (1), within CLIENT_TIMEOUT.
put() { # sys member key value
    local out
    case $1 in
    pf)
        out=$(curl -sf -m "$CLIENT_TIMEOUT" -X PUT --data-binary "$4" "${URL[pf.$2]}/v1/kv/$3" 2>/dev/null) &&
            [[ $out == true ]]
        ;;
    etcd)
        b64 "$3"
        b64 "$4"
        out=$(curl -sf -m "$CLIENT_TIMEOUT" -X POST -d "{\"key\":\"${B64[$3]}\",\"value\":\"${B64[$4]}\"}" \
            "${URL[etcd.$2]}/v3/kv/put" 2>/dev/null) && [[ $out == *'"header"'* ]]
        ;;
    esac
}

# The value of key as member i holds it locally (pilotfish ?stale, etcd serializable).
local_get() { # sys member key
    case $1 in
    pf) curl -sf -m 1 "${URL[pf.$2]}/v1/kv/$3?stale&raw" 2>/dev/null || true ;;
    etcd)
        local out
        b64 "$3"
        out=$(curl -sf -m 1 -X POST -d "{\"key\":\"${B64[$3]}\",\"serializable\":true}" \
            "${URL[etcd.$2]}/v3/kv/range" 2>/dev/null) || return 0
        [[ $out =~ \"value\":\"([^\"]*)\" ]] && printf %s "${BASH_REMATCH[1]}" | base64 -d
        ;;
    esac
    return 0 # absent or unreachable prints nothing; callers compare the output
}

# The leader as member i sees it: prints its member number (1-3), nothing when none.
leader_seen_by() { # sys member
    local out
    case $1 in
    pf)
        out=$(curl -sf -m 1 "${URL[pf.$2]}/v1/status/leader" 2>/dev/null) || return 0
        [[ $out =~ ^\"127\.0\.0\.([123]):[0-9]+\"$ ]] && echo "${BASH_REMATCH[1]}"
        ;;
    etcd)
        out=$(curl -sf -m 1 -X POST -d '{}' "${URL[etcd.$2]}/v3/maintenance/status" 2>/dev/null) || return 0
        [[ $out =~ \"leader\":\"([0-9]+)\" && ${BASH_REMATCH[1]} != 0 ]] || return 0
        local leader=${BASH_REMATCH[1]} j id
        for j in 1 2 3; do
            [[ -n ${PID[etcd.$j]:-} ]] || continue
            id=$(curl -sf -m 1 -X POST -d '{}' "${URL[etcd.$j]}/v3/maintenance/status" 2>/dev/null) || continue
            [[ $id =~ \"member_id\":\"([0-9]+)\" && ${BASH_REMATCH[1]} == "$leader" ]] && { echo "$j"; return 0; }
        done
        ;;
    esac
    return 0 # no leader prints nothing
}

# The leader every running member agrees on, waiting up to the deadline.
leader() { # sys
    local sys=$1 i l agreed start
    now
    start=$NOW
    while :; do
        agreed=
        for i in 1 2 3; do
            [[ -n ${PID[$sys.$i]:-} ]] || continue
            l=$(leader_seen_by "$sys" "$i")
            if [[ -z $l || (-n $agreed && $l != "$agreed") ]]; then agreed=x; break; fi
            agreed=$l
        done
        [[ $agreed == [123] ]] && { echo "$agreed"; return 0; }
        check_alive "$sys"
        now
        ((NOW - start < DEADLINE_US)) || die "${NAME[$sys]}: members do not agree on a leader"
        sleep 0.05
    done
}

# ---------------------------------------------------------------- 1. bootstrap
declare -A BOOT_LEADER=() BOOT_WRITE=() # "sys" → space-separated µs per round
boot_round() { # sys round
    local sys=$1 r=$2 i n=0 t0 t_leader= t_write=
    DIR[$sys]=$TMP/$sys-boot$r
    mkdir -p "${DIR[$sys]}"
    now
    t0=$NOW
    for i in 1 2 3; do start "$sys" "$i"; done
    while :; do
        i=$((n % 3 + 1))
        n=$((n + 1))
        if [[ -z $t_leader && -n $(leader_seen_by "$sys" "$i") ]]; then
            now
            t_leader=$NOW
        fi
        if [[ -n $t_leader ]] && put "$sys" "$i" bench/bootstrap "round $r"; then
            now
            t_write=$NOW
            break
        fi
        check_alive "$sys"
        now
        ((NOW - t0 < DEADLINE_US)) || die "${NAME[$sys]}: no leader and acknowledged write 30 s after start"
        sleep 0.01
    done
    BOOT_LEADER[$sys]+=" $((t_leader - t0))"
    BOOT_WRITE[$sys]+=" $((t_write - t0))"
    log "${NAME[$sys]} bootstrap $r: leader known $(ms $((t_leader - t0))) ms, first write $(ms $((t_write - t0))) ms"
}

stop_cluster() { # sys: kill it and drop its data
    local i
    for i in 1 2 3; do kill_member "$1" "$i"; done
    rm -rf "${DIR[$1]}"
}

# ---------------------------------------------------------------- 3. throughput
declare -A RPS=() P50=() P99=() ERRS=() NOTE=()
ROWS=()
wrk_phase() { # sys leader|follower conns threads
    local sys=$1 role=$2 conns=$3 threads=$4 l target out line row
    l=$(leader "$sys")
    if [[ $role == leader ]]; then target=$l; else target=$((l % 3 + 1)); fi
    row="$sys.$role.$conns"
    ROWS+=("$row")
    wrk -t "$threads" -c "$conns" -d "$WARMUP" -s "$LUA" "${URL[$sys.$target]}" -- "${LUA_SYSTEM[$sys]}" put "$KEYS" >/dev/null 2>&1 ||
        die "wrk warm-up against ${NAME[$sys]} failed"
    out=$(wrk -t "$threads" -c "$conns" -d "$DURATION" --timeout 10s -s "$LUA" "${URL[$sys.$target]}" \
        -- "${LUA_SYSTEM[$sys]}" put "$KEYS" 2>&1) || die "wrk against ${NAME[$sys]} failed: $out"
    line=$(grep '^RESULT' <<<"$out") || die "no RESULT line from wrk: $out"
    RPS[$row]=$(sed -E 's/.*rps=([0-9.]+).*/\1/' <<<"$line")
    P50[$row]=$(sed -E 's/.*p50_ms=([0-9.]+).*/\1/' <<<"$line")
    P99[$row]=$(sed -E 's/.*p99_ms=([0-9.]+).*/\1/' <<<"$line")
    ERRS[$row]=$(sed -E 's/.*errors=([0-9]+).*/\1/' <<<"$line")
    NOTE[$row]="member $target"
    [[ $(leader "$sys") == "$l" ]] || NOTE[$row]+=", LEADER CHANGED during the run"
    ((ERRS[$row] == 0)) || NOTE[$row]+=", INVALID: errors"
    log "${NAME[$sys]} put via $role (member $target), $conns conns: $line"
}

# ---------------------------------------------------------------- 2. failover
declare -A FAILOVER=() REJOIN=() # "sys" → space-separated µs per round
fail_round() { # sys round
    local sys=$1 r=$2 l s n=0 t_kill t_ack t_restart acked survivors probes=$TMP/probes-$1-$2
    l=$(leader "$sys")
    survivors=($((l % 3 + 1)) $(((l + 1) % 3 + 1)))
    mkdir -p "$probes"
    b64 bench/failover # encoded here, not once per probe subshell
    b64 "round $r"
    PROBE_PIDS=()
    now
    t_kill=$NOW
    kill_member "$sys" "$l"
    # Overlapping probes, not one write after another: etcd drops a proposal made while
    # it has no leader and leaves the request unanswered until the client gives up, so
    # a serial loop would round etcd's failover up to a multiple of CLIENT_TIMEOUT.
    while ! compgen -G "$probes/*" >/dev/null; do
        s=${survivors[n % 2]}
        n=$((n + 1))
        { put "$sys" "$s" bench/failover "round $r" && now && echo "$NOW $s" >"$probes/$n"; } &
        PROBE_PIDS+=($!)
        now
        ((NOW - t_kill < DEADLINE_US)) || die "${NAME[$sys]}: no write acknowledged 30 s after killing leader $l"
        sleep "$PROBE_EVERY"
    done
    wait "${PROBE_PIDS[@]}" 2>/dev/null || true # the rest give up within CLIENT_TIMEOUT
    PROBE_PIDS=()
    read -r t_ack acked < <(cat "$probes"/* | sort -n | head -1)
    FAILOVER[$sys]+=" $((t_ack - t_kill))"

    # Take the member back and wait until it has caught up with a fresh write.
    now
    t_restart=$NOW
    start "$sys" "$l"
    local marker="rejoin $r $RANDOM"
    while ! put "$sys" "$acked" bench/rejoin "$marker"; do
        now
        ((NOW - t_restart < DEADLINE_US)) || die "${NAME[$sys]}: survivors stopped taking writes"
        sleep 0.05
    done
    while [[ $(local_get "$sys" "$l" bench/rejoin) != "$marker" ]]; do
        check_alive "$sys"
        now
        ((NOW - t_restart < DEADLINE_US)) || die "${NAME[$sys]}: member $l did not catch up 30 s after restart"
        sleep 0.05
    done
    now
    REJOIN[$sys]+=" $((NOW - t_restart))"
    log "${NAME[$sys]} failover $r: killed leader $l, write acked by $acked after $(ms $((t_ack - t_kill))) ms" \
        "($n probes started); member $l caught up $(ms $((NOW - t_restart))) ms after restart"
}

# ---------------------------------------------------------------- run
summary() { # median|max µs... → ms
    local what=$1
    shift
    printf '%s\n' "$@" | sort -n | awk -v what="$what" '{ a[NR] = $1 }
        END { v = what == "max" ? a[NR] : (NR % 2 ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2)
              printf "%.0f", v / 1000 }'
}
all_ms() { local v out=; for v in "$@"; do out+=" $(ms "$v")"; done; echo "${out# }"; }

load_before=$(uptime)
log "$pf_version ($pf_commit) vs etcd $etcd_version; data under $TMP ($fs_type); $load_before"
log "ports: pilotfish http $PF_HTTP dns $PF_DNS server $PF_SERVER; etcd client $ETCD_CLIENT peer $ETCD_PEER"

for ((r = 1; r <= BOOT_ROUNDS; r++)); do
    for sys in "${SYSTEMS[@]}"; do
        boot_round "$sys" "$r"
        # The last round's clusters stay up for the other phases (so pilotfish's idles
        # while etcd's last bootstrap runs); earlier rounds run one cluster at a time.
        ((r == BOOT_ROUNDS)) || stop_cluster "$sys"
    done
done
# Both clusters are now up; pilotfish's has been idle while etcd's formed.

# One request each, checked, so a wrong URL or body fails here and not as "fast errors".
for sys in "${SYSTEMS[@]}"; do
    put "$sys" "$(leader "$sys")" bench/check v || die "${NAME[$sys]}: a PUT to the leader was not acknowledged"
done

# Alternate the systems so neither always runs on a warmer machine.
wrk_phase pf leader 1 1
wrk_phase etcd leader 1 1
wrk_phase pf follower 1 1
wrk_phase etcd leader 64 2
wrk_phase pf leader 64 2
wrk_phase pf follower 64 2

for ((r = 1; r <= FAIL_ROUNDS; r++)); do
    for sys in "${SYSTEMS[@]}"; do fail_round "$sys" "$r"; done
done
load_after=$(uptime)

# ---------------------------------------------------------------- report
{
    echo
    echo "$pf_version ($pf_commit) vs etcd $etcd_version: 3 servers each, loopback, $(date -u +%FT%TZ)"
    echo "data dirs on $fs_type under $BENCH_DIR; $(nproc) cores"
    echo "load before: ${load_before#*load average: }   after: ${load_after#*load average: }"
    echo
    printf '%-44s %12s %12s\n' "milliseconds" pilotfish "etcd $etcd_version"
    # shellcheck disable=SC2086 # the per-round lists split into arguments on purpose
    {
        printf '%-44s %12s %12s\n' "bootstrap: leader known, median of $BOOT_ROUNDS" \
            "$(summary median ${BOOT_LEADER[pf]})" "$(summary median ${BOOT_LEADER[etcd]})"
        printf '%-44s %12s %12s\n' "bootstrap: first write acked, median of $BOOT_ROUNDS" \
            "$(summary median ${BOOT_WRITE[pf]})" "$(summary median ${BOOT_WRITE[etcd]})"
        printf '%-44s %12s %12s\n' "failover: first write acked, median of $FAIL_ROUNDS" \
            "$(summary median ${FAILOVER[pf]})" "$(summary median ${FAILOVER[etcd]})"
        printf '%-44s %12s %12s\n' "failover: first write acked, max of $FAIL_ROUNDS" \
            "$(summary max ${FAILOVER[pf]})" "$(summary max ${FAILOVER[etcd]})"
        printf '%-44s %12s %12s\n' "rejoin: restart to caught up, median" \
            "$(summary median ${REJOIN[pf]})" "$(summary median ${REJOIN[etcd]})"
        echo
        for sys in "${SYSTEMS[@]}"; do
            echo "${NAME[$sys]} rounds, ms: bootstrap $(all_ms ${BOOT_WRITE[$sys]});" \
                "failover $(all_ms ${FAILOVER[$sys]})"
        done
    }
    echo
    printf '%-36s %11s %8s %8s %7s  %s\n' "KV PUT, $DURATION per row" "requests/s" "p50 ms" "p99 ms" errors ""
    for row in "${ROWS[@]}"; do
        IFS=. read -r sys role conns <<<"$row"
        label="${NAME[$sys]} $role, $conns conn"
        ((conns == 1)) || label+=s
        printf '%-36s %11s %8s %8s %7s  %s\n' "$label" "${RPS[$row]}" "${P50[$row]}" "${P99[$row]}" \
            "${ERRS[$row]}" "${NOTE[$row]}"
    done
    echo "(1 connection: 1 wrk thread; 64 connections: 2 threads; $KEYS keys, 64-byte values;"
    echo " etcd through its HTTP gateway; a pilotfish follower forwards each write to the leader;"
    echo " failover: a write every ${PROBE_EVERY}s to the two survivors in turn, ${CLIENT_TIMEOUT}s client timeout,"
    echo " the earliest acknowledgement counts; rejoin: the killed member restarted until it serves a fresh write)"
} | tee "$OUT"
log "table written to $OUT"

failed=0
for row in "${ROWS[@]}"; do ((ERRS[$row] == 0)) || failed=1; done
((failed == 0)) || die "some requests failed (see the errors column): those throughput figures are invalid"
