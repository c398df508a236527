#!/usr/bin/env bash
# The images and compose stacks on a real Docker engine: the README's test
# command runs this after the Rust and Python suites. Where no Docker engine
# answers, every check is skipped and counted as such.
#
#   images/test.sh                 # builds the images (images/build.sh) first
#   SKIP_BUILD=1 images/test.sh    # use the images already built
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

CHECKS=9
say() { echo "images/test.sh: $*" >&2; }
if ! docker info >/dev/null 2>&1; then
    say "SKIPPED $CHECKS checks: no Docker engine answers (docker info failed)"
    exit 0
fi
if docker-compose version >/dev/null 2>&1; then
    compose=(docker-compose)
elif docker compose version >/dev/null 2>&1; then
    compose=(docker compose)
else
    say "neither docker-compose nor docker compose is installed"; exit 1
fi

[[ ${SKIP_BUILD:-} == 1 ]] || images/build.sh

project=pftest$$
port=${HAPROXY_PORT:-$((20000 + $$ % 20000))}
export HAPROXY_PORT=$port
dc() { "${compose[@]}" -f images/compose.yml -p "$project" "$@"; }
cleanup() {
    local rc=$?
    if ((rc != 0)); then
        say "failed; the containers said:"
        dc logs --tail=40 >&2 || true
    fi
    dc down -v -t 5 >/dev/null 2>&1 || true
}
trap cleanup EXIT

now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }'; }
# eventually LIMIT_SECONDS WHAT COMMAND...
eventually() {
    local limit=$1 what=$2; shift 2
    local end=$(( $(date +%s) + limit ))
    until "$@" >/dev/null 2>&1; do
        if (( $(date +%s) > end )); then
            say "FAILED: $what (within ${limit}s)"; "$@" >&2 || true; return 1
        fi
        sleep 0.1
    done
}
containers() { docker ps -q --filter "label=com.docker.compose.project=$project" --filter "label=com.docker.compose.service=$1" | sort; }
hostnames() { for c in $(containers "$1"); do docker inspect -f '{{.Config.Hostname}}' "$c"; done | sort; }

# Every consul container sees two peers and the same leader.
cluster_formed() {
    local ids; ids=$(containers consul)
    [[ $(wc -w <<<"$ids") == 3 ]] || return 1
    local leaders=""
    for c in $ids; do
        local info; info=$(docker exec "$c" pilotfish info) || return 1
        grep -q 'num_peers = 2' <<<"$info" || return 1
        leaders+=$(grep -o 'leader_addr = .*' <<<"$info")$'\n'
    done
    [[ $(sort -u <<<"$leaders" | grep -c .) == 1 ]]
}
# Requests through HAProxy reach exactly the running app replicas.
routes_to_all_apps() {
    local want got=""
    want=$(hostnames app)
    for _ in $(seq $(( $(wc -l <<<"$want") * 6 ))); do
        got+=$(curl -fsS --max-time 2 "http://127.0.0.1:$port/app/")$'\n' || return 1
    done
    [[ $(sort -u <<<"$got" | grep .) == "$want" ]]
}

passed=0
check() { say "ok: $*"; passed=$((passed + 1)); }

start=$(now)
dc up -d >/dev/null 2>&1
eventually 60 "three servers with two peers each and one leader" cluster_formed
check "cluster of 3 formed $(since "$start") s after compose up"
eventually 60 "HAProxy routes /app/ to both app replicas" routes_to_all_apps
check "HAProxy routes to every app replica, $(since "$start") s after compose up"

scaled=$(now)
dc up -d --scale app=5 >/dev/null 2>&1
started=$(since "$scaled")
eventually 30 "HAProxy routes to all 5 replicas" routes_to_all_apps
check "scaled to 5: compose returned after ${started} s, all 5 routed after $(since "$scaled") s"

victim=$(containers consul | head -1)
docker kill "$victim" >/dev/null
other=$(containers consul | tail -1)
eventually 30 "the two other servers keep a leader" docker exec "$other" pilotfish check leader
eventually 10 "routing goes on with a server down" routes_to_all_apps
docker start "$victim" >/dev/null
eventually 60 "the killed server rejoins" cluster_formed
check "a killed server: the cluster kept serving, and it rejoined"

app=$(containers app | head -1)
gone=$(docker inspect -f '{{.Config.Hostname}}' "$app")
t=$(now)
docker stop -t 15 "$app" >/dev/null
stopped=$(since "$t")
code=$(docker inspect -f '{{.State.ExitCode}}' "$app")
[[ $code == 143 ]] || { say "FAILED: the app container exited with $code, not 143 (its primary job killed by SIGTERM)"; exit 1; }
check "docker stop of an app: exit status $code (the primary job's) after ${stopped} s"
docker rm "$app" >/dev/null
eventually 20 "HAProxy drops the stopped app ($gone)" routes_to_all_apps
check "the stopped app was deregistered and HAProxy dropped it"

members=$(docker exec "$other" pilotfish catalog services)
grep -q '^app$' <<<"$members" || { say "FAILED: app is not in the catalog: $members"; exit 1; }
check "the catalog lists the app service"

dc down -v -t 5 >/dev/null 2>&1

# The Registrator stack: plain containers registered from Docker's events.
project=pfreg$$
dc() { "${compose[@]}" -f images/compose.registrator.yml -p "$project" "$@"; }
routes_to_all_hellos() {
    local want got=""
    want=$(hostnames hello)
    [[ -n $want ]] || return 1
    for _ in $(seq $(( $(wc -l <<<"$want") * 6 ))); do
        got+=$(curl -fsS --max-time 2 "http://127.0.0.1:$port/hello/")$'\n' || return 1
    done
    [[ $(sort -u <<<"$got" | grep .) == "$want" ]]
}
start=$(now)
dc up -d --scale hello=3 >/dev/null 2>&1
eventually 60 "HAProxy routes /hello/ to the 3 registered containers" routes_to_all_hellos
check "registrator stack: 3 plain containers registered and routed $(since "$start") s after compose up"
hello=$(containers hello | head -1)
docker stop -t 5 "$hello" >/dev/null
docker rm "$hello" >/dev/null
eventually 20 "the stopped container is deregistered and dropped" routes_to_all_hellos
check "registrator stack: a stopped container left the catalog and HAProxy"

say "passed $passed of $CHECKS checks"
((passed == CHECKS))
