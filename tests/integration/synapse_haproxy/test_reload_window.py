"""Changes of servers while HAProxy reloads slowly go in beside the reload, at once, and
stay in (``synapse.haproxy.reload_window``), against a real HAProxy 2.6 (127.0.0.1 only):
a reload_command that hangs (the Airbnb way), a managed master that is stopped."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from haproxy_helpers import eventually, fetch_names, managed_config, serves
from haproxy_helpers import web as managed_web
from prometheus_client import CollectorRegistry
from stall_witness import beating, held_for
from test_controller_airbnb import airbnb_config, web

from synapse.apply_latency import ApplyLatency
from synapse.contract import ApplyOutcome
from synapse.haproxy.controller import HAProxyController
from synapse.haproxy.ops import Op
from synapse.haproxy.render import Renderer
from synapse.haproxy.runtime import RuntimeClient
from synapse.haproxy.settings import binary_version, settings_for
from synapse.metrics import SynapseMetrics
from testbed.haproxy import HAProxyProcess
from testbed.process import free_port

RETRIES = ["retries 2"]  # a new backend line: the change that needs a reload


def slow_reload(directory: Path) -> str:
    """A reload_command that sleeps ``slow`` seconds (a loaded host, a hung init system),
    keeps the server-state file as the new worker will read it (``state-at-reload``), then
    reloads through the master CLI; each run adds a line to ``runs``."""
    script = directory / "reload.sh"
    script.write_text(
        f"echo run >> {directory}/runs\n"
        f'sleep "$(cat {directory}/slow)"\n'
        f"cp {directory}/server-state {directory}/state-at-reload\n"
        f"echo reload | socat -t5 stdio unix-connect:{directory}/master.sock\n"
    )
    (directory / "slow").write_text("0")
    return f"sh {script}"


def slow_check(directory: Path) -> str:
    """A check_command that sleeps ``checkslow`` seconds (``began`` once it runs), then
    checks the candidate with ``haproxy -c``."""
    script = directory / "check.sh"
    script.write_text(
        f"echo run >> {directory}/began\n"
        f'sleep "$(cat {directory}/checkslow)"\n'
        f"haproxy -c -q -f {directory}/haproxy.cfg.candidate\n"
    )
    (directory / "checkslow").write_text("0")
    return f"sh {script}"


def new_worker(proc: HAProxyProcess, old: list[int]) -> bool:
    try:
        return proc.worker_pids() not in ([], old)
    except OSError:  # (the master re-executes itself on reload)
        return False


def admin_states(state_file: Path) -> dict[str, int]:
    """{server: srv_admin_state} of backend ``web`` in a server-state file."""
    rows = [line.split() for line in state_file.read_text().splitlines()[2:]]
    return {row[3]: int(row[6]) for row in rows if len(row) > 6 and row[1] == "web"}


def recorded(controller: HAProxyController) -> list[Op]:
    """Every runtime command the controller sends from now on."""
    sent: list[Op] = []
    real = controller._run_ops

    async def run_ops(ops: Sequence[Op]) -> tuple[list[str], list[str]]:
        sent.extend(ops)
        return await real(ops)

    controller._run_ops = run_ops  # type: ignore[method-assign]
    return sent


def put_back(ops: list[Op], port: int) -> list[str]:
    """The commands of ``ops`` that put the server on ``port`` back in service."""
    return [op.command for op in ops if f":{port}" in op.command and "ready" in op.command]


class Load:
    """A bounded load loop to 127.0.0.1 in a thread: every answer, failures included."""

    def __init__(self, port: int) -> None:
        self.answers: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(port,), daemon=True)

    def _run(self, port: int) -> None:
        while not self._stop.is_set() and len(self.answers) < 20_000:
            try:
                self.answers += fetch_names(port, 1)
            except OSError as err:
                self.answers.append(f"error: {err}")
            time.sleep(0.002)

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)


@pytest.fixture
def airbnb(haproxy_factory, http_backend_factory, sockdir) -> Iterator[Callable[..., Any]]:
    """(controller, HAProxy, b1, b2, b3, port): HAProxy runs b1 and b2, reloaded by a slow
    ``reload_command``."""
    b1, b2, b3 = (http_backend_factory(f"b{i}") for i in (1, 2, 3))
    port = free_port()

    def make(registry: CollectorRegistry | None = None, lines: Sequence[str] = (),
             **overrides: Any) -> tuple:  # fmt: skip
        config = airbnb_config(sockdir, reload_command=slow_reload(sockdir),
                               check_command=slow_check(sockdir), do_checks=True,
                               **overrides)  # fmt: skip
        path = Path(config.config_file_path)
        previous = Renderer(config, settings_for(config, binary_version(managed_config(sockdir))))
        path.write_text(previous.render([web(port, [b1, b2], backend=list(lines))]).text)
        proc = haproxy_factory(config_path=path, workdir=sockdir)
        controller = HAProxyController(config, registry or CollectorRegistry())
        return controller, proc, b1, b2, b3, port

    yield make  # (each test stops its controller)


async def handed_back(controller: HAProxyController, desired: list, began: Path) -> None:
    """``desired`` needs a reload; once its slow part has ``began`` (the file exists), the
    reconciler reports a newer change: the apply hands back (PENDING), the reload goes on."""
    reloading = asyncio.ensure_future(controller.apply(desired, "a new backend line"))
    await eventually(lambda: asyncio.to_thread(began.exists), "the slow part to begin")
    with beating() as held:
        changed = time.monotonic()
        controller.change_gate.change()  # (the reconciler: a newer change was reported)
        async with asyncio.timeout(10):  # (a bound: before, the whole reload, 8 s and more)
            assert (await reloading).reload is ApplyOutcome.PENDING
        took = time.monotonic() - changed
    assert took - held_for(held, changed, changed + took) < 1.0, (took, held)  # stall_witness


@pytest.mark.parametrize("ends", ["reloaded", "timed out", "checked slowly"])
async def test_a_change_during_a_hung_reload_command_goes_in_at_once_and_stays_in(
    airbnb, sockdir, ends
):
    """The reload command hangs (8 s, or past reload_timeout), or the config check takes
    8 s: a server withdrawn (its instance stopped) and another registered meanwhile go in
    at once (before: after the whole reload, 8 s and more), through the old worker; the new
    worker starts with them (the server-state file it reads was dumped after them), the
    latest desired state is what is planned after the reload (the withdrawn server is never
    put back), and after a failure the file and the retry's worker say the same."""
    timeout = 3 if ends == "timed out" else 30
    controller, proc, b1, b2, b3, port = airbnb(reload_timeout=timeout)
    worker = proc.worker_pids()
    await controller.start()

    def unfinished() -> bool:  # the reload neither went through nor failed yet
        status = controller.status()
        return not status["reloads"] and status["last_reload_error"] is None

    try:
        assert (await controller.apply([web(port, [b1, b2])], "t")).reload is ApplyOutcome.NONE
        slow = {"reloaded": "8", "timed out": "600", "checked slowly": "0"}[ends]
        (sockdir / "slow").write_text(slow)
        (sockdir / "checkslow").write_text("8" if ends == "checked slowly" else "0")
        (sockdir / "began").unlink(missing_ok=True)  # (an earlier check)
        began = sockdir / ("began" if ends == "checked slowly" else "runs")
        await handed_back(controller, [web(port, [b1, b2], backend=RETRIES)], began)
        assert unfinished()

        sent = recorded(controller)
        b2.stop()  # b2 leaves (its instance stopped), b3 comes
        with beating() as held:  # (a stall of this loaded process is no slow apply)
            began = time.monotonic()
            change = await controller.apply([web(port, [b1, b3], backend=RETRIES)], "change")
            took = time.monotonic() - began
        took -= held_for(held, began, began + took)
        # (and the reload still under way: 3 s from its start, ~0.3 s ago but for a stall)
        assert took < 1.0 and change.ops and unfinished(), (took, change)  # (before: 8 s, 3 s)
        assert proc.worker_pids() == worker
        await serves(port, {"b1", "b3"})  # the old worker, at once
        gone = f"b2_127.0.0.1:{b2.port}"
        assert admin_states(sockdir / "server-state")[gone] & 1  # (MAINT: for the new worker)

        with Load(port) as load:
            if ends == "timed out":
                await eventually(lambda: asyncio.to_thread(lambda: not unfinished()), "failure")

                def says_what_runs() -> bool:  # (the old worker's servers, its structure)
                    text = Path(controller.settings.config_path).read_text()
                    return (
                        f":{b3.port}" in text
                        and f":{b2.port}" not in text
                        and ("retries" not in text)
                    )

                await eventually(lambda: asyncio.to_thread(says_what_runs), "the file")
                (sockdir / "slow").write_text("0")  # the retry reloads
            await controller.flush()
            await eventually(lambda: asyncio.to_thread(new_worker, proc, worker), "new worker")
            await serves(port, {"b1", "b3"})  # the new worker
        assert set(load.answers) == {"b1", "b3"}, {a for a in load.answers if a[:1] != "b"}
        assert not put_back(sent, b2.port), sent  # (before the fix's design: b2 ready again)
        if ends != "timed out":  # the new worker read the file dumped after the change
            assert admin_states(sockdir / "state-at-reload")[gone] & 1
        state = (await RuntimeClient(str(proc.admin_socket)).running_backends())["web"]
        ready = {name for name, server in state.items() if server.label != "MAINT"}
        assert ready == {f"b1_127.0.0.1:{b1.port}", f"b3_127.0.0.1:{b3.port}"}, state
        text = Path(controller.settings.config_path).read_text()
        assert "retries 2" in text and f":{b3.port}" in text and f":{b2.port}" not in text
        assert controller.health() == []
    finally:
        await controller.stop()


