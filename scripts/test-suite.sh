#!/usr/bin/env bash
# `make test`: tests/unit and the demo's system test in a second pytest process, beside the
# rest of tests/integration and tests/system.
#
# Why: the unit tier mostly waits on asyncio timers (167 s of wall time for 32 s of CPU on
# 2 cores, measured beside the integration tier), the demo on its act's pauses (51 s for
# 18 s of CPU), and the real-server tiers on the servers they started (the machine 40-60 %
# busy): side by side, these ~3.6 minutes leave the 30-minute budget. The second run's
# output is printed after the others'.
#
# Usage: test-suite.sh [PYTEST_ARGS...]. With arguments (`make test PYTEST_ARGS=...` to narrow
# the run) it is one pytest run of every tier, as before. PYTHON: the interpreter
# (default .venv/bin/python). Exit: pytest's code; with two runs, 5 (one collected nothing:
# the suite is broken) before any other, then the real-server run's, then the second run's.
set -uo pipefail

PYTHON="${PYTHON:-.venv/bin/python}"
PYTEST=("$PYTHON" -m pytest -q -p no:cacheprovider -m 'not long')
# The second run: tests that mostly wait and share no server or session fixture with the rest.
BESIDE=(tests/unit tests/system/test_demo.py)

if [ "$#" -gt 0 ]; then
  exec "${PYTEST[@]}" --durations=25 "$@"
fi

beside_log="$(mktemp)"
"${PYTEST[@]}" --durations=10 "${BESIDE[@]}" >"$beside_log" 2>&1 &
beside_pid=$!
# A background job of a script ignores Ctrl-C: stop it (SIGTERM: pytest unwinds) on any exit.
cleanup() {
  if [ -n "$beside_pid" ]; then kill "$beside_pid" 2>/dev/null && wait "$beside_pid"; fi
  rm -f "$beside_log"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

ignore=()
for path in "${BESIDE[@]}"; do
  if [ "$path" != tests/unit ]; then ignore+=("--ignore=$path"); fi
done
rest_rc=0
"${PYTEST[@]}" --durations=25 "${ignore[@]}" tests/integration tests/system || rest_rc=$?
beside_rc=0
wait "$beside_pid" || beside_rc=$?
beside_pid=""  # (reaped: its pid is no longer ours to signal)
echo "==== ${BESIDE[*]} (run beside the rest): exit code $beside_rc ===="
cat "$beside_log"

if [ "$beside_rc" -eq 5 ] || [ "$rest_rc" -eq 5 ]; then
  exit 5
fi
if [ "$rest_rc" -ne 0 ]; then
  exit "$rest_rc"
fi
exit "$beside_rc"
