#!/bin/sh
# The image's entry point: the first argument picks the daemon.
#   nerve   [ARGS]  -> nerve -c ${NERVE_CONFIG:-/etc/smartstack/nerve.yaml} ARGS
#   synapse [ARGS]  -> synapse -c ${SYNAPSE_CONFIG:-/etc/smartstack/synapse.yaml} ARGS
#   haproxy-wait [ARGS] -> HAProxy in its own container (synapse: managed.launch false): waits
#                          for the config synapse writes, then runs HAProxy as synapse would:
#                          haproxy -W -db -S <master socket>,mode,600 -f <config> ARGS
#                          (HAPROXY_CONFIG, default /var/lib/smartstack/haproxy.cfg;
#                          HAPROXY_MASTER_SOCKET, default <config without .cfg>-master.sock)
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

haproxy_wait() {
  config="${HAPROXY_CONFIG:-/var/lib/smartstack/haproxy.cfg}"
  socket="${HAPROXY_MASTER_SOCKET:-${config%.*}-master.sock}"
  # A restarted container starts from the last config synapse wrote (on the shared volume);
  # the first waits for synapse's first one.
  waited=0
  until [ -s "$config" ]; do
    [ $((waited % 100)) -eq 0 ] && echo "haproxy-wait: waiting for $config (synapse writes it)" >&2
    waited=$((waited + 1))
    sleep 0.1
  done
  # HAProxy runs as this shell's child, not in its place: synapse shares this container's PID
  # namespace, which ends (synapse killed with it) when its init exits, and tini exits with
  # its child. A crashed HAProxy is started again here from the last config (at once, then
  # backing off while it keeps crashing); synapse adopts the new master. The flags are managed
  # mode's (synapse/haproxy/managed.py): the master synapse adopts and reloads on its socket.
  # docker stop (SIGTERM, or the stop_signal SIGUSR1; SIGINT too): HAProxy serves on for
  # SMARTSTACK_STOP_DELAY seconds (default 5, synapse's managed.stop_delay in a container),
  # then gets SIGUSR1, its soft stop (what is in flight ends first). An app stopped at the
  # same time drains through it: passed on at once, every request it sent while it drained
  # was refused (248 of 248 in the 5 s after). Another stop signal during the delay ends it
  # early (the soft stop now); a SIGTERM or SIGINT after that is HAProxy's hard stop.
  stop_delay="${SMARTSTACK_STOP_DELAY:-5}"
  phase="" pid="" sleeper="" cut="" quick=0
  on_stop() {
    case "$phase" in
      "") phase=delay ;;
      delay) cut=1; [ -n "$sleeper" ] && kill "$sleeper" 2>/dev/null ;;
      soft) [ "$1" = USR1 ] || kill -TERM "$pid" 2>/dev/null ;;
    esac
  }
  trap 'on_stop TERM' TERM INT
  trap 'on_stop USR1' USR1
  while :; do
    began=$(date +%s)
    haproxy -W -db -S "$socket,mode,600" -f "$config" "$@" &
    pid=$!
    while :; do
      if [ "$phase" = delay ]; then
        echo "haproxy-wait: stopping: HAProxy serves on for ${stop_delay}s (SMARTSTACK_STOP_DELAY), then its soft stop" >&2
        sleep "$stop_delay" &
        sleeper=$!
        [ -n "$cut" ] || wait "$sleeper" 2>/dev/null || :
        kill "$sleeper" 2>/dev/null || :
        sleeper="" phase=soft
        kill -USR1 "$pid" 2>/dev/null || :
      fi
      status=0
      wait "$pid" || status=$?
      kill -0 "$pid" 2>/dev/null || break  # (a trapped signal ended the wait, not HAProxy)
    done
    [ -n "$phase" ] && exit "$status"
    if [ $(($(date +%s) - began)) -lt 10 ]; then quick=$((quick + 1)); else quick=0; fi
    delay=$(( quick > 1 ? (quick > 6 ? 30 : 1 << (quick - 2)) : 0 ))
    echo "haproxy-wait: HAProxy exited with status $status; started again in ${delay}s" >&2
    sleep "$delay"
    [ -n "$phase" ] && exit "$status"  # (stopped meanwhile)
  done
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
  haproxy-wait)
    [ $# -gt 0 ] && shift
    haproxy_wait "$@"
    ;;
  *)
    exec "$@"
    ;;
esac
