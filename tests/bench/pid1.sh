#!/usr/bin/env bash
# PID-1 footprint benchmark: pilotfish side by side with tini, in the same run.
#
#   1. resident memory while supervising one `sleep 1000` job, started normally
#      and as PID 1 of a fresh pid namespace (pilotfish there = keeper + worker);
#   2. exec -> child done: the time the supervisor adds to a trivial child (`true`),
#      measured with hyperfine, normally and under `unshare --pid --fork`;
#   3. a summary table against the goal "within 4 MiB and 3 ms of tini".
#
# Usage:   tests/bench/pid1.sh
# Env:     PILOTFISH=path/to/pilotfish  (default: the static release build, built here)
#          TINI=/usr/bin/tini  RUNS=300  WARMUP=20  BUDGET_S=12 (max seconds per hyperfine command)
#          PID1_LATENCY=0 skips the namespace latency rows; LATENCY=0 skips all latency runs.
#
# Only prints numbers: a goal miss never fails the script. It exits non-zero only if
# something could not be run (missing tool, a supervisor that did not start, ...).
# Memory is read from /proc/PID/status (VmRSS) and /proc/PID/smaps_rollup (Pss,
# Private_*) of the supervisor process(es) only, never of the `sleep` child.

set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
TINI=${TINI:-/usr/bin/tini}
RUNS=${RUNS:-300}
WARMUP=${WARMUP:-20}
BUDGET_S=${BUDGET_S:-12}
PID1_LATENCY=${PID1_LATENCY:-1}
LATENCY=${LATENCY:-1}
((LATENCY)) || PID1_LATENCY=0
TRUE_BIN=$(type -P true) # the binary, never the shell builtin
SLEEP_BIN=$(type -P sleep)

die() { echo "pid1.sh: $*" >&2; exit 1; }
log() { echo "# $*" >&2; }