async def test_a_change_beside_a_reload_is_timed_when_haproxy_answered_it(airbnb, sockdir):
    """synapse_watch_to_applied_seconds: a change that went in beside a reload (every command
    answered) is timed when HAProxy answered it, not when the reload it waited beside ended
    (before: the reload's whole duration, 3 s here; the review's cmd-slow: 7.3 s)."""
    controller, _, b1, b2, b3, port = airbnb(reload_timeout=30)
    registry = CollectorRegistry()  # (the reconciler's)
    latency = ApplyLatency(SynapseMetrics(registry))
    await controller.start()
    try:
        await controller.apply([web(port, [b1, b2])], "t")
        (sockdir / "slow").write_text("3")
        await handed_back(controller, [web(port, [b1, b2], backend=RETRIES)], sockdir / "runs")
        seen = time.monotonic()  # (the watch event)
        change = await controller.apply([web(port, [b1, b3], backend=RETRIES)], "change")
        assert change.reload is ApplyOutcome.PENDING and change.ops and not change.error
        latency.observe(controller, [seen], change)  # (as the reconciler does)
        await controller.flush()  # the reload ends
        if latency._flush_task is not None:  # (a PENDING change timed at the flush)
            await latency._flush_task
        assert controller.info.reloads == 1
        assert registry.get_sample_value("synapse_watch_to_applied_seconds_count") == 1
        took = registry.get_sample_value("synapse_watch_to_applied_seconds_sum")
        assert took is not None and took < 1.0, took
    finally:
        await controller.stop()


