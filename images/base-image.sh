#!/bin/sh
# The base image for machines that reach no container registry: Debian bookworm from its package mirror by
# debootstrap (minbase + python3, python3-venv, ca-certificates: Python 3.11, the project's minor version),
# imported into the Docker engine as NAME (default resume-ner-base:bookworm). The root file system is kept as
# a tarball in the cache, so a second machine run imports it in seconds. Needs root (debootstrap).
#   RESUME_NER_CACHE  the cache (default: $HOME/.cache/resume-ner)
#   DEBIAN_MIRROR     the mirror (default: the first URI of this machine's apt sources, else deb.debian.org)
set -eu
name=${1:-resume-ner-base:bookworm}
cache=${RESUME_NER_CACHE:-$HOME/.cache/resume-ner}
packages=python3,python3-venv,ca-certificates
tarball=$cache/base-bookworm-minbase.tar
if docker image inspect "$name" >/dev/null 2>&1; then
    echo "$name: already in the engine"; exit 0
fi
if [ ! -f "$tarball" ]; then
    command -v debootstrap >/dev/null || { echo "debootstrap not found: apt-get install debootstrap" >&2; exit 1; }
    mirror=${DEBIAN_MIRROR:-$(sed -n 's/^URIs: *\([^ ]*\).*/\1/p' /etc/apt/sources.list.d/*.sources 2>/dev/null \
        | grep -v security | head -n 1)}
    mirror=${mirror:-http://deb.debian.org/debian}
    rootfs=$(mktemp -d "$cache/rootfs.XXXXXX")
    trap 'rm -rf "$rootfs"' EXIT
    echo "debootstrap bookworm ($packages) from $mirror"
    debootstrap --variant=minbase --include=$packages bookworm "$rootfs" "$mirror" > "$rootfs.log" 2>&1 || {
        tail -20 "$rootfs.log" >&2; exit 1; }
    rm -rf "$rootfs/var/cache/apt/archives"/*.deb "$rootfs/var/lib/apt/lists"/*
    tar -C "$rootfs" -cf "$tarball.tmp" . && mv "$tarball.tmp" "$tarball"
    rm -f "$rootfs.log"
fi
docker import "$tarball" "$name" >/dev/null
echo "$name: imported from $tarball"
