"""The Airbnb way's reload_command when it misbehaves: slow, or exits 0 without reloading."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from haproxy_helpers import eventually, managed_config, serves
from prometheus_client import CollectorRegistry
from test_controller_airbnb import airbnb_config, web

from synapse.contract import ApplyOutcome
from synapse.haproxy.controller import HAProxyController
from synapse.haproxy.render import Renderer
from synapse.haproxy.runtime import RuntimeClient
from synapse.haproxy.settings import binary_version, settings_for
from testbed.haproxy import HAProxyProcess
from testbed.process import free_port


def switchable_reload(directory: Path) -> str:
    """A reload_command that reloads through the master CLI while ``mode`` says ``ok``,
    exits 0 doing nothing on ``noop``, and sleeps ``slow`` seconds first on ``slow``; each
    run adds a line to ``runs``."""
    script = directory / "reload.sh"
    script.write_text(
        f"echo run >> {directory}/runs\n"
        f'mode=$(cat {directory}/mode)\n[ "$mode" = noop ] && exit 0\n'
        f'[ "$mode" = slow ] && sleep "$(cat {directory}/slow)"\n'
        f"echo reload | socat -t5 stdio unix-connect:{directory}/master.sock\n"
    )
    (directory / "mode").write_text("ok")
    return f"sh {script}"


def running(config_path: Path, port: int, backends, haproxy_factory, sockdir) -> HAProxyProcess:
    """HAProxy running what a previous synapse wrote for ``backends``."""
    config = airbnb_config(sockdir)
    previous = Renderer(config, settings_for(config, binary_version(managed_config(sockdir))))
    config_path.write_text(previous.render([web(port, backends)]).text)
    return haproxy_factory(config_path=config_path, workdir=sockdir)


async def test_a_reload_command_that_exits_0_without_reloading_is_a_failed_reload(
    haproxy_factory, http_backend_factory, sockdir
):
    """No new worker within reload_timeout: a failed reload (counted, on /status, retried
    with the backoff), not a success whose config is then never tried again."""
    b1 = http_backend_factory("b1")
    port = free_port()
    config = airbnb_config(sockdir, reload_command=switchable_reload(sockdir), reload_timeout=1.5)
    proc = running(Path(config.config_file_path), port, [b1], haproxy_factory, sockdir)
    worker = proc.worker_pids()
    registry = CollectorRegistry()
    controller = HAProxyController(config, registry)
    await controller.start()
    try:
        assert (await controller.apply([web(port, [b1])], "t")).reload is ApplyOutcome.NONE
        (sockdir / "mode").write_text("noop")
        changed = [web(port, [b1], backend=["retries 2"])]
        result = await controller.apply(changed, "t")
        assert result.reload is ApplyOutcome.FAILED, result
        assert "no new HAProxy process answered" in (result.error or "")
        assert registry.get_sample_value("synapse_haproxy_reload_failures_total") == 1
        assert controller.status()["last_reload_error"] is not None
        assert controller.info.reloads == 0 and proc.worker_pids() == worker
        assert "retries 2" not in Path(config.config_file_path).read_text()  # (put back)

        (sockdir / "mode").write_text("ok")  # fixed: the retry (backoff 1 s) reloads

        async def reloaded() -> bool:
            return controller.info.reloads == 1

        await eventually(reloaded, "the retried reload")
        await eventually(lambda: asyncio.to_thread(new_worker, proc, worker), "a new worker")
        assert "retries 2" in Path(config.config_file_path).read_text()
        assert controller.health() == []
    finally:
        await controller.stop()


def new_worker(proc: HAProxyProcess, old: list[int]) -> bool:
    try:
        return proc.worker_pids() not in ([], old)
    except OSError:  # (the master re-executes itself on reload)
        return False


@pytest.mark.parametrize("ends", ["reloaded", "timed out"])
async def test_a_change_during_a_slow_reload_goes_in_at_once_and_stays_in(
    haproxy_factory, http_backend_factory, sockdir, ends
):
    """The reload command takes seconds (a loaded host, a slow init system) or hangs: the
    reconciler's round that reloads hands back as soon as a newer change is reported, and
    that change goes in at once (it waited for the whole reload before, and again at each
    retry). It stays: in the new worker (started from the state dumped before it), or,
    after the failure, in the file and in the retry's new worker."""
    b1, b2, b3 = (http_backend_factory(f"b{i}") for i in (1, 2, 3))
    port = free_port()
    timeout = 30 if ends == "reloaded" else 4
    reload = switchable_reload(sockdir)
    config = airbnb_config(sockdir, reload_command=reload, reload_timeout=timeout)
    proc = running(Path(config.config_file_path), port, [b1, b2], haproxy_factory, sockdir)
    worker = proc.worker_pids()
    controller = HAProxyController(config, CollectorRegistry())
    await controller.start()

    def unfinished() -> bool:  # the reload neither went through nor failed yet
        status = controller.status()
        return not status["reloads"] and status["last_reload_error"] is None

    try:
        assert (await controller.apply([web(port, [b1, b2])], "t")).reload is ApplyOutcome.NONE
        (sockdir / "slow").write_text("10" if ends == "reloaded" else "600")
        (sockdir / "mode").write_text("slow")
        structural = [web(port, [b1, b2], backend=["retries 2"])]
        reloading = asyncio.create_task(controller.apply(structural, "a new backend line"))
        runs = sockdir / "runs"
        await eventually(lambda: asyncio.to_thread(runs.exists), "the reload command to run")

        controller.change_gate.change()  # (the reconciler: a newer change was reported)
        assert (await reloading).reload is ApplyOutcome.PENDING and unfinished()
        b2.stop()  # b2 leaves (its backend stopped), b3 comes
        change = await controller.apply([web(port, [b1, b3], backend=["retries 2"])], "change")
        assert unfinished(), "the change went in while the reload command ran"
        assert change.ops and proc.worker_pids() == worker, change
        await serves(port, {"b1", "b3"})  # (the old worker)

        if ends == "timed out":
            await eventually(lambda: asyncio.to_thread(lambda: not unfinished()), "the failure")
            await serves(port, {"b1", "b3"})  # (the retry, a second later, undid nothing)

            def says_what_runs() -> bool:  # (written in the background)
                text = Path(config.config_file_path).read_text()
                return f":{b3.port}" in text and f":{b2.port}" not in text and "retries" not in text

            await eventually(lambda: asyncio.to_thread(says_what_runs), "the old worker's file")
            (sockdir / "mode").write_text("ok")  # the retry reloads
        await controller.flush()
        assert proc.worker_pids() not in ([], worker)
        await serves(port, {"b1", "b3"})  # the new worker
        state = (await RuntimeClient(str(proc.admin_socket)).running_backends())["web"]
        ready = {name for name, server in state.items() if server.label != "MAINT"}
        assert ready == {f"b1_127.0.0.1:{b1.port}", f"b3_127.0.0.1:{b3.port}"}, state
        text = Path(config.config_file_path).read_text()
        assert "retries 2" in text and f":{b3.port}" in text and f":{b2.port}" not in text
        assert controller.health() == []
    finally:
        await controller.stop()
