#!/usr/bin/env bash
# Runs every test pilotfish has, after installing what the tests need.
# This is the README's test command and what .ci/run calls.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# System packages the tests use: unshare (PID-1 tests in a fresh pid
# namespace), dig (DNS tests), openssl (certificates made by the TLS tests),
# Debian's python3 with python-consul 0.7 and pytest (also the HTTPS check
# tests' server), venv for py-consul from PyPI, iptables (the partition
# in tests/cluster.rs; setpriv from util-linux gives each server its group),
# dnsmasq-base: the dnsmasq binary alone, no system service, which
# tests/autopilot_cluster.rs starts to answer one name with three servers,
# haproxy (real HAProxy for the template tests) with socat to talk to its
# admin socket by hand when one fails, wrk (tests/bench/template.py's load),
# busybox-static (the one binary of the image tests/registrator.rs imports
# into Docker: no image can be pulled), debootstrap (images/build.sh's
# base image), and chromium with chromium-driver and python3-selenium: the
# web UI's tests in a real headless browser (tests/python/test_ui.py).
# Installed with apt-get when missing and root.
need=()
for pkg in util-linux procps gcc curl openssl bind9-dnsutils python3 python3-venv python3-pytest python3-consul iptables dnsmasq-base haproxy socat wrk busybox-static debootstrap chromium chromium-driver python3-selenium; do
    dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
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

# Real Consul clients against `pilotfish agent --dev` (the binary cargo test built).
tests/python/run.sh

# The images and compose stacks on the local Docker engine: images/build.sh
# (static binary, debootstrap base, three images), then the stacks (skipped,
# and said so, where no Docker engine answers).
images/test.sh
