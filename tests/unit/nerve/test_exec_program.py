"""An exec check whose program cannot be started says nothing about the service (review s32:
a typo pushed fleet-wide by SIGHUP withdrew every instance within 2 s): no verdict, and a
load warning (``nerve -k``, start, SIGHUP) naming the file, the key and the program; never a
refusal. No process is started: the spawn is scripted, files are in tmp_path."""

from __future__ import annotations

import asyncio
import errno
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
import yaml
from nerve_fakes import Recorder

from nerve.checks.exec import ExecCheck
from nerve.config import load_nerve_config
from nerve.exec_program import program_problem, shell_program
from nerve.service import Service
from smartstack.logs import _FIELDS as FIELDS


@pytest.fixture
def bin_dir(tmp_path: Path) -> Path:
    """A directory with an executable ``ok``, a plain file ``text`` and a directory ``dir``."""
    directory = tmp_path / "bin"
    directory.mkdir()
    (directory / "ok").write_text("#!/bin/sh\nexit 0\n")
    (directory / "ok").chmod(0o755)
    (directory / "text").write_text("not a program\n")
    (directory / "text").chmod(0o644)
    (directory / "dir").mkdir()
    return directory


def test_a_list_command_whose_program_cannot_be_started(bin_dir: Path) -> None:
    assert program_problem([f"{bin_dir}/chek-disk", "-x"]) == f"{bin_dir}/chek-disk: no such file"
    assert program_problem([f"{bin_dir}/text"]) == f"{bin_dir}/text: not executable by nerve's user"
    assert program_problem([f"{bin_dir}/dir"]) == f"{bin_dir}/dir: a directory, not a program"
    assert program_problem([f"{bin_dir}/text/x"]) is not None  # a file as a directory
    missing = program_problem(["chek-disk"], path_env=str(bin_dir))
    assert missing == f"chek-disk: not found on PATH ({bin_dir})"


def test_a_list_command_that_can_start_or_cannot_be_judged(bin_dir: Path) -> None:
    assert program_problem([f"{bin_dir}/ok", "--flag"]) is None
    assert program_problem(["ok"], path_env=str(bin_dir)) is None
    assert program_problem(["bin/check"]) is None  # relative to nerve's working directory
    assert program_problem([]) is None


def test_a_shell_string_is_judged_by_a_plain_absolute_first_word_only(bin_dir: Path) -> None:
    assert program_problem(f"{bin_dir}/chek-disk --max 90") == f"{bin_dir}/chek-disk: no such file"
    text = f"{bin_dir}/text: not executable by nerve's user"
    assert program_problem(f"  {bin_dir}/text\n") == text
    assert program_problem(f"{bin_dir}/ok && {bin_dir}/missing") is None  # first word only
    # Not parsed: a bare word (a builtin is on no PATH), variables, assignments, quotes,
    # redirections, subshells, globs, comments.
    for command in [
        "chek-disk --max 90",
        "cd /srv && ./check",
        f"FOO=1 {bin_dir}/missing",
        f"$HOME{bin_dir}/missing",
        f"'{bin_dir}/missing'",
        f'"{bin_dir}/missing" -x',
        f"{bin_dir}/missing>/dev/null",
        f"({bin_dir}/missing)",
        f"{bin_dir}/miss*",
        f"#{bin_dir}/missing",
        "",
        "   ",
    ]:
        assert program_problem(command) is None, command
    assert shell_program("/usr/bin/env x") == "/usr/bin/env"


def _load(tmp_path: Path, checks: list[dict]) -> list[str]:
    base = {"host": "127.0.0.1", "port": 8080, "zk_hosts": ["127.0.0.1:2181"], "zk_path": "/w"}
    doc = {"instance_id": "a", "services": {"web": {**base, "checks": checks}}}
    path = tmp_path / "nerve.yaml"
    path.write_text(yaml.safe_dump(doc))
    return load_nerve_config(path)[1]


def test_the_load_warns_naming_the_file_the_key_and_the_program(tmp_path: Path) -> None:
    """Before: `nerve -k` said "ok (2 services)" with no word about /nonexistent/cmd."""
    checks = [
        {"type": "tcp"},
        {"type": "exec", "command": "/nonexistent/cmd", "timeout": 1},
        {"type": "exec", "command": ["/nonexistent/list", "-x"], "timeout": 1},
    ]
    warnings = _load(tmp_path, checks)
    then = "while it cannot be started the check gives no verdict (the registration stays as it is)"
    assert warnings == [
        f"{tmp_path}/nerve.yaml: services.web.checks[1].command: program /nonexistent/cmd: "
        f"no such file: {then}",
        f"{tmp_path}/nerve.yaml: services.web.checks[2].command: program /nonexistent/list: "
        f"no such file: {then}",
    ]


def test_valid_shell_loads_without_a_warning(tmp_path: Path) -> None:
    """Round 31 refused valid shell by parsing it: nothing past the first word is read."""
    commands = [
        "test $(df --output=pcent / | tail -1 | tr -dc 0-9) -lt 95",
        "cat <<EOF | grep -q ok\nok\nEOF",
        'x="$(echo "a b")"; test -n "$x"',
        "/bin/sh -c 'exit 0'",
        "if true; then exit 0; fi",
        ["true"],
    ]
    checks = [{"type": "exec", "command": c, "timeout": 1} for c in commands]
    assert _load(tmp_path, checks) == []


def no_program(exc: OSError) -> Callable[..., Awaitable[None]]:
    """A scripted ``loop.subprocess_exec`` whose spawn raises ``exc``."""

    async def spawn(*args: object, **kwargs: object) -> None:
        raise exc

    return spawn


@pytest.mark.parametrize(
    "exc",
    [
        FileNotFoundError(errno.ENOENT, "No such file or directory", "/usr/local/bin/chek-disk"),
        PermissionError(errno.EACCES, "Permission denied", "/usr/local/bin/chek-disk"),
        NotADirectoryError(errno.ENOTDIR, "Not a directory", "/usr/local/bin/chek-disk"),
    ],
)
async def test_a_program_that_cannot_be_started_keeps_the_registration(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, exc: OSError
) -> None:
    """fall 1: before, the spawn's FileNotFoundError was a failure and withdrew the service."""
    monkeypatch.setattr(asyncio.get_running_loop(), "subprocess_exec", no_program(exc))
    reporter = Recorder()
    reporter.holding = False
    check = ExecCheck("disk", ["/usr/local/bin/chek-disk"], 1.0)
    web = Service("web", [check], [(1, 1)], reporter, initially_up=True)
    web.state.registered = True
    with caplog.at_level(logging.INFO, logger="nerve.service"):
        for _ in range(3):
            await web.run_round()
    assert reporter.decisions == [] and web.state.registered
    warned = [vars(r).get(FIELDS, {}) for r in caplog.records if r.msg == "check_no_verdict"]
    assert len(warned) == 1 and "/usr/local/bin/chek-disk" in str(warned[0]["error"])
    assert web.no_verdict["disk"][0] == 3
    assert "cannot start the program" in web.no_verdict["disk"][1].detail


async def test_a_fresh_service_whose_program_is_missing_never_registers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    missing = FileNotFoundError(errno.ENOENT, "No such file or directory", "/nonexistent/cmd")
    monkeypatch.setattr(asyncio.get_running_loop(), "subprocess_exec", no_program(missing))
    reporter = Recorder()
    reporter.holding = False
    web = Service("web", [ExecCheck("exec", ["/nonexistent/cmd"], 1.0)], [(1, 1)], reporter)
    for _ in range(3):
        await web.run_round()
    assert reporter.decisions == [] and not web.state.registered
