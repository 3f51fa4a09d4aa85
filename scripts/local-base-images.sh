#!/usr/bin/env bash
# Base images built from Debian packages, for a Docker engine that cannot pull from a container
# registry (an air-gapped host, or one that reaches only Debian's and Python's package indexes).
# Needs root, debootstrap and a running engine. Builds, from one debootstrap of Debian bookworm:
#
#   relrec-local/debian:bookworm       the minimal root file system, `docker import`ed
#   relrec-local/python:3.11-bookworm  + Debian's python3 (3.11), python3-venv, python-is-python3
#   relrec-local/redis:7.0-bookworm    + Debian's redis-server (7.0), run as `redis` in /data
#
# Then (docs/deploy.md, "Compose smoke test"):
#   BASE_IMAGE=relrec-local/python:3.11-bookworm REDIS_IMAGE=relrec-local/redis:7.0-bookworm \
#     scripts/compose-smoke.sh
#
# Environment: MIRROR (default http://deb.debian.org/debian), SUITE (default bookworm),
# DOCKER (default docker), EXTRA_CA_CERTS (a PEM .crt file, or a directory of them, that the
# python image trusts besides Debian's CAs: for a TLS-inspecting proxy between pip and PyPI, as
# /usr/local/share/ca-certificates on the machine docs/deploy.md ran on). Safe to run again: an
# image that exists is kept (FORCE=1 rebuilds).
set -euo pipefail

MIRROR=${MIRROR:-http://deb.debian.org/debian}
SUITE=${SUITE:-bookworm}
DOCKER=${DOCKER:-docker}
FORCE=${FORCE:-0}
EXTRA_CA_CERTS=${EXTRA_CA_CERTS:-}
DEBIAN_IMAGE=relrec-local/debian:$SUITE
PYTHON_IMAGE=relrec-local/python:3.11-$SUITE
REDIS_IMAGE=relrec-local/redis:7.0-$SUITE

log() { printf 'local-base-images: %s\n' "$*" >&2; }

have_image() {
    [ "$FORCE" = 0 ] && "$DOCKER" image inspect "$1" >/dev/null 2>&1
}

# debootstrap's minbase (apt, dpkg, bash, coreutils: about 150 MB), imported as one layer.
build_debian() {
    have_image "$DEBIAN_IMAGE" && { log "$DEBIAN_IMAGE exists"; return 0; }
    command -v debootstrap >/dev/null || { log "error: debootstrap not found (apt-get install debootstrap)"; exit 2; }
    local rootfs
    rootfs=$(mktemp -d "${TMPDIR:-/tmp}/relrec-rootfs.XXXXXX")
    # shellcheck disable=SC2064  # expand now: the trap must remove this directory
    trap "rm -rf '$rootfs'" EXIT
    log "debootstrap $SUITE from $MIRROR"
    debootstrap --variant=minbase "$SUITE" "$rootfs" "$MIRROR" >"$rootfs.log" 2>&1 \
        || { tail -n 20 "$rootfs.log" >&2; exit 1; }
    rm -f "$rootfs.log"
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    tar -C "$rootfs" --numeric-owner -c . | "$DOCKER" import \
        --change 'CMD ["bash"]' --change 'ENV LANG=C.UTF-8' - "$DEBIAN_IMAGE" >/dev/null
    rm -rf "$rootfs"
    trap - EXIT
    log "built $DEBIAN_IMAGE"
}

# The Dockerfile comes on stdin; the build context holds only ca/, the EXTRA_CA_CERTS (if any).
build_from_stdin() {
    local tag=$1 context
    have_image "$tag" && { log "$tag exists"; return 0; }
    context=$(mktemp -d "${TMPDIR:-/tmp}/relrec-context.XXXXXX")
    mkdir "$context/ca"
    if [ -d "$EXTRA_CA_CERTS" ]; then
        cp "$EXTRA_CA_CERTS"/*.crt "$context/ca/"
    elif [ -n "$EXTRA_CA_CERTS" ]; then
        cp "$EXTRA_CA_CERTS" "$context/ca/extra-ca.crt"
    fi
    touch "$context/ca/.keep"  # COPY needs a source even without extra CAs
    "$DOCKER" build --build-arg "DEBIAN_IMAGE=$DEBIAN_IMAGE" -t "$tag" -f - "$context" >&2 \
        || { rm -rf "$context"; exit 1; }
    rm -rf "$context"
    log "built $tag"
}

build_debian

build_from_stdin "$PYTHON_IMAGE" <<'EOF'
ARG DEBIAN_IMAGE
FROM ${DEBIAN_IMAGE}
# ca-certificates: pip reaches PyPI over HTTPS (and trusts the EXTRA_CA_CERTS in ca/)
COPY ca/ /usr/local/share/ca-certificates/
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv python-is-python3 \
        ca-certificates \
 && rm -rf /var/lib/apt/lists/* /usr/local/share/ca-certificates/.keep \
 && update-ca-certificates
CMD ["python3"]
EOF

build_from_stdin "$REDIS_IMAGE" <<'EOF'
ARG DEBIAN_IMAGE
FROM ${DEBIAN_IMAGE}
# The Debian package's server and redis-cli; /data for the AOF, as in the official image.
RUN apt-get update \
 && apt-get install -y --no-install-recommends redis-server \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir /data \
 && chown redis:redis /data
WORKDIR /data
USER redis
EXPOSE 6379
CMD ["redis-server", "--protected-mode", "no"]
EOF

"$DOCKER" image ls --format '{{.Repository}}:{{.Tag}}  {{.Size}}' 'relrec-local/*' >&2
