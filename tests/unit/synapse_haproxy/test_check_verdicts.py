"""A config check's verdict: "invalid" (refused until the desired state changes) only when the
checker answered no; a check that gave no verdict (timed out, killed, not run) is retried."""

from __future__ import annotations

from pathlib import Path

import pytest

from synapse.haproxy import commands
from synapse.haproxy.commands import CheckUnanswered, CommandResult, validate_config
from synapse.haproxy.settings import Settings


@pytest.mark.parametrize(
    ("code", "answered"),
    [(1, True), (2, True), (3, True), (125, True), (128, True), (255, True),
     (-1, False), (-9, False), (126, False), (127, False), (137, False), (143, False)],
)  # fmt: skip
def test_exit_codes_that_are_a_verdict(code, answered):
    assert CommandResult(code, "").answered is answered


def _settings(tmp_path: Path, check: str) -> Settings:
    candidate = tmp_path / "haproxy.cfg.candidate"
    return Settings(None, (), False, "haproxy", None, None, None, candidate, check)


def _checked_by(monkeypatch: pytest.MonkeyPatch, result: CommandResult) -> None:
    async def run(args: object, timeout: float) -> CommandResult:
        return result

    monkeypatch.setattr(commands, "run_command", run)


async def test_a_check_that_answers_no_gives_its_message(tmp_path, monkeypatch):
    settings = _settings(tmp_path, "check")
    _checked_by(monkeypatch, CommandResult(1, "[NOTICE] x\n[ALERT] bad line"))
    assert await validate_config(settings, "global\n", 5.0) == "[ALERT] bad line"
    _checked_by(monkeypatch, CommandResult(2, ""))
    assert await validate_config(settings, "global\n", 5.0) == "check exited with 2"


@pytest.mark.parametrize(
    ("result", "why"),
    [
        (CommandResult(-1, "'check' timed out after 0.5s"), "timed out after 0.5s"),
        (CommandResult(-9, ""), "exited with -9"),  # killed (the OOM killer, an operator)
        (CommandResult(137, ""), "exited with 137"),  # the same, as a shell reports it
        (CommandResult(127, "cannot run 'check': No such file"), "cannot run"),
        (CommandResult(126, "sh: 1: ./check: Permission denied"), "Permission denied"),
    ],
)
async def test_a_check_without_a_verdict_is_not_a_refusal(tmp_path, monkeypatch, result, why):
    _checked_by(monkeypatch, result)
    with pytest.raises(CheckUnanswered, match=why):
        await validate_config(_settings(tmp_path, "check"), "global\n", 0.5)


async def test_a_candidate_that_cannot_be_written_is_no_verdict(tmp_path):
    """A full or read-only disk: the check never ran (it escaped as an OSError: logged with
    a traceback at every retry, and not counted or shown as a failed reload)."""
    blocker = tmp_path / "conf"
    blocker.write_text("a file where the directory should be")
    settings = _settings(blocker, "check")  # (the candidate: under a file)
    with pytest.raises(CheckUnanswered, match=r"did not run: cannot write .*candidate"):
        await validate_config(settings, "global\n", 5.0)


async def test_haproxy_failing_without_an_alert_is_no_verdict(tmp_path, monkeypatch):
    """`haproxy -c` names what is wrong with a config in ALERT lines; an exit 1 without one
    is the binary failing (a wrapper whose exec fails, a missing library): not a refusal
    that would stand until the desired state changes."""
    settings = _settings(tmp_path, "")  # (no check_command: `haproxy -c`)
    _checked_by(monkeypatch, CommandResult(1, "haproxy: cannot open shared object file"))
    with pytest.raises(CheckUnanswered, match=r"without an \[ALERT\].*shared object"):
        await validate_config(settings, "global\n", 5.0)
    alert = "[NOTICE] (1) : haproxy version\n[ALERT] (1) : config : parsing [x:2] : unknown"
    _checked_by(monkeypatch, CommandResult(1, alert))
    assert await validate_config(settings, "global\n", 5.0) == alert.splitlines()[1]
    _checked_by(monkeypatch, CommandResult(1, ""))  # an operator's check: its exit decides
    assert await validate_config(_settings(tmp_path, "check"), "global\n", 5.0) == (
        "check exited with 1"
    )


@pytest.mark.parametrize(
    "error",
    [
        BlockingIOError(11, "Resource temporarily unavailable"),  # the fork, at pids.max
        RuntimeError("can't start new thread"),  # the fork passed, asyncio's waitpid thread not
    ],
)
async def test_a_check_that_cannot_start_at_the_pids_limit_is_no_verdict_naming_it(
    tmp_path, monkeypatch, error
):
    """Review s34: the thread's RuntimeError escaped the apply ("applying to HAProxy failed"
    with a traceback) instead of a retried check; neither named the limit."""

    async def spawn(*args: object, **kwargs: object) -> None:
        raise error

    monkeypatch.setattr(commands.asyncio, "create_subprocess_exec", spawn)
    with pytest.raises(CheckUnanswered, match=r"pids\.max, systemd TasksMax, ulimit -u\) is"):
        await validate_config(_settings(tmp_path, None), "global\n", 5.0)  # type: ignore[arg-type]


async def test_any_other_runtime_error_of_the_spawn_escapes(tmp_path, monkeypatch):
    async def spawn(*args: object, **kwargs: object) -> None:
        raise RuntimeError("asyncio.get_child_watcher() is not activated")

    monkeypatch.setattr(commands.asyncio, "create_subprocess_exec", spawn)
    with pytest.raises(RuntimeError, match="not activated"):
        await commands.run_command(["haproxy", "-c"], 5.0)
