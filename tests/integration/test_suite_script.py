"""scripts/test-suite.sh (`make test`): tests/unit (and the demo), the servers half of the
real-server tiers and the rest run side by side, and a failure or an empty collection in any
run is the script's exit code.

A fake interpreter stands for `python -m pytest`: each run writes that it started, then waits
(at most 10 s) for the other two to have started too, so the three finish only if they run at
the same time; one after the other, the first waits its 10 s out and exits 99.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from testbed.process import wait_processes_gone

REPO = Path(__file__).resolve().parents[2]

FAKE_PYTEST = """#!/bin/sh
case " $* " in
  *" tests/unit "*) me=unit rc="$UNIT_RC" ;;
  *" tests/integration/nerve "*) me=servers rc="$SERVERS_RC" ;;
  *" tests/integration tests/system "*) me=rest rc="$REST_RC" ;;
  *) echo "one run: $*" >> "$RUNS/single"; exit "$REST_RC" ;;
esac
echo "$*" > "$RUNS/$me"
echo $$ > "$RUNS/$me.pid"
i=0
while [ ! -e "$RUNS/unit" ] || [ ! -e "$RUNS/servers" ] || [ ! -e "$RUNS/rest" ]; do
  i=$((i + 1)); [ "$i" -gt 100 ] && exit 99
  sleep 0.1
done
if [ "$rc" = hang ]; then
  while [ "$i" -lt 400 ]; do i=$((i + 1)); sleep 0.1; done; exit 98
fi
echo "$me run done"
exit "$rc"
"""


RUNS = ("unit", "servers", "rest")


def suite_env(tmp_path: Path, *codes: int | str) -> dict[str, str]:
    """The environment of a run with the fake interpreter; codes: the exit codes of the unit,
    servers and rest runs (rc "hang": it waits ~40 s)."""
    fake = tmp_path / "python"
    fake.write_text(FAKE_PYTEST)
    fake.chmod(0o755)
    runs = tmp_path / "runs"
    runs.mkdir(exist_ok=True)
    env = {**os.environ, "PYTHON": str(fake), "RUNS": str(runs), "TMPDIR": str(tmp_path)}
    return env | {f"{run.upper()}_RC": str(code) for run, code in zip(RUNS, codes, strict=True)}


def run_suite(
    tmp_path: Path, codes: tuple[int, int, int], *args: str
) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", "scripts/test-suite.sh", *args],
        cwd=REPO,
        env=suite_env(tmp_path, *codes),
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_three_runs_go_side_by_side_and_the_others_output_follows(tmp_path: Path) -> None:
    result = run_suite(tmp_path, (0, 0, 0))
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert out.index("rest run done") < out.index("servers run done"), out
    assert out.index("servers run done") < out.index("unit run done"), out
    unit, servers, rest = ((tmp_path / "runs" / run).read_text() for run in RUNS)
    for args in (unit, servers, rest):
        assert "-m not long" in args, args  # the long tests stay out of every run
    beside = [arg for arg in unit.split() if arg.startswith("tests/")]
    assert beside[0] == "tests/unit", unit
    halves = [arg for arg in servers.split() if arg.startswith("tests/")]
    assert "tests/integration/synapse_haproxy" in halves, servers
    for path in beside[1:] + halves:  # (nothing run beside the rest is run twice)
        assert f"--ignore={path}" in rest.split(), (path, rest)
    assert "--durations=25" in rest and "--durations=25" in servers


def basetemps(tmp_path: Path) -> list[Path]:
    """The --basetemp each of the three runs was given."""
    args = [(tmp_path / "runs" / run).read_text().split() for run in RUNS]
    return [Path(a.removeprefix("--basetemp=")) for run in args for a in run if "basetemp" in a]


def test_each_run_has_temporary_files_of_its_own_kept_when_one_failed(tmp_path: Path) -> None:
    # pytest keeps the three newest /tmp/pytest-of-$USER/pytest-N and deletes older ones as
    # it starts: a fourth pytest on the machine deleted the files of a run under way.
    assert run_suite(tmp_path, (0, 0, 0)).returncode == 0
    temps = basetemps(tmp_path)
    assert len(temps) == len(set(temps)) == 3, temps
    assert len({temp.parent for temp in temps}) == 1 and temps[0].parent.parent == tmp_path
    assert not temps[0].parent.exists()  # (all passed: removed)
    result = run_suite(tmp_path, (0, 1, 0))
    base = basetemps(tmp_path)[0].parent
    assert base.is_dir() and f"temporary files (logs of the failed tests): {base}" in result.stdout


@pytest.mark.parametrize(
    ("codes", "expected"),
    [
        ((1, 0, 0), 1),
        ((0, 1, 0), 1),
        ((0, 0, 1), 1),
        ((2, 0, 1), 1),
        ((0, 3, 4), 4),
        ((5, 0, 1), 5),
        ((0, 5, 1), 5),
        ((1, 0, 5), 5),
    ],
)
def test_any_run_failing_fails_the_suite(
    tmp_path: Path, codes: tuple[int, int, int], expected: int
) -> None:
    result = run_suite(tmp_path, codes)
    assert result.returncode == expected, result.stdout + result.stderr


def test_arguments_narrow_one_run_of_every_tier(tmp_path: Path) -> None:
    result = run_suite(tmp_path, (0, 0, 3), "-k", "zone and not dns")
    assert result.returncode == 3, result.stdout + result.stderr
    runs = (tmp_path / "runs" / "single").read_text().splitlines()
    assert runs == [
        "one run: -m pytest -q -p no:cacheprovider -m not long --durations=25 -k zone and not dns"
    ]


def test_ctrl_c_stops_the_runs_beside_too(tmp_path: Path) -> None:
    # Ctrl-C signals the foreground group, but a script's background job ignores SIGINT.
    # The script starts with a terminal's SIGINT (default): a run under a parent that
    # ignores it (CI started in the background: `cmd &` in a script) would pass that on,
    # and bash cannot trap a signal ignored at its entry.
    script = subprocess.Popen(
        ["bash", "scripts/test-suite.sh"],
        cwd=REPO,
        env=suite_env(tmp_path, "hang", "hang", "hang"),
        stdout=subprocess.DEVNULL,
        start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    runs = tmp_path / "runs"
    try:
        deadline = time.monotonic() + 20
        while not all((runs / f"{me}.pid").exists() for me in RUNS):
            assert time.monotonic() < deadline, "the three runs did not start"
            time.sleep(0.05)
        os.killpg(script.pid, signal.SIGINT)
        assert script.wait(timeout=10) == 130
        beside = [int((runs / f"{me}.pid").read_text()) for me in ("unit", "servers")]
        wait_processes_gone(beside, timeout=5)  # (TimeoutError: they outlived make test)
        assert not basetemps(tmp_path)[0].parent.exists()  # (stopped: nothing left behind)
    finally:
        if script.poll() is None:
            os.killpg(script.pid, signal.SIGKILL)
            script.wait()
