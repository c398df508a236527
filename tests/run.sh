#!/usr/bin/env bash
# Runs every test pilotfish has, after installing what the tests need.
# This is the README's test command and what .ci/run calls.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# System tools the tests use: unshare (PID-1 tests in a fresh pid namespace),
# python3 (examples), procps. Installed with apt-get when missing and root.
need=()
command -v unshare >/dev/null || need+=(util-linux)
command -v python3 >/dev/null || need+=(python3)
command -v pgrep >/dev/null || need+=(procps)
command -v cc >/dev/null || need+=(gcc)
if ((${#need[@]})); then
    if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
        echo "tests/run.sh: installing ${need[*]}"
        apt-get update -q >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}" >/dev/null
    else
        echo "tests/run.sh: missing ${need[*]}; install them (as root: apt-get install ${need[*]})" >&2
        exit 1
    fi
fi

if ! command -v cargo >/dev/null; then
    echo "tests/run.sh: cargo not found; install a Rust toolchain (rustup.rs) first" >&2
    exit 1
fi

cargo test --all-targets --locked