async def test_a_server_that_left_goes_into_maintenance_beside_a_reload_without_bridge(
    airbnb, sockdir
):
    """The latest desired state adds a server only a reload can add (`balance source`: no
    `add server`), so no bridge reaches it at runtime: the server that left still goes into
    maintenance at once (before: in service for the whole reload, 8 s), the one kept serves,
    and the reload's end brings the new one."""
    source = ["balance source"]
    controller, proc, b1, b2, b3, port = airbnb(reload_timeout=30, lines=source)
    await controller.start()
    try:
        await controller.apply([web(port, [b1, b2], backend=source)], "t")
        (sockdir / "slow").write_text("8")
        structural = [web(port, [b1, b2], backend=source + RETRIES)]
        await handed_back(controller, structural, sockdir / "runs")
        b2.stop()
        change = await controller.apply([web(port, [b1, b3], backend=source + RETRIES)], "c")
        assert change.reload is ApplyOutcome.PENDING and controller.info.reloads == 0
        state = (await RuntimeClient(str(proc.admin_socket)).running_backends())["web"]
        labels = {name.split("_")[0]: server.label for name, server in state.items()}
        assert labels["b2"] == "MAINT" and labels["b1"] != "MAINT", labels  # (before: b2 UP)
        assert "b3" not in labels  # (only the reload adds it)
        await serves(port, {"b1"})  # (it alone: b2, its instance stopped, is out)
        (sockdir / "slow").write_text("0")  # (the reload that adds b3 comes after this one)
        await controller.flush()
        state = (await RuntimeClient(str(proc.admin_socket)).running_backends())["web"]
        ready = {name.split("_")[0] for name, server in state.items() if server.label != "MAINT"}
        assert ready == {"b1", "b3"}, state  # (one source address: one server answers)
    finally:
        await controller.stop()


