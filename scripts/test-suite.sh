#!/usr/bin/env bash
# `make test`: tests/unit in a second pytest process beside tests/integration and tests/system.
#
# Why: the unit tier mostly waits on asyncio timers (167 s of wall time for 32 s of CPU on
# 2 cores, measured beside the integration tier), and the real-server tiers mostly wait on
# the servers they started (the machine 40-60 % busy): side by side, the unit tier's ~2.8
# minutes leave the 30-minute budget. The unit run's output is printed after the others'.
#
# Usage: test-suite.sh [PYTEST_ARGS...]. With arguments (`make test PYTEST_ARGS=...` to narrow
# the run) it is one pytest run of every tier, as before. PYTHON: the interpreter
# (default .venv/bin/python). Exit: pytest's code; with two runs, 5 (one collected nothing:
# the suite is broken) before any other, then the real-server run's, then the unit run's.
set -uo pipefail

PYTHON="${PYTHON:-.venv/bin/python}"
PYTEST=("$PYTHON" -m pytest -q -p no:cacheprovider -m 'not long')

if [ "$#" -gt 0 ]; then
  exec "${PYTEST[@]}" --durations=25 "$@"
fi

unit_log="$(mktemp)"
"${PYTEST[@]}" --durations=10 tests/unit >"$unit_log" 2>&1 &
unit_pid=$!
# A background job of a script ignores Ctrl-C: stop it (SIGTERM: pytest unwinds) on any exit.
cleanup() {
  if [ -n "$unit_pid" ]; then kill "$unit_pid" 2>/dev/null && wait "$unit_pid"; fi
  rm -f "$unit_log"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

rest_rc=0
"${PYTEST[@]}" --durations=25 tests/integration tests/system || rest_rc=$?
unit_rc=0
wait "$unit_pid" || unit_rc=$?
unit_pid=""  # (reaped: its pid is no longer ours to signal)
echo "==== tests/unit (run beside tests/integration and tests/system): exit code $unit_rc ===="
cat "$unit_log"

if [ "$unit_rc" -eq 5 ] || [ "$rest_rc" -eq 5 ]; then
  exit 5
fi
if [ "$rest_rc" -ne 0 ]; then
  exit "$rest_rc"
fi
exit "$unit_rc"
