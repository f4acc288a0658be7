"""The Airbnb way's reload_command when it misbehaves: exits 0 without reloading."""

from __future__ import annotations

import asyncio
from pathlib import Path

from haproxy_helpers import eventually, managed_config
from prometheus_client import CollectorRegistry
from test_controller_airbnb import airbnb_config, web

from synapse.contract import ApplyOutcome
from synapse.haproxy.controller import HAProxyController
from synapse.haproxy.render import Renderer
from synapse.haproxy.settings import binary_version, settings_for
from testbed.haproxy import HAProxyProcess
from testbed.process import free_port


def switchable_reload(directory: Path) -> str:
    """A reload_command that reloads through the master CLI while ``mode`` says ``ok``,
    exits 0 doing nothing on ``noop``, and sleeps ``slow`` seconds first on ``slow``."""
    script = directory / "reload.sh"
    script.write_text(
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
