# shellcheck shell=bash
# Shared by the install scripts (source it after setting PACKAGES and, optionally, SERVICES):
# install the missing Debian packages without letting their init scripts start daemons, then
# stop and disable the system services they would run on a normal host.
# Callers define say() and die().

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
  [ -n "${missing// /}" ] || return 0
  command -v apt-get >/dev/null || die "missing packages ($missing) and no apt-get to install them"
  # Keep the packages' init scripts from starting daemons.
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
    apt-get install -y -qq --no-install-recommends $missing >/dev/null 2>&1
  remove_policy
  POLICY_OURS=0
}

# Stop and disable SERVICES (systemd units) if systemd runs and they are active or enabled.
stop_services() {
  command -v systemctl >/dev/null || return 0
  [ -d /run/systemd/system ] || return 0  # systemctl present but systemd not running
  local unit
  for unit in "${SERVICES[@]}"; do
    if systemctl is-active --quiet "$unit" 2>/dev/null; then
      say "stopping system unit $unit"
      as_root systemctl stop "$unit" || true
    fi
    if systemctl is-enabled --quiet "$unit" 2>/dev/null; then
      say "disabling system unit $unit"
      as_root systemctl disable "$unit" >/dev/null 2>&1 || true
    fi
  done
}
