#!/usr/bin/env bash
# Builds pilotfish's images without a registry: the static binary, a minimal
# Debian base made with debootstrap and `docker import` (when the base is not
# there already), then every images/<name>/Dockerfile on top of it.
#
#   images/build.sh                 # pilotfish/consul, pilotfish/haproxy, pilotfish/app
#   BASE=debian:bookworm-slim images/build.sh   # on a machine that can pull
#   PROFILE=release images/build.sh # the binary's cargo profile [release]
#
# The Dockerfiles take the base as a build argument, so they build unchanged
# FROM the public debian:bookworm-slim.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

BASE=${BASE:-pilotfish/base:bookworm}
PROFILE=${PROFILE:-release}
TAG=${TAG:-latest}
TARGET=x86_64-unknown-linux-gnu

say() { echo "images/build.sh: $*" >&2; }

# 1. One static binary for every image (glibc with crt-static: no libc in
#    the image is needed, so the server image is FROM scratch).
say "building the static binary (cargo --profile $PROFILE)"
RUSTFLAGS="-C target-feature=+crt-static" cargo build --locked --profile "$PROFILE" --target "$TARGET" --bin pilotfish
dir=$PROFILE
[[ $PROFILE == dev ]] && dir=debug
mkdir -p images/bin
cp "target/$TARGET/$dir/pilotfish" images/bin/pilotfish
if ldd images/bin/pilotfish 2>&1 | grep -q '=>'; then
    say "images/bin/pilotfish is not static"; exit 1
fi
say "static binary: $(stat -c %s images/bin/pilotfish) bytes"

# 2. The base image: debootstrap from Debian's packages, then docker import.
if ! docker image inspect "$BASE" >/dev/null 2>&1; then
    if [[ $BASE != pilotfish/base:* ]]; then
        say "base image $BASE is missing; docker pull it first"; exit 1
    fi
    command -v debootstrap >/dev/null || { say "debootstrap is missing (apt-get install debootstrap)"; exit 1; }
    root=$(mktemp -d /var/tmp/pilotfish-base.XXXXXX)
    trap 'rm -rf "$root"' EXIT
    say "debootstrap bookworm into $root"
    debootstrap --variant=minbase bookworm "$root" "${DEBIAN_MIRROR:-http://deb.debian.org/debian}" >/dev/null
    # What bookworm-slim also drops: caches and docs.
    rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* "$root"/usr/share/doc/* "$root"/usr/share/man/*
    tar -C "$root" -c . | docker import - "$BASE" >/dev/null
    say "imported $BASE"
fi

# 3. The images.
for name in consul haproxy app; do
    say "building pilotfish/$name:$TAG"
    docker build -q --build-arg "BASE=$BASE" -f "images/$name/Dockerfile" -t "pilotfish/$name:$TAG" . >/dev/null
done
docker images --format '{{.Repository}}:{{.Tag}} {{.Size}}' 'pilotfish/*' >&2
