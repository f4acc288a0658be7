"""Per-service isolation across a synapse restart, against a real HAProxy 2.6 (127.0.0.1 only).

A new synapse process has no last good block in memory: a service HAProxy runs whose new
block `haproxy -c` refuses keeps the block read back from the config file HAProxy runs,
instead of being left out of the reload that brings everyone else's change.
"""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path

from haproxy_helpers import managed_config, server, serves, service, web
from prometheus_client import CollectorRegistry

from synapse.contract import ApplyOutcome
from synapse.haproxy.configtext import parse_config
from synapse.haproxy.controller import HAProxyController
from synapse.haproxy.runtime import MasterClient
from synapse.haproxy.sockets import HAProxySocketError
from testbed.process import free_port

REFUSED = ["no-such-keyword 1"]  # `haproxy -c`: unknown keyword in 'backend' section
FROM_FILE = "last good config (from the running config file)"  # (/status)


def _services(ports, web_backends, api_backends, **api_keys):
    api = [server("127.0.0.1", b.port, b.name) for b in api_backends]
    return [web(ports[0], web_backends), service("api", api, port=ports[1], **api_keys)]


async def _run_first_synapse(sockdir: Path, ports, b1, b2, stop_on_exit: bool, **api_keys) -> None:
    """A synapse that runs web (on b1) and api (on b2), then stops, HAProxy left serving
    unless ``stop_on_exit``: its isolation's memory goes with it."""
    managed = {"stats": {"enabled": False}, "stop_on_exit": stop_on_exit}
    first = HAProxyController(managed_config(sockdir, managed=managed), CollectorRegistry())
    try:
        await first.start()
        result = await first.apply(_services(ports, [b1], [b2], **api_keys), "start")
        assert result.reload is ApplyOutcome.DONE
        await serves(ports[0], {"b1"})
        await serves(ports[1], {"b2"})
    finally:
        await first.stop()


async def _kill_leftover(sockdir: Path) -> None:
    """If the test failed before a controller took HAProxy over, it must not outlive it."""
    with contextlib.suppress(HAProxySocketError, OSError):
        info = await MasterClient(str(sockdir / "haproxy-master.sock")).show_proc()
        if info.master_pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(info.master_pid, signal.SIGKILL)


async def test_a_restart_with_a_refused_block_keeps_the_running_service(
    managed_factory, http_backend_factory, sockdir
):
    b1, b2, b3 = (http_backend_factory(f"b{i}") for i in (1, 2, 3))
    ports = (free_port(), free_port())
    adopted = False
    try:
        await _run_first_synapse(sockdir, ports, b1, b2, stop_on_exit=False)
        master = MasterClient(str(sockdir / "haproxy-master.sock"))
        before = await master.show_proc()

        registry = CollectorRegistry()
        controller = managed_factory(registry)  # the restarted synapse: adopts HAProxy
        await controller.start()
        adopted = True
        result = await controller.apply(_services(ports, [b1], [b2], backend=REFUSED), "restart")
        # Both still answer: api runs the block HAProxy ran, read back from its file.
        await serves(ports[0], {"b1"})
        await serves(ports[1], {"b2"})
        assert result.reload is ApplyOutcome.INVALID and "no-such-keyword" in (result.error or "")
        isolated = controller.status()["isolated_services"]["api"]
        assert isolated["running"] == FROM_FILE
        labels = {"service": "api"}
        assert registry.get_sample_value("synapse_service_config_isolated", labels) == 1
        assert (await master.show_proc()).reloads == before.reloads  # (nothing to reload)

        # Everyone else's change goes on (a reload), api on its running block, its
        # servers following discovery at runtime.
        changed = _services(ports, [b1, b3], [b3], backend=REFUSED)
        changed[0] = web(ports[0], [b1, b3], frontend=["timeout client 9s"])
        result = await controller.apply(changed, "web changed")
        assert result.reload in (ApplyOutcome.DONE, ApplyOutcome.PENDING), result
        await controller.flush()  # (a reload may wait for its slot: restart_interval)
        assert (await master.show_proc()).reloads == before.reloads + 1
        await serves(ports[0], {"b1", "b3"})
        await serves(ports[1], {"b3"})
        text = Path(controller.settings.config_path).read_text()
        assert "timeout client 9s" in text and "no-such-keyword" not in text

        # Its block fixed: the isolation ends and the new block runs.
        fixed = _services(ports, [b1, b3], [b2], backend=["retries 2"])
        fixed[0] = changed[0]
        result = await controller.apply(fixed, "fixed")
        assert result.reload in (ApplyOutcome.DONE, ApplyOutcome.PENDING), result
        await controller.flush()
        assert controller.status()["isolated_services"] == {}
        assert registry.get_sample_value("synapse_service_config_isolated", labels) == 0
        await serves(ports[1], {"b2"})
    finally:
        if not adopted:
            await _kill_leftover(sockdir)


