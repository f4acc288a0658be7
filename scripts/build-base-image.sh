#!/usr/bin/env bash
# Make the Debian bookworm base image smartstack-base:bookworm without any registry:
# debootstrap --variant=minbase from the Debian mirror this machine's apt already uses, trimmed
# like bookworm-slim, cached as .cache/base/bookworm-minbase.tar (debootstrap runs once), then
# `docker import`ed into the daemon named by DOCKER_HOST when that daemon lacks it.
# Usage: DOCKER_HOST=unix:///path/docker.sock scripts/build-base-image.sh [--rebuild]
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SUITE=bookworm
IMAGE="smartstack-base:$SUITE"
CACHE_DIR="$ROOT/.cache/base"
TARBALL="$CACHE_DIR/$SUITE-minbase.tar"
DOCKER="${DOCKER:-$(command -v /usr/bin/docker || command -v docker)}"

say() { echo "build-base-image: $*"; }
die() { echo "build-base-image: error: $*" >&2; exit 1; }

# The first Debian archive URI (not -security) in /etc/apt/sources.list and sources.list.d,
# one-line ("deb URI suite ...") or deb822 ("URIs: ...") format.
machine_mirror() {
  local files=(/etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources)
  local uri
  uri="$(cat "${files[@]}" 2>/dev/null | awk '
    /^[[:space:]]*#/ { next }
    $1 == "deb" { for (i = 2; i <= NF; i++) if ($i ~ /^https?:\/\//) { print $i; break } }
    $1 == "URIs:" { for (i = 2; i <= NF; i++) print $i }
  ' | grep -E '/debian/?$' | grep -v security | head -n1)"
  echo "${uri:-http://deb.debian.org/debian}"
}

make_tarball() {
  command -v debootstrap >/dev/null || die "debootstrap missing (run scripts/install.sh)"
  [ "$(id -u)" -eq 0 ] || die "debootstrap needs root"
  local mirror rootfs
  mirror="$(machine_mirror)"
  rootfs="$(mktemp -d "${TMPDIR:-/tmp}/smartstack-rootfs.XXXXXX")"
  # shellcheck disable=SC2064  # expand now: the path is fixed
  trap "rm -rf '$rootfs'" EXIT
  say "debootstrap --variant=minbase $SUITE from $mirror (once; cached in $TARBALL)"
  debootstrap --variant=minbase "$SUITE" "$rootfs" "$mirror" >"$CACHE_DIR/debootstrap.log" 2>&1 ||
    die "debootstrap failed; see $CACHE_DIR/debootstrap.log"
  # Trim like debian:bookworm-slim: no docs, man pages, locales or apt lists.
  rm -rf "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/locale/* \
    "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/log/*.log
  printf 'path-exclude /usr/share/doc/*\npath-include /usr/share/doc/*/copyright\npath-exclude /usr/share/man/*\npath-exclude /usr/share/locale/*\n' \
    >"$rootfs/etc/dpkg/dpkg.cfg.d/docker-slim"
  echo "deb $mirror $SUITE main" >"$rootfs/etc/apt/sources.list"
  tar --numeric-owner -C "$rootfs" -cf "$TARBALL.tmp" .
  mv "$TARBALL.tmp" "$TARBALL"
  rm -rf "$rootfs"
  trap - EXIT
}

mkdir -p "$CACHE_DIR"
if [ "${1:-}" = "--rebuild" ]; then rm -f "$TARBALL"; fi
[ -s "$TARBALL" ] || make_tarball

[ -n "${DOCKER_HOST:-}" ] || die "DOCKER_HOST is not set (point it at the private dockerd's socket)"
if "$DOCKER" image inspect "$IMAGE" >/dev/null 2>&1; then
  exit 0
fi
say "docker import $TARBALL as $IMAGE"
"$DOCKER" import --change 'CMD ["/bin/bash"]' "$TARBALL" "$IMAGE" >/dev/null