@pytest.mark.parametrize("by", ["a handed-back round", "the pending retry"])
async def test_a_stop_during_a_hung_reload_ends_at_once(airbnb, sockdir, by):
    """synapse stops while a reload waits for its hung command, started by a round that
    went on from it, or by the pending retry of a failed reload (nobody handed it back):
    the stop cancels it at once (before, for the retry: the stop waited for the rest of
    reload_timeout, longer than the daemon's bound for it), the command is killed with its
    process group, the previous file is back."""
    controller, _, b1, b2, _, port = airbnb(reload_timeout=60 if by[0] == "a" else 6)
    await controller.start()
    stopped = False
    try:
        await controller.apply([web(port, [b1, b2])], "t")
        before = Path(controller.settings.config_path).read_text()
        (sockdir / "slow").write_text("600")
        structural, runs = [web(port, [b1, b2], backend=RETRIES)], sockdir / "runs"
        if by == "a handed-back round":
            await handed_back(controller, structural, runs)
        else:
            assert (await controller.apply(structural, "a line")).reload is ApplyOutcome.FAILED

            def retried() -> bool:  # the retry's reload_command runs (and hangs)
                return len(runs.read_text().split()) == 2

            await eventually(lambda: asyncio.to_thread(retried), "the retry's command")
        with beating() as held:
            began = time.monotonic()
            await controller.stop()
            stopped = True
            took = time.monotonic() - began
        took -= held_for(held, began, began + took)  # (a stall of this loaded process)
        assert took < 2.0, took  # (before, the retry's: the rest of its 6 s)
        assert Path(controller.settings.config_path).read_text() == before
        assert await _gone_within(f"{sockdir}/reload.sh", 2.0)  # (it was killed)
    finally:
        if not stopped:
            await controller.stop()


async def _gone_within(script: str, seconds: float) -> bool:
    """Whether no process runs ``script`` within ``seconds``: a group SIGKILLed is gone a
    moment later, not at once, on a busy host (one run of 228 failed, round 33)."""
    deadline = time.monotonic() + seconds
    while _running(script):
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


def _running(script: str) -> bool:
    """Whether a process runs ``script`` (``sh <script>``)."""
    for entry in Path("/proc").iterdir():
        with contextlib.suppress(OSError):
            if entry.name.isdigit() and script.encode() in (entry / "cmdline").read_bytes():
                return True
    return False


