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
from synapse.haproxy import outside, reader, runtime
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


def running(haproxy_factory, sockdir: Path, desired: list, **overrides) -> tuple:
    """(config, HAProxy): a previous synapse wrote ``desired`` and HAProxy runs it (with
    what this HAProxy supports: synapse reads its version on the runtime socket)."""
    config = airbnb_config(sockdir, **overrides)
    version = binary_version(managed_config(sockdir))  # (the haproxy the harness runs)
    previous = Renderer(config, settings_for(config, version))
    Path(config.config_file_path).write_text(previous.render(desired).text)
    return config, haproxy_factory(config_path=Path(config.config_file_path), workdir=sockdir)


async def added_at_runtime(controller, port: int, pair: list) -> None:
    """synapse restarted over HAProxy, then a second server added at runtime."""
    await controller.apply([web(port, pair[:1])], "synapse restarted")
    added = await controller.apply([web(port, pair)], "membership")
    assert added.reload is ApplyOutcome.NONE and added.ops, added


def synapse_sessions(admin_socket: Path):
    """How many CLI connections synapse has on ``admin_socket`` (`show sess`: one line a
    CLI connection, the looker's own too)."""
    looker = RuntimeClient(str(admin_socket))

    async def count() -> int:
        sessions = await looker.execute("show sess")
        return sum("fe=GLOBAL" in line for line in sessions.splitlines()) - 1

    return count


async def test_airbnb_mode_runtime_changes_reload_and_restart(
    haproxy_factory, http_backend_factory, sockdir
):
    b1, b2, b3 = (http_backend_factory(f"b{i}") for i in (1, 2, 3))
    port = free_port()
    config, proc = running(haproxy_factory, sockdir, [web(port, [b1, b2])])
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


def admin_state(state_file: Path, prefix: str) -> str | None:
    """srv_admin_state of the server named ``prefix``... in an HAProxy server-state file."""
    for row in state_file.read_text().splitlines()[2:]:
        fields = row.split()
        if len(fields) > 6 and fields[3].startswith(prefix):
            return fields[6]
    return None


async def test_airbnb_mode_state_file_follows_runtime_changes(
    haproxy_factory, http_backend_factory, sockdir, monkeypatch
):
    """The server-state file follows runtime changes between reloads (Airbnb way, as in
    managed mode): an outside reload (`systemctl reload`) loads today's states, not those
    of synapse's last reload (a server that came back restored into maintenance)."""
    monkeypatch.setattr(reader, "FULL_READ_INTERVAL", 3600.0)  # the sweep and the watch
    monkeypatch.setattr(outside, "WATCH_INTERVAL", 3600.0)  # out: only the file can do it
    b1, b2 = http_backend_factory("b1"), http_backend_factory("b2")
    port = free_port()
    config, proc = running(haproxy_factory, sockdir, [web(port, [b1])])
    controller = HAProxyController(config, CollectorRegistry())
    await controller.start()
    try:
        await controller.apply([web(port, [b1])], "synapse restarted")
        switched = await controller.apply([web(port, [b2])], "blue/green")  # b1: maintenance
        assert switched.reload is ApplyOutcome.NONE and switched.ops
        await controller.apply([web(port, [b2], backend=["retries 2"])], "a reload")
        await controller.flush()
        assert controller.info.reloads == 1  # (its state file: b1 in maintenance)
        state_file = Path(config.server_state_file)
        assert admin_state(state_file, "b1_") == "1"
        rollback = await controller.apply([web(port, [b1], backend=["retries 2"])], "rollback")
        assert rollback.reload is ApplyOutcome.NONE and rollback.ops
        await serves(port, {"b1"})

        async def saved() -> bool:
            return admin_state(state_file, "b1_") == "0"

        await eventually(saved, "b1 ready in the state file")
        await controller.flush()  # (b1's line in the config file: seconds later anyway)
        await asyncio.to_thread(proc.reload)  # the operator's reload, seconds later
        await serves(port, {"b1"})
    finally:
        await controller.stop()


async def test_airbnb_mode_holds_no_connection_on_the_operators_socket_when_idle(
    haproxy_factory, http_backend_factory, sockdir, monkeypatch
):
    """The operator's admin socket is shared with their scrapers, and HAProxy serves 10
    connections at a time on all of them (`stats maxconn`): idle, synapse holds none
    there, as before the outside-reload watch and the state dumper came (each kept one
    of its own all the time: 8 monitoring clients then left synapse's changes waiting
    9-16 s). They share one connection, closed after each look."""
    monkeypatch.setattr(reader, "FULL_READ_INTERVAL", 3600.0)  # (the sweep: out of the way)
    port, pair = free_port(), [http_backend_factory(name) for name in ("b1", "b2")]
    config, proc = running(haproxy_factory, sockdir, [web(port, pair[:1])])
    controller = HAProxyController(config, CollectorRegistry())
    await controller.start()
    try:
        await added_at_runtime(controller, port, pair)
        synapses = synapse_sessions(proc.admin_socket)

        async def none_held() -> bool:  # (the apply's, kept: closed after KEEP_IDLE_S)
            return await synapses() == 0

        await eventually(none_held, "synapse's kept connections closed")
        held = []
        for _ in range(12):  # (the watch and the dumper look every second)
            held.append(await synapses())
            await asyncio.sleep(0.25)
        assert max(held) <= 1 and held.count(0) >= 8, held  # (before: 2 always)
    finally:
        await controller.stop()


async def test_a_kept_connection_is_closed_by_synapse_once_idle(
    haproxy_factory, http_backend_factory, sockdir
):
    """A connection kept between applies is closed by synapse after KEEP_IDLE_S, not left
    to HAProxy's `stats timeout` (here 60 s): HAProxy 2.6 at times only half-closed one
    at its timeout and kept the session without a timer, one of the operator's socket's
    10 connections held until synapse's next use (1 in 13 runs of the test above)."""
    admin = sockdir / "admin.sock"
    slow_timeout = [
        "maxconn 256",
        f"stats socket {admin} mode 600 level admin expose-fd listeners",
        "stats timeout 60s",
        "hard-stop-after 5s",
    ]
    port, pair = free_port(), [http_backend_factory(name) for name in ("b1", "b2")]
    config, proc = running(
        haproxy_factory, sockdir, [web(port, pair[:1])], **{"global": slow_timeout}
    )
    controller = HAProxyController(config, CollectorRegistry())
    await controller.start()
    try:
        await added_at_runtime(controller, port, pair)
        synapses = synapse_sessions(proc.admin_socket)

        async def none_held() -> bool:
            return await synapses() == 0

        await asyncio.wait_for(eventually(none_held, "synapse's kept connections closed"),
                               runtime.KEEP_IDLE_S + 5)  # fmt: skip
    finally:
        await controller.stop()
