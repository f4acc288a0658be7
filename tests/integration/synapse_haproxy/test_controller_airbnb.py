"""The controller the Airbnb way: someone else runs HAProxy; reload_command, socket_file_path."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from haproxy_helpers import (
    DEFAULTS,
    eventually,
    haproxy_config,
    managed_config,
    server,
    serves,
    service,
)
from prometheus_client import CollectorRegistry

from synapse.contract import ApplyOutcome
from synapse.haproxy.controller import HAProxyController
from synapse.haproxy.render import Renderer
from synapse.haproxy.runtime import RuntimeClient
from synapse.haproxy.settings import binary_version, settings_for
from testbed.process import free_port


def airbnb_config(directory: Path, **overrides):
    admin = directory / "admin.sock"
    settings = {
        "config_file_path": str(directory / "haproxy.cfg"),
        "socket_file_path": str(admin),
        # The harness runs HAProxy master-worker; an Airbnb host would use its init system.
        "reload_command": f"echo reload | socat -t5 stdio unix-connect:{directory}/master.sock",
        "server_state_file": str(directory / "server-state"),
        "restart_interval": 0.2,
        "global": [
            "maxconn 256",
            f"stats socket {admin} mode 600 level admin expose-fd listeners",
            "hard-stop-after 5s",
        ],
    }
    return haproxy_config(**{**settings, **overrides})


def web(port, backends, **haproxy):
    haproxy.setdefault("server_options", "check inter 30s")
    return service(
        "web", [server("127.0.0.1", b.port, b.name) for b in backends], port=port, **haproxy
    )


async def test_airbnb_mode_runtime_changes_reload_and_restart(
    haproxy_factory, http_backend_factory, sockdir
):
    b1, b2, b3 = (http_backend_factory(f"b{i}") for i in (1, 2, 3))
    port = free_port()
    config = airbnb_config(sockdir)
    # A previous synapse wrote this config and HAProxy runs it (with what this HAProxy
    # supports: synapse reads its version on the runtime socket).
    version = binary_version(managed_config(sockdir))  # (the haproxy the harness runs)
    previous = Renderer(config, settings_for(config, version))
    Path(config.config_file_path).write_text(previous.render([web(port, [b1, b2])]).text)
    proc = haproxy_factory(config_path=Path(config.config_file_path), workdir=sockdir)
    worker = proc.worker_pids()

    controller = HAProxyController(config, CollectorRegistry())
    await controller.start()
    try:
        restart = await controller.apply([web(port, [b1, b2])], "synapse restarted")
        assert (
            restart.reload is ApplyOutcome.NONE and not restart.ops and not restart.config_written
        )
        await serves(port, {"b1", "b2"})

        for members in ([b1, b2, b3], [b2, b3], [b1, b2, b3]):  # brand-new, removed, back
            result = await controller.apply([web(port, members)], "membership")
            assert result.reload is ApplyOutcome.NONE and result.ops, result
            await serves(port, {b.name for b in members})
        assert controller.info.reloads == 0 and proc.worker_pids() == worker

        # A health state set at runtime survives a reload through the server-state file.
        await RuntimeClient(str(proc.admin_socket)).execute(
            f"set server web/b3_127.0.0.1:{b3.port} health down"
        )
        await serves(port, {"b1", "b2"})
        changed = await controller.apply([web(port, [b1, b2, b3], backend=["retries 2"])], "x")
        assert changed.reload in (ApplyOutcome.DONE, ApplyOutcome.PENDING)
        await controller.flush()
        assert controller.info.reloads == 1

        async def new_worker() -> bool:  # the master re-executes itself on reload
            try:
                return await asyncio.to_thread(proc.worker_pids) not in ([], worker)
            except OSError:
                return False

        await eventually(new_worker, "the reload's new worker")
        assert "retries 2" in Path(config.config_file_path).read_text()
        await serves(port, {"b1", "b2"})
        state = (await RuntimeClient(str(proc.admin_socket)).running_backends())["web"]
        assert state[f"b3_127.0.0.1:{b3.port}"].label == "DOWN"
    finally:
        await controller.stop()
    assert proc.alive  # not ours to stop


async def test_check_command_refusal_keeps_the_file(sockdir):
    """do_checks + check_command (Airbnb) decide validity; a refused config is never written."""
    candidate = sockdir / "candidate.cfg"
    config = airbnb_config(
        sockdir,
        do_checks=True,
        candidate_config_file_path=str(candidate),
        check_command=f"! grep -q forbidden {candidate}",
        reload_command="true",  # no HAProxy in this test
        do_socket=False,
    )
    registry = CollectorRegistry()
    controller = HAProxyController(config, registry)
    await controller.start()
    b = server("127.0.0.1", 9)
    refused = await controller.apply([service("web", [b], backend=["description forbidden"])], "t")
    assert refused.reload is ApplyOutcome.INVALID
    assert controller.status()["validation_error"]["candidate"] == str(candidate)
    assert not Path(config.config_file_path).exists()
    assert registry.get_sample_value("synapse_haproxy_validation_failures_total") == 1

    accepted = await controller.apply([service("web", [b], backend=["description fine"])], "t")
    assert accepted.reload is ApplyOutcome.DONE and accepted.error is None, accepted
    assert "description fine" in Path(config.config_file_path).read_text()
    assert controller.info.reloads == 1
    await controller.stop()


async def test_update_config_takes_new_lines_but_not_new_paths(sockdir):
    # No HAProxy here: do_socket false (every change reloads), reload_command does nothing.
    quiet = {"reload_command": "true", "do_socket": False, "restart_interval": 0}
    config = airbnb_config(sockdir, **quiet)
    controller = HAProxyController(config, CollectorRegistry())
    await controller.start()
    desired = [service("web", [server("127.0.0.1", 9)])]
    assert (await controller.apply(desired, "t")).reload is ApplyOutcome.DONE
    other = airbnb_config(sockdir, config_file_path=str(sockdir / "other.cfg"))
    with pytest.raises(ValueError, match="config_path"):
        await controller.update_config(other)

    assert (await controller.apply(desired, "t")).reload is ApplyOutcome.NONE  # nothing changed
    await controller.update_config(
        airbnb_config(sockdir, defaults=[*DEFAULTS, "retries 7"], **quiet)
    )
    assert (await controller.apply(desired, "t")).reload is ApplyOutcome.DONE
    assert "retries 7" in Path(config.config_file_path).read_text()
    await controller.stop()
