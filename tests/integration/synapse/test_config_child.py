"""The validating children of a daemon on plain models (synapse.config_child): the code
they run and the answer they give cannot come from elsewhere (real processes)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from smartstack.config_errors import ConfigError
from synapse.config_child import services_from_child
from synapse.config_load import ConfigSource

CONFIG = """
services:
  web:
    discovery: {method: zookeeper, hosts: "127.0.0.1:2181", path: /web}
    haproxy: {port: 3000}
"""


@pytest.fixture
def hostile_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A current directory with another synapse/ checkout, and a site hook that prints on
    stdout in every Python started (as a stray print during validation would)."""
    fake = tmp_path / "cwd" / "synapse"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    (fake / "config_child.py").write_text("raise SystemExit('the wrong checkout ran')\n")
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text("print('stray output on stdout')\n")
    monkeypatch.setenv("PYTHONPATH", str(site))
    monkeypatch.chdir(tmp_path / "cwd")
    return tmp_path


def test_a_reload_child_runs_this_code_and_answers_on_its_own_pipe(hostile_cwd: Path) -> None:
    path = hostile_cwd / "synapse.yaml"
    path.write_text(CONFIG)
    source = ConfigSource(str(path))
    source.plain = True  # validated by a child, as the daemon's reloads are
    config, _ = asyncio.run(source.reload())
    assert config.services["web"].haproxy.port == 3000
    path.write_text(CONFIG.replace("port:", "prot:"))
    with pytest.raises(ConfigError, match="did you mean 'port'"):
        asyncio.run(source.reload())
    services = services_from_child([{"discovery": {"method": "dns", "servers": ["a:1"]}}, {}])
    assert services[0].discovery.method == "dns" and isinstance(services[1], str)


def test_a_cancelled_reload_leaves_no_child(tmp_path: Path) -> None:
    path = tmp_path / "synapse.yaml"
    path.write_text(CONFIG)
    source = ConfigSource(str(path))
    source.plain = True
    seen: list[int] = []

    async def cancelled() -> None:
        original = asyncio.create_subprocess_exec

        async def spy(*args, **kwargs):
            proc = await original(*args, **kwargs)
            seen.append(proc.pid)
            return proc

        asyncio.create_subprocess_exec = spy  # type: ignore[assignment]
        try:
            task = asyncio.create_task(source.reload())
            while not seen:
                await asyncio.sleep(0.005)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        finally:
            asyncio.create_subprocess_exec = original  # type: ignore[assignment]

    asyncio.run(cancelled())
    assert not Path(f"/proc/{seen[0]}").exists()  # killed and reaped


def test_a_forked_child_says_when_its_answer_is_there(tmp_path: Path) -> None:
    """ready() (the parent's warm imports stop then) turns true once the child has answered,
    and the answer is then taken without waiting."""
    import time

    from synapse.config_child import ForkedValidation

    path = tmp_path / "synapse.yaml"
    path.write_text(CONFIG)
    child = ForkedValidation(str(path), None, False)
    deadline = time.monotonic() + 60
    while not child.ready():
        assert time.monotonic() < deadline, "the child never answered"
        time.sleep(0.01)
    answer = child.answer()
    assert answer["ok"] and list(answer["config"].services) == ["web"]


def test_ready_works_on_a_pipe_numbered_past_select_s_limit(tmp_path: Path) -> None:
    """A daemon with many sockets open gets pipes numbered 1024 and up: ready() must not
    use select() (ValueError there)."""
    import os
    import time

    from synapse.config_child import ForkedValidation

    path = tmp_path / "synapse.yaml"
    path.write_text(CONFIG)
    child = ForkedValidation(str(path), None, False)
    high = os.dup2(child.read_end, 1500)
    os.close(child.read_end)
    child.read_end = high
    deadline = time.monotonic() + 60
    while not child.ready():
        assert time.monotonic() < deadline, "the child never answered"
        time.sleep(0.01)
    assert child.answer()["ok"]


def test_the_first_sighup_after_a_start_sends_back_only_what_changed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The start's forked child answers with digests, so the first SIGHUP's child leaves
    the unchanged services out (before: no digests at start, every service came back whole
    and was compared on the event loop: 2,000 services blocked it 1.3-2.4 s)."""
    from synapse import config_load
    from synapse.config_child import ForkedValidation

    path = tmp_path / "synapse.yaml"
    other = "\n  api:\n    discovery: {method: zookeeper, hosts: '127.0.0.1:2181', path: /api}\n"
    path.write_text(CONFIG + other + "    haproxy: {port: 3001}\n")
    answer = ForkedValidation(str(path), None, False).answer()  # what first() takes
    assert answer["ok"] and set(answer["digests"]) == {"web", "api"}
    source = ConfigSource(str(path))
    source.plain = True
    first = source._kept(answer)
    sent: list[list[str]] = []  # the services each reload's child sent back whole
    real_answer = config_load.child_answer

    async def spy(*args: object) -> dict:
        reply = await real_answer(*args)  # type: ignore[arg-type]
        sent.append(sorted(n for n, s in reply["config"].services.items() if s is not None))
        return reply

    monkeypatch.setattr(config_load, "child_answer", spy)
    path.write_text(CONFIG + other + "    haproxy: {port: 3002}\n")
    config, _ = asyncio.run(source.reload())
    assert sent == [["api"]]  # web's digest was the start's: left out
    assert config.services["web"] is first.services["web"]
    assert config.services["api"].haproxy.port == 3002