# ---------------------------------------------------------------- prerequisites
need_pkgs=()
[[ -x $TINI ]] || need_pkgs+=(tini)
command -v hyperfine >/dev/null || need_pkgs+=(hyperfine)
if ((${#need_pkgs[@]})); then
    if ((EUID == 0)) && command -v apt-get >/dev/null; then
        log "installing ${need_pkgs[*]}"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need_pkgs[@]}" >/dev/null ||
            die "apt-get install ${need_pkgs[*]} failed"
    else
        die "missing ${need_pkgs[*]} (run as root to install them with apt-get)"
    fi
fi
[[ -x $TINI ]] || die "tini not found at $TINI"
command -v unshare >/dev/null || die "unshare (util-linux) not found"
command -v pgrep >/dev/null || die "pgrep (procps) not found"
command -v jq >/dev/null || die "jq not found"

if [[ -z ${PILOTFISH:-} ]]; then
    # The shipped form: one static binary (what images/ copies into FROM scratch).
    PILOTFISH=$REPO_ROOT/target/x86_64-unknown-linux-gnu/release/pilotfish
    log "building the static $PILOTFISH"
    (cd "$REPO_ROOT" && RUSTFLAGS="-C target-feature=+crt-static" \
        cargo build --release -q --target x86_64-unknown-linux-gnu) || die "static release build failed"
fi
[[ -x $PILOTFISH ]] || die "PILOTFISH=$PILOTFISH is not an executable"
PILOTFISH=$(cd "$(dirname "$PILOTFISH")" && pwd)/$(basename "$PILOTFISH")
[[ $PILOTFISH != *" "* && $TINI != *" "* ]] || die "paths with spaces are not supported (hyperfine -N)"

# A new pid namespace needs CAP_SYS_ADMIN; without root, map root in a user namespace.
UNSHARE=(unshare --pid --fork)
((EUID == 0)) || UNSHARE=(unshare --user --map-root-user --pid --fork)
"${UNSHARE[@]}" "$TRUE_BIN" 2>/dev/null || die "cannot create a pid namespace with: ${UNSHARE[*]}"

TMP=$(mktemp -d "${TMPDIR:-/tmp}/pf-bench.XXXXXX")
ROOTS=() # every process this script started; cleanup kills their whole trees

# ------------------------------------------------------------------ /proc helpers
alive() { # running and not a zombie
    local st
    st=$(awk '{ sub(/^.*\) /, ""); print $1 }' "/proc/$1/stat" 2>/dev/null) || return 1
    [[ -n $st && $st != Z && $st != X ]]
}
children() { pgrep -P "$1" 2>/dev/null || true; }
descendants() { # depth first, children before their parent is listed
    local c
    for c in $(children "$1"); do
        descendants "$c"
        echo "$c"
    done
}
comm() { cat "/proc/$1/comm" 2>/dev/null || true; }
# The first child of $1 whose comm is $2 (after its exec), waiting up to 5 s.
wait_child() {
    local parent=$1 name=$2 i c
    for ((i = 0; i < 250; i++)); do
        for c in $(children "$parent"); do
            if [[ $(comm "$c") == "$name" ]] && alive "$c"; then
                echo "$c"
                return 0
            fi
        done
        alive "$parent" || break
        sleep 0.02
    done
    return 1
}
wait_gone() { # up to $2 seconds
    local i
    for ((i = 0; i < ${2:-3} * 50; i++)); do
        alive "$1" || return 0
        sleep 0.02
    done
    return 1
}
status_kb() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status"; }
rollup_kb() { # Pss, or Private (= Private_Clean + Private_Dirty); "" if unavailable
    [[ -r /proc/$1/smaps_rollup ]] || return 0
    if [[ $2 == Private ]]; then
        awk '$1 == "Private_Clean:" || $1 == "Private_Dirty:" { s += $2 } END { print s }' "/proc/$1/smaps_rollup"
    else
        awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/smaps_rollup"
    fi
}

# Distinct resident pages of a set of processes (KiB): RSS without counting a page
# twice when several of the processes map it (libc, pilotfish's own text). Needs root
# (page frame numbers in /proc/PID/pagemap) and python3; prints n/a otherwise.
union_kb() {
    if ((EUID != 0)) || ! command -v python3 >/dev/null; then echo n/a; return 0; fi
    python3 - "$@" <<'PY' 2>/dev/null || echo n/a
import struct, sys
pfns = set()
for pid in sys.argv[1:]:
    with open(f"/proc/{pid}/maps") as maps, open(f"/proc/{pid}/pagemap", "rb") as pm:
        for line in maps:
            lo, hi = (int(x, 16) for x in line.split()[0].split("-"))
            if lo >= 1 << 47:  # [vsyscall]
                continue
            pm.seek(lo // 4096 * 8)
            for (e,) in struct.iter_unpack("<Q", pm.read((hi - lo) // 4096 * 8)):
                if e >> 63:  # present
                    pfns.add(e & ((1 << 55) - 1))
print(len(pfns) * 4)
PY
}

kill_tree() { # SIGKILL a process and all its descendants (collected first)
    local p
    for p in $(descendants "$1") "$1"; do
        kill -KILL "$p" 2>/dev/null || true
    done
}
cleanup() {
    local rc=$? r
    trap - EXIT INT TERM
    for r in "${ROOTS[@]}"; do kill_tree "$r"; done
    for r in "${ROOTS[@]}"; do wait "$r" 2>/dev/null || true; done
    rm -rf "$TMP"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ------------------------------------------------------------------------ configs
write_config() { # file, exec argv as TOML array
    cat >"$1" <<EOF
[control]
socket = "$TMP/$(basename "$1" .toml).sock"
[logging]
level = "info"
[[jobs]]
name = "app"
exec = $2
primary = true
EOF
}
write_config "$TMP/sleep.toml" "[\"$SLEEP_BIN\", \"1000\"]"
write_config "$TMP/true.toml" "[\"$TRUE_BIN\"]"
"$PILOTFISH" config check "$TMP/sleep.toml" >/dev/null || die "pilotfish rejects $TMP/sleep.toml"

# ------------------------------------------------------------------------ memory
declare -A MEM # MEM[case,rss|pss|uss|thr|procs]

# Sample the supervisor pids (space separated) once they have settled.
sample() {
    local key=$1 pids=$2 p rss=0 pss=0 uss=0 thr=0 v have_rollup=1
    sleep 0.3 # let lazy initialisation after the job start finish
    for p in $pids; do
        alive "$p" || die "$key: supervisor pid $p died"
        rss=$((rss + $(status_kb "$p" VmRSS)))
        thr=$((thr + $(status_kb "$p" Threads)))
        v=$(rollup_kb "$p" Pss)
        if [[ -n $v ]]; then
            pss=$((pss + v))
            uss=$((uss + $(rollup_kb "$p" Private)))
        else have_rollup=0; fi
        log "$key: pid $p ($(comm "$p")) VmRSS $(status_kb "$p" VmRSS) KiB, Pss ${v:-n/a} KiB, threads $(status_kb "$p" Threads)"
    done
    MEM[$key,rss]=$rss
    MEM[$key,union]=$(union_kb $pids)
    MEM[$key,thr]=$thr
    MEM[$key,procs]=$(wc -w <<<"$pids")
    if ((have_rollup)); then MEM[$key,pss]=$pss; MEM[$key,uss]=$uss; else MEM[$key,pss]=n/a; MEM[$key,uss]=n/a; fi
}

# Stop a supervisor (TERM to $2, the process that handles it), wait for root $1 to
# exit, then kill whatever is left of the tree.
stop() {
    local root=$1 target=$2 leftovers
    leftovers=$(descendants "$root")
    kill -TERM "$target" 2>/dev/null || true
    wait_gone "$root" 5 || log "pid $root did not stop within 5 s after SIGTERM; killing"
    for p in $leftovers "$root"; do kill -KILL "$p" 2>/dev/null || true; done
    wait "$root" 2>/dev/null || true
}

# Normal start: the supervisor is the process we start; the job is its child.
mem_normal() { # key, comm of supervisor, argv...
    local key=$1 name=$2 pid job
    shift 2
    "$@" >"$TMP/$key.out" 2>&1 &
    pid=$!
    ROOTS+=("$pid")
    job=$(wait_child "$pid" sleep) || { cat "$TMP/$key.out" >&2; die "$key: the sleep job never started"; }
    [[ $(comm "$pid") == "$name" ]] || die "$key: pid $pid is '$(comm "$pid")', not $name"
    sample "$key" "$pid"
    stop "$pid" "$pid"
}

# PID 1 of a new pid namespace: unshare -> ns init (tini / pilotfish keeper) -> ...
mem_pid1() { # key, comm of supervisor, levels of supervisors (1 tini, 2 pilotfish), argv...
    local key=$1 name=$2 levels=$3 us init p pids job i
    shift 3
    "${UNSHARE[@]}" --mount-proc "$@" >"$TMP/$key.out" 2>&1 &
    us=$!
    ROOTS+=("$us")
    init=$(wait_child "$us" "$name") || { cat "$TMP/$key.out" >&2; die "$key: no $name under unshare"; }
    pids=$init
    p=$init
    for ((i = 1; i < levels; i++)); do
        p=$(wait_child "$p" "$name") || { cat "$TMP/$key.out" >&2; die "$key: no $name worker under pid $init"; }
        pids="$pids $p"
    done
    job=$(wait_child "$p" sleep) || { cat "$TMP/$key.out" >&2; die "$key: the sleep job never started"; }
    sample "$key" "$pids"
    if ((levels > 1)); then
        MEM[$key,detail]=$(printf "keeper pid %s: VmRSS %s KiB, Pss %s KiB; worker pid %s: VmRSS %s KiB, Pss %s KiB" \
            "$init" "$(status_kb "$init" VmRSS)" "$(rollup_kb "$init" Pss)" "$p" "$(status_kb "$p" VmRSS)" "$(rollup_kb "$p" Pss)")
    fi
    stop "$us" "$init"
}

# File-backed pages (the binaries' code, libc) dominate the RSS of processes this
# small, and the kernel maps them around each fault only if they are in the page
# cache: read everything once so both peers start from a warm cache every run.
cat "$PILOTFISH" "$TINI" "$SLEEP_BIN" "$TRUE_BIN" >/dev/null
for lib in $(ldd "$PILOTFISH" "$TINI" 2>/dev/null | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' | sort -u); do
    cat "$lib" >/dev/null 2>&1 || true
done

log "load average before: $(cut -d' ' -f1-3 /proc/loadavg) (on $(nproc) CPUs)"
log "pilotfish: $PILOTFISH ($(stat -c %s "$PILOTFISH") bytes), tini: $TINI ($($TINI --version 2>&1 | head -1))"
mem_normal tini tini "$TINI" -s -- "$SLEEP_BIN" 1000
mem_normal pf pilotfish "$PILOTFISH" run --config "$TMP/sleep.toml"
mem_pid1 tini1 tini 1 "$TINI" -- "$SLEEP_BIN" 1000
mem_pid1 pf1 pilotfish 2 "$PILOTFISH" run --config "$TMP/sleep.toml"

# ------------------------------------------------------------------------ latency
declare -A LAT # LAT[name,mean|sd|median|runs] in ms

# Rough time of one run in ms (5 runs), to fit the run count into the budget.
probe_ms() {
    local t0 t1 i
    t0=$(date +%s%N)
    for ((i = 0; i < 5; i++)); do "$@" >/dev/null 2>&1 || die "'$*' failed"; done
    t1=$(date +%s%N)
    echo $(((t1 - t0) / 5000000 + 1))
}

# hyperfine one group of commands; names and commands alternate.
bench() {
    local group=$1 json=$TMP/$1.json args=() names=() n runs=$RUNS ms max=1
    shift
    while (($#)); do
        names+=("$1")
        args+=(-n "$1" "$2")
        ms=$(probe_ms $2)
        ((ms > max)) && max=$ms
        shift 2
    done
    n=$((BUDGET_S * 1000 / max))
    ((n < runs)) && runs=$n
    ((runs < 20)) && runs=20
    log "hyperfine $group: ${#names[@]} commands, $runs runs each (slowest ≈ ${max} ms/run)"
    # In the background and waited for, so that a signal to this script runs the
    # cleanup trap at once instead of after the whole hyperfine run.
    hyperfine -N --warmup "$WARMUP" --runs "$runs" --style none --export-json "$json" "${args[@]}" \
        >"$TMP/$group.hf" 2>&1 &
    ROOTS+=("$!")
    wait "$!" || { cat "$TMP/$group.hf" >&2; die "hyperfine $group failed"; }
    for n in "${names[@]}"; do
        read -r LAT[$n,mean] LAT[$n,sd] LAT[$n,median] LAT[$n,min] LAT[$n,runs] < <(jq -r --arg n "$n" \
            '.results[] | select(.command == $n) | [.mean*1000, .stddev*1000, .median*1000, .min*1000, (.times|length)] | map(tostring) | join(" ")' "$json")
    done
}

if ((LATENCY)); then
bench normal \
    true "$TRUE_BIN" \
    tini "$TINI -s -- $TRUE_BIN" \
    pf "$PILOTFISH run --config $TMP/true.toml"
if ((PID1_LATENCY)); then
    bench pid1 \
        ns_true "${UNSHARE[*]} $TRUE_BIN" \
        ns_tini "${UNSHARE[*]} $TINI -- $TRUE_BIN" \
        ns_pf "${UNSHARE[*]} $PILOTFISH run --config $TMP/true.toml"
fi
fi

# ------------------------------------------------------------------------ report
f2() { awk -v x="$1" 'BEGIN { printf "%.2f", x }'; }
f3() { awk -v x="$1" 'BEGIN { printf "%.3f", x }'; }
sub_() { awk -v a="$1" -v b="$2" -v d="${3:-3}" 'BEGIN { printf "%+.*f", d, a - b }'; }

echo
echo "== resident memory of the supervisor process(es) supervising 'sleep 1000' (KiB) =="
printf "%-26s %6s %8s %8s %8s %8s %8s\n" case procs VmRSS distinct Pss Private threads
for k in tini pf tini1 pf1; do
    case $k in
    tini) label="tini -s (normal)" ;;
    pf) label="pilotfish (normal)" ;;
    tini1) label="tini (PID 1)" ;;
    pf1) label="pilotfish (PID 1, k+w)" ;;
    esac
    printf "%-26s %6s %8s %8s %8s %8s %8s\n" "$label" "${MEM[$k,procs]}" "${MEM[$k,rss]}" "${MEM[$k,union]}" \
        "${MEM[$k,pss]}" "${MEM[$k,uss]}" "${MEM[$k,thr]}"
done
echo "  pilotfish PID 1: ${MEM[pf1,detail]}"
echo "  (VmRSS: summed over the processes; distinct: resident pages counted once across them)"

if ((LATENCY)); then
    echo
    echo "== exec -> trivial child done (ms; hyperfine -N, warmup $WARMUP) =="
    printf "%-34s %5s %16s %8s %8s %10s\n" command runs "mean ± sd" median min overhead
    row() { # name label baseline
        local n=$1
        printf "%-34s %5s %16s %8s %8s %10s\n" "$2" "${LAT[$n,runs]}" \
            "$(f3 "${LAT[$n,mean]}") ± $(f3 "${LAT[$n,sd]}")" "$(f3 "${LAT[$n,median]}")" "$(f3 "${LAT[$n,min]}")" \
            "$([[ $n == "$3" ]] && echo - || sub_ "${LAT[$n,mean]}" "${LAT[$3,mean]}")"
    }
    row true "true" true
    row tini "tini -s -- true" true
    row pf "pilotfish run (job true)" true
    if ((PID1_LATENCY)); then
        row ns_true "unshare -pf true" ns_true
        row ns_tini "unshare -pf tini -- true" ns_true
        row ns_pf "unshare -pf pilotfish run" ns_true
    fi
    echo "  (overhead: mean minus the mean of the bare command; load average after: $(cut -d' ' -f1-3 /proc/loadavg))"
fi

echo
echo "== summary: pilotfish vs tini (goal: within 4 MiB = 4096 KiB and 3 ms of tini) =="
printf "%-36s %10s %10s %10s %6s\n" metric tini pilotfish diff goal
verdict() { awk -v d="$1" -v g="$2" 'BEGIN { print (d <= g ? "met" : "MISSED") }'; }
mrow() { # label key
    local d=$((MEM[pf$2,rss] - MEM[tini$2,rss]))
    printf "%-36s %10s %10s %10s %6s\n" "$1" "${MEM[tini$2,rss]}" "${MEM[pf$2,rss]}" "$(printf %+d $d)" "$(verdict $d 4096)"
}
irow() { # label metric key: an informational memory row
    local t=${MEM[tini$3,$2]} p=${MEM[pf$3,$2]}
    [[ $t == n/a || $p == n/a ]] && return 0
    printf "%-36s %10s %10s %10s %6s\n" "$1" "$t" "$p" "$(printf %+d $((p - t)))" "(info)"
}
lrow() { # label tini-name pf-name baseline stat goal?
    local ot op
    ot=$(awk -v a="${LAT[$2,$5]}" -v b="${LAT[$4,$5]}" 'BEGIN { print a - b }')
    op=$(awk -v a="${LAT[$3,$5]}" -v b="${LAT[$4,$5]}" 'BEGIN { print a - b }')
    printf "%-36s %10s %10s %10s %6s\n" "$1" "$(f3 "$ot")" "$(f3 "$op")" "$(sub_ "$op" "$ot")" \
        "$([[ ${6:-} == goal ]] && verdict "$(awk -v a="$op" -v b="$ot" 'BEGIN { print a - b }')" 3 || echo "(info)")"
}
mrow "RSS KiB, normal" ""
mrow "RSS KiB, PID 1 (pf: keeper+worker)" 1
irow "PSS KiB, normal" pss ""
irow "PSS KiB, PID 1 (pf: keeper+worker)" pss 1
irow "distinct RSS KiB, PID 1" union 1
if ((LATENCY)); then
    lrow "added ms over true, normal (mean)" tini pf true mean goal
    lrow "  same, by median" tini pf true median
fi
if ((PID1_LATENCY)); then
    lrow "added ms over unshare, PID 1 (mean)" ns_tini ns_pf ns_true mean goal
    lrow "  same, by median" ns_tini ns_pf ns_true median
fi
exit 0
