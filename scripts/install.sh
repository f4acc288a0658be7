#!/usr/bin/env bash
# Idempotent installer: Debian packages for the real servers, then the project venv.
# Quiet and fast when everything is already present; one line per action taken.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

# The real servers the tests, demo and benchmarks start on loopback, and the Docker parts
# (a private dockerd in tests/system/docker and `make compose-demo`, busybox test images, a debootstrap
# base image), openssl for the throw-away CA of the TLS tests, systemd for `systemd-analyze
# verify` of examples/systemd (nothing is started with it), chromium and its WebDriver for
# the status page's headless-browser test (tests/system/test_status_page.py), tini (our
# image's PID 1) for the container stop of tests/integration/synapse/test_synapse_stop_inflight.py.
PACKAGES=(haproxy zookeeper etcd-server etcd-client socat wrk
          docker.io docker-compose busybox-static debootstrap openssl systemd
          chromium chromium-driver tini)
# Units the packages would start and enable on a normal host: none may stay on default ports.
SERVICES=(haproxy.service etcd.service zookeeper.service
          docker.service docker.socket containerd.service)
VENV="$ROOT/.venv"

say() { echo "install: $*"; }
die() { echo "install: error: $*" >&2; exit 1; }

# shellcheck source=scripts/apt-lib.sh
source "$ROOT/scripts/apt-lib.sh"

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
  say "pip install -e '.[test,bench]'"
  # Build-backend chatter goes to a log; it is shown only when the install fails.
  if ! "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e '.[test,bench]' \
    >"$VENV/pip-install.log" 2>&1; then
    cat "$VENV/pip-install.log" >&2
    die "pip install failed (log above, also in $VENV/pip-install.log)"
  fi
  rm -f "$VENV"/.installed-*
  touch "$stamp"
}

# The editable install reads our modules from the tree: compile them as a wheel install
# would (a shell with PYTHONDONTWRITEBYTECODE never writes them), so daemons started from
# the tree (demo, bench, tests) do not compile ~200 modules at every start (~2.4 MB of a
# sidecar's RSS, and its start time). Up-to-date files are skipped.
compile_bytecode() {
  "$VENV/bin/python" -m compileall -q -j 0 smartstack synapse nerve >/dev/null ||
    die "compiling the project's modules failed (python -m compileall smartstack synapse nerve)"
}

install_packages
stop_services
ensure_venv
ensure_python_deps
compile_bytecode
