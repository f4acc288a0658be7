"""A SIGHUP whose validating child cannot be started (the pids limit: fork fails with EAGAIN;
``ulimit -n``: its pipe fails with EMFILE). Review s34: the OSError escaped the reload, synapse
logged only asyncio's "Task exception was never retrieved" (nerve a traceback), nothing was
counted or shown on /status, and the SIGHUP was lost for good: a service it added was never
served, even once the limit was lifted. Now it is `config_not_checked` (naming the limit),
counted, and tried again every RETRY_S until the child runs."""

from __future__ import annotations

import asyncio
import errno
import logging
import os
from pathlib import Path
from typing import Any

import pytest

from nerve.config import NerveConfig
from nerve.daemon import NerveDaemon
from nerve.reload_fold import ReloadFold
from smartstack import spawn_limits
from smartstack.config_child import child_answer
from synapse.config import SynapseConfig
from synapse.daemon import SynapseDaemon


class Spawns:
    """asyncio.create_subprocess_exec failing with ``error`` while ``failing``."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, error: OSError) -> None:
        self.error, self.calls = error, 0
        monkeypatch.setattr(asyncio, "create_subprocess_exec", self)
        monkeypatch.setattr(spawn_limits, "RETRY_S", 0.05)

    async def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        raise self.error


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.parametrize(
    ("error", "limit"),
    [
        (BlockingIOError(errno.EAGAIN, "Resource temporarily unavailable"), "pids.max"),
        (OSError(errno.EMFILE, "Too many open files"), "LimitNOFILE"),
        (OSError(errno.ENOMEM, "Cannot allocate memory"), "memory limit"),
    ],
)
async def test_a_child_that_cannot_start_is_not_checked_and_names_the_limit(
    monkeypatch: pytest.MonkeyPatch, error: OSError, limit: str
) -> None:
    Spawns(monkeypatch, error)
    before = open_fds()
    for _ in range(20):  # (its answer pipe closed each time)
        with pytest.raises(spawn_limits.ChildNotStarted) as caught:
            await child_answer(lambda fd: ["true"], b"", "synapse")
    assert open_fds() == before
    line = caught.value.lines[0]
    assert line.startswith("the config was not checked: synapse could not start its")
    assert limit in line and "raise it" in line and "tried again every" in line


async def test_any_other_spawn_error_still_escapes(monkeypatch: pytest.MonkeyPatch) -> None:
    Spawns(monkeypatch, PermissionError(errno.EACCES, "Permission denied"))
    with pytest.raises(PermissionError):
        await child_answer(lambda fd: ["true"], b"", "nerve")


async def _until(done: Any, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not done():
        assert asyncio.get_running_loop().time() < deadline, "not in time"
        await asyncio.sleep(0.01)


async def test_synapse_counts_shows_and_retries_it_until_the_child_runs(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="synapse.daemon")
    spawns = Spawns(monkeypatch, BlockingIOError(errno.EAGAIN, "Resource temporarily unavailable"))
    config = SynapseConfig.model_validate({"services": {}, "admin": {"port": None}})
    daemon = SynapseDaemon(config, str(tmp_path / "synapse.yaml"))
    applied: list[SynapseConfig] = []

    async def load_config(refused: object = None) -> tuple[SynapseConfig, list[str]]:
        if spawns.calls < 2:  # the limit: the first reload and its first retry
            await child_answer(lambda fd: ["true"], b"", "synapse")
        return config, []

    async def apply_config(new: SynapseConfig) -> None:
        applied.append(new)

    daemon._load_config = load_config  # type: ignore[method-assign]
    daemon.apply_config = apply_config  # type: ignore[method-assign]
    daemon.reconciler = object()  # type: ignore[assignment]  # (started: SIGHUPs reload)
    assert await daemon.reload_config() is False  # before: BlockingIOError escaped
    assert daemon.last_config_reload is not None and not daemon.last_config_reload["ok"]
    assert "pids.max" in daemon.last_config_reload["error"]
    await _until(lambda: applied)  # retried by itself, no SIGHUP: applied once it could run
    assert spawns.calls == 2 and daemon.last_config_reload["ok"]
    reloads = daemon.metrics.config_reloads
    assert reloads.labels("not_checked")._value.get() == 2
    assert reloads.labels("ok")._value.get() == 1
    errors = [r for r in caplog.records if "config_not_checked" in r.getMessage()]
    assert [r.levelname for r in errors] == ["ERROR", "DEBUG"]  # once per streak at error
    await daemon.stop()


async def test_nerve_counts_and_retries_it_through_the_sighup_fold(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    spawns = Spawns(monkeypatch, BlockingIOError(errno.EAGAIN, "Resource temporarily unavailable"))
    config = NerveConfig.model_validate({"instance_id": "i", "services": {}})
    daemon = NerveDaemon(config, tmp_path / "nerve.yaml")
    fold = ReloadFold(daemon.reload_from_file)
    daemon.reload_retry.reload = fold.retry  # (as nerve.main wires it)
    reloaded: list[NerveConfig] = []

    async def load(path: Path) -> tuple[NerveConfig, list[str]]:
        if spawns.calls < 2:
            await child_answer(lambda fd: ["true"], b"", "nerve")
        return config, []

    async def reload(new: NerveConfig) -> bool:
        reloaded.append(new)
        return True

    daemon._load = load  # type: ignore[method-assign]
    daemon.reload = reload  # type: ignore[method-assign]
    fold.sighup()
    await _until(lambda: reloaded)  # before: "the SIGHUP reload failed", never again
    assert spawns.calls == 2 and fold.runs == 3
    assert daemon.metrics.reloads.labels("not_checked")._value.get() == 2
    assert daemon.metrics.reloads.labels("rejected")._value.get() == 0