async def test_an_upgrade_with_a_refused_block_keeps_a_backend_that_predates_a_new_line(
    managed_factory, http_backend_factory, sockdir, monkeypatch
):
    """The synapse before the upgrade wrote api's backend without `timeout queue` (older
    than ed5b06e, which adds it for servers with a maxconn); the new one, whose first apply
    has api's block refused, renders that line for the block read back. It was left out:
    api's port closed until its block was fixed (review s42: 2,801 of 6,307 requests)."""
    from synapse.haproxy import resilience

    b1, b2 = http_backend_factory("b1"), http_backend_factory("b2")
    ports = (free_port(), free_port())
    adopted = False
    try:
        with monkeypatch.context() as older:  # (the older version's render: no such line)
            older.setattr(resilience, "queue_lines", lambda *args: [])
            await _run_first_synapse(sockdir, ports, b1, b2, stop_on_exit=False, maxconn=4)
        text = Path(sockdir / "haproxy.cfg").read_text()
        assert "maxconn 4" in text and "timeout queue" not in text

        controller = managed_factory(CollectorRegistry())
        await controller.start()
        adopted = True
        result = await controller.apply(
            _services(ports, [b1], [b2], maxconn=4, backend=REFUSED), "upgraded"
        )
        await controller.flush()
        # (a reload: api's block read back gets the new line; the refusal is still said)
        assert result.reload in (ApplyOutcome.DONE, ApplyOutcome.PENDING), result
        assert "no-such-keyword" in (result.error or "")
        assert controller.status()["isolated_services"]["api"]["running"] == FROM_FILE
        await serves(ports[0], {"b1"})
        await serves(ports[1], {"b2"})
        backend = parse_config(Path(controller.settings.config_path).read_text())
        assert any(x.startswith("timeout queue") for x in backend.sections["backend api"])
    finally:
        if not adopted:
            await _kill_leftover(sockdir)


async def test_a_start_from_the_config_file_keeps_the_service_it_runs(
    managed_factory, http_backend_factory, sockdir
):
    """HAProxy stopped with the old synapse; the new one starts it from the file it left
    (the refused candidate cannot start it) and keeps api's block from that file."""
    b1, b2 = http_backend_factory("b1"), http_backend_factory("b2")
    ports = (free_port(), free_port())
    await _run_first_synapse(sockdir, ports, b1, b2, stop_on_exit=True)

    controller = managed_factory()
    await controller.start()
    result = await controller.apply(_services(ports, [b1], [b2], backend=REFUSED), "restart")
    await controller.flush()  # (whatever it left pending: done)
    await serves(ports[0], {"b1"})
    await serves(ports[1], {"b2"})
    assert result.reload is ApplyOutcome.INVALID, result
    assert controller.status()["isolated_services"]["api"]["running"] == FROM_FILE


async def test_a_refused_block_with_a_dns_named_server_is_read_back_too(
    managed_factory, http_backend_factory, sockdir, monkeypatch
):
    """api's server is a DNS name (its line: `init-addr <address>`, synapse's lookup).
    The isolation read it back with the servers before their address was looked up: the
    lines differed (`init-addr last,none`), api was never seeded and left out of HAProxy
    (review s33: not served after the restart)."""
    import socket

    from synapse.haproxy import dns_addresses

    real = socket.getaddrinfo

    def getaddrinfo(host, port, *args, **kwargs):
        return real("127.0.0.1" if host == "api.dns.test" else host, port, *args, **kwargs)

    monkeypatch.setattr(dns_addresses.socket, "getaddrinfo", getaddrinfo)
    b1, b2 = http_backend_factory("b1"), http_backend_factory("b2")
    ports = (free_port(), free_port())

    def services(**api_keys):
        api = [server("api.dns.test", b2.port, "b2")]
        return [web(ports[0], [b1]), service("api", api, port=ports[1], **api_keys)]

    managed = {"stats": {"enabled": False}, "stop_on_exit": False}
    first = HAProxyController(managed_config(sockdir, managed=managed), CollectorRegistry())
    adopted = False
    try:
        await first.start()
        assert (await first.apply(services(), "start")).reload is ApplyOutcome.DONE
        await serves(ports[1], {"b2"})
        await first.stop()
        controller = managed_factory(CollectorRegistry())
        await controller.start()
        adopted = True
        result = await controller.apply(services(backend=REFUSED), "restart")
        assert result.reload is ApplyOutcome.INVALID, result
        assert controller.status()["isolated_services"]["api"]["running"] == FROM_FILE
        await serves(ports[1], {"b2"})
    finally:
        if not adopted:
            await _kill_leftover(sockdir)
