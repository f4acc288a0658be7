#!/usr/bin/env bash
# `make test`: three pytest processes side by side. tests/unit and the demo's system test in
# one; tests/integration/nerve, tests/integration/synapse_haproxy and tests/integration/bench
# in another (the "servers" half); the rest of tests/integration and tests/system in the third.
#
# Why: the tiers mostly wait. The unit tier waits on asyncio timers (167 s of wall time for
# 32 s of CPU on 2 cores, measured beside the integration tier), the demo on its act's pauses
# (51 s for 18 s of CPU), and the real-server tiers on the servers they started and on the
# timeouts and holds they test: one pytest run of them left the machine 80 % idle on average
# (vmstat, round 48) and took 27.1 min. Split in two halves of about equal length (each
# module keeps its module-scoped servers; no two halves share a session fixture), they take
# about half as long. The halves pick ports through the shared lock (testbed/ports.py) and each
# test's files live under its own temporary directory. The foreground run's output streams;
# the others' is printed after it.
#
# Usage: test-suite.sh [PYTEST_ARGS...]. With arguments (`make test PYTEST_ARGS=...` to narrow
# the run) it is one pytest run of every tier, as before. PYTHON: the interpreter
# (default .venv/bin/python). Exit: pytest's code; 5 (a run collected nothing: the suite is
# broken) before any other, then the foreground run's, then the servers half's, then the
# unit run's.
set -uo pipefail

PYTHON="${PYTHON:-.venv/bin/python}"
PYTEST=("$PYTHON" -m pytest -q -p no:cacheprovider -m 'not long')
# Tests that mostly wait and share no server or session fixture with the rest.
BESIDE=(tests/unit tests/system/test_demo.py)
# The servers half: directories with about half of the real-server tiers' time (round 48:
# 814 s of 1,620).
SERVERS=(tests/integration/nerve tests/integration/synapse_haproxy tests/integration/bench)

if [ "$#" -gt 0 ]; then
  exec "${PYTEST[@]}" --durations=25 "$@"
fi

beside_log="$(mktemp)"
servers_log="$(mktemp)"
# Each run's temporary directories under a base of its own: pytest keeps only the three
# newest /tmp/pytest-of-$USER/pytest-N and deletes older ones as a run starts, so a fourth
# pytest on the machine (a developer's, a second checkout's) deleted the files of one of
# these three while it ran (session 50: 25 tests failed with FileNotFoundError). Kept when
# a run failed (their logs), removed when all passed or the runs were stopped. Short: a
# test's unix sockets live under it (108 bytes for a path), no longer than under
# /tmp/pytest-of-root/pytest-N/.
temp_base="$(mktemp -d "${TMPDIR:-/tmp}/pt.XXXXXX")"
"${PYTEST[@]}" --basetemp="$temp_base/beside" --durations=10 "${BESIDE[@]}" \
  >"$beside_log" 2>&1 &
beside_pid=$!
"${PYTEST[@]}" --basetemp="$temp_base/servers" --durations=25 "${SERVERS[@]}" \
  >"$servers_log" 2>&1 &
servers_pid=$!
# A background job of a script ignores Ctrl-C: stop them (SIGTERM: pytest unwinds) on any exit.
keep_temp=""
cleanup() {
  local pid
  for pid in $beside_pid $servers_pid; do
    kill "$pid" 2>/dev/null && wait "$pid"
  done
  rm -f "$beside_log" "$servers_log"
  if [ -z "$keep_temp" ]; then rm -rf "$temp_base"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

ignore=()
for path in "${BESIDE[@]}" "${SERVERS[@]}"; do
  if [ "$path" != tests/unit ]; then ignore+=("--ignore=$path"); fi
done
rest_rc=0
"${PYTEST[@]}" --basetemp="$temp_base/rest" --durations=25 "${ignore[@]}" \
  tests/integration tests/system || rest_rc=$?
servers_rc=0
wait "$servers_pid" || servers_rc=$?
servers_pid=""  # (reaped: its pid is no longer ours to signal)
beside_rc=0
wait "$beside_pid" || beside_rc=$?
beside_pid=""
echo "==== ${SERVERS[*]} (run beside the rest): exit code $servers_rc ===="
cat "$servers_log"
echo "==== ${BESIDE[*]} (run beside the rest): exit code $beside_rc ===="
cat "$beside_log"

for rc in "$rest_rc" "$servers_rc" "$beside_rc"; do
  if [ "$rc" -eq 5 ]; then exit 5; fi
done
for rc in "$rest_rc" "$servers_rc" "$beside_rc"; do
  if [ "$rc" -ne 0 ]; then
    echo "the runs' temporary files (logs of the failed tests): $temp_base"
    keep_temp=1
    exit "$rc"
  fi
done
exit 0