async def test_a_handed_back_reload_that_raises_is_said_counted_and_retried(
    airbnb, sockdir, caplog
):
    """A bug in a reload whose round went on reaches no caller: it is logged, counted as a
    failed reload, and retried (the retry brings the change in)."""
    registry = CollectorRegistry()
    controller, _, b1, b2, _, port = airbnb(registry, reload_timeout=30)
    await controller.start()
    try:
        await controller.apply([web(port, [b1, b2])], "t")
        real = controller._installer.install

        async def install(*args: Any, **kwargs: Any) -> bool:
            controller._installer.install = real  # type: ignore[method-assign]  # (once)
            await real(*args, **kwargs)
            raise RuntimeError("a bug")

        controller._installer.install = install  # type: ignore[method-assign]
        (sockdir / "slow").write_text("2")
        await handed_back(controller, [web(port, [b1, b2], backend=RETRIES)], sockdir / "runs")
        with caplog.at_level(logging.ERROR, logger="synapse.haproxy"):
            (sockdir / "slow").write_text("0")

            async def said() -> bool:
                return any(r.exc_info and "a bug" in str(r.exc_info[1]) for r in caplog.records)

            await eventually(said, "the exception logged")
        assert controller.status()["last_reload_error"]["message"] == "RuntimeError: a bug"
        assert registry.get_sample_value("synapse_haproxy_reload_failures_total") == 1
        await controller.flush()  # the retry
        assert controller.status()["last_reload_error"] is None
        text = Path(controller.settings.config_path).read_text()
        assert "retries 2" in text
        await serves(port, {"b1", "b2"})
    finally:
        await controller.stop()


async def test_a_change_goes_in_while_a_reload_waits_for_a_stopped_master(
    managed_factory, http_backend_factory, sockdir
):
    """Managed: the master is stopped (SIGSTOP, a frozen cgroup) when a reload is needed; the
    worker serves on. A change of servers meanwhile goes in at once (before: the reload's
    whole timeout), the master reads the state file dumped after it when it runs again,
    and the latest desired state is what is planned after the reload."""
    b1, b2, b3 = (http_backend_factory(f"b{i}") for i in (1, 2, 3))
    port = free_port()
    controller = managed_factory(restart_interval=0, reload_timeout=10)
    await controller.apply([managed_web(port, [b1, b2])], "start")
    managed = controller._managed
    assert managed is not None and managed.master_pid is not None
    master = managed.master_pid
    os.kill(master, signal.SIGSTOP)
    try:
        structural = [managed_web(port, [b1, b2], backend=RETRIES)]
        reloading = asyncio.ensure_future(controller.apply(structural, "a new backend line"))
        await asyncio.sleep(0.3)  # (its config check, then the master's reload)
        controller.change_gate.change()
        async with asyncio.timeout(2):
            assert (await reloading).reload is ApplyOutcome.PENDING

        sent = recorded(controller)
        b2.stop()
        with beating() as held:  # (a stall of this loaded process is no slow apply)
            began = time.monotonic()
            change = await controller.apply([managed_web(port, [b1, b3], backend=RETRIES)], "c")
            took = time.monotonic() - began
        assert took - held_for(held, began, began + took) < 1.0 and change.ops, change  # (10 s)
        await serves(port, {"b1", "b3"})
        state_file = controller.settings.state_file
        assert state_file is not None
        gone = f"b2_127.0.0.1:{b2.port}"
        assert admin_states(state_file)[gone] & 1  # what the master reads when it runs
    finally:
        os.kill(master, signal.SIGCONT)
    with Load(port) as load:
        await controller.flush()
        await serves(port, {"b1", "b3"})
    assert set(load.answers) == {"b1", "b3"}, {a for a in load.answers if a[:1] != "b"}
    assert not put_back(sent, b2.port), sent
    assert controller.info.reloads == 1 and controller.status()["last_reload_error"] is None
    state = await controller.backend_servers("web")
    ready = {name for name, label in (state or {}).items() if label != "MAINT"}
    assert ready == {f"b1_127.0.0.1:{b1.port}", f"b3_127.0.0.1:{b3.port}"}, state
    assert controller.health() == []
