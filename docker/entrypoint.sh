#!/bin/sh
# The image's entry point: the first argument picks the daemon.
#   nerve   [ARGS]  -> nerve -c ${NERVE_CONFIG:-/etc/smartstack/nerve.yaml} ARGS
#   synapse [ARGS]  -> synapse -c ${SYNAPSE_CONFIG:-/etc/smartstack/synapse.yaml} ARGS
# ARGS that contain -c/--config replace the default config path; anything else runs as given
# (e.g. `sh` for a look inside).
set -e

with_config() {
  # SIGHUP is a reload to the daemons, but until one has taken it over (its interpreter's
  # start, ~0.1 s) it ends the container: tini passes a `docker kill -s HUP` on at once.
  # Ignored here, it stays ignored across exec until then (the config is read after that).
  trap '' HUP
  daemon="$1"
  default="$2"
  shift 2
  for arg in "$@"; do
    case "$arg" in
      -c|--config|--config=*) exec "$daemon" "$@" ;;
    esac
  done
  exec "$daemon" -c "$default" "$@"
}

case "${1:-synapse}" in
  nerve)
    [ $# -gt 0 ] && shift
    with_config nerve "${NERVE_CONFIG:-/etc/smartstack/nerve.yaml}" "$@"
    ;;
  synapse)
    [ $# -gt 0 ] && shift
    with_config synapse "${SYNAPSE_CONFIG:-/etc/smartstack/synapse.yaml}" "$@"
    ;;
  *)
    exec "$@"
    ;;
esac
