#!/usr/bin/env bash
# Idempotent installer: Debian packages for the real servers, then the project venv.
# Quiet and fast when everything is already present; one line per action taken.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

PACKAGES=(haproxy zookeeper etcd-server etcd-client socat wrk)
# Services the packages' init scripts would start on default ports on a normal host.
SERVICES=(haproxy etcd zookeeper)
VENV="$ROOT/.venv"

say() { echo "install: $*"; }
die() { echo "install: error: $*" >&2; exit 1; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

missing_packages() {
  local pkg status
  for pkg in "${PACKAGES[@]}"; do
    status="$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)"
    [ "$status" = "install ok installed" ] || echo "$pkg"
  done
}

POLICY=/usr/sbin/policy-rc.d
POLICY_OURS=0
remove_policy() {
  if [ "$POLICY_OURS" -eq 1 ]; then as_root rm -f "$POLICY"; fi
}

install_packages() {
  local missing
  missing="$(missing_packages | tr '\n' ' ')"
  missing="${missing% }"
  [ -n "$missing" ] || return 0
  command -v apt-get >/dev/null || die "missing packages ($missing) and no apt-get to install them"
  # Keep the packages' init scripts from starting daemons on default ports.
  if [ ! -e "$POLICY" ]; then
    printf '#!/bin/sh\nexit 101\n' | as_root tee "$POLICY" >/dev/null
    as_root chmod 755 "$POLICY"
    POLICY_OURS=1
    trap remove_policy EXIT
  fi
  say "apt-get update"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
  say "apt-get install $missing"
  # shellcheck disable=SC2086  # word splitting of the package list is intended
  as_root env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends $missing >/dev/null
  remove_policy
  POLICY_OURS=0
  stop_services
}

stop_services() {
  command -v systemctl >/dev/null || return 0
  local svc
  for svc in "${SERVICES[@]}"; do
    if systemctl is-active --quiet "$svc" 2>/dev/null; then
      say "stopping and disabling system service $svc"
      as_root systemctl stop "$svc" || true
      as_root systemctl disable "$svc" >/dev/null 2>&1 || true
    fi
  done
}

python_ok() {
  "$1" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null
}

find_python() {
  local candidate
  for candidate in python3.13 python3.12 python3.11 python3; do
    if command -v "$candidate" >/dev/null && python_ok "$candidate"; then
      echo "$candidate"
      return 0
    fi
  done
  return 1
}

ensure_venv() {
  if [ -x "$VENV/bin/python" ]; then
    python_ok "$VENV/bin/python" ||
      die "$VENV uses Python $("$VENV/bin/python" -V 2>&1); 3.11+ needed (remove .venv and rerun)"
    return 0
  fi
  local py
  py="$(find_python)" || die "Python >= 3.11 not found (tried python3.13, 3.12, 3.11, python3)"
  say "creating virtualenv .venv with $("$py" -V 2>&1)"
  "$py" -m venv "$VENV"
}

ensure_python_deps() {
  local sha stamp
  sha="$(sha256sum pyproject.toml | cut -d' ' -f1)"
  stamp="$VENV/.installed-$sha"
  [ -e "$stamp" ] && return 0
  say "pip install -e '.[test]'"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e '.[test]'
  rm -f "$VENV"/.installed-*
  touch "$stamp"
}

install_packages
ensure_venv
ensure_python_deps
