"""Builders for the HAProxy tests: configs, services, servers, and a fake HAProxy for the planner.

The fake (`running_from`, `simulate`) models only what the planner relies on: which
servers HAProxy has, their address, weight and admin state, and the config file.
"""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from synapse.config import HAProxyConfig, ServiceConfig
from synapse.haproxy.configtext import parse_config
from synapse.haproxy.desired import DesiredConfig
from synapse.haproxy.ops import (
    AddServer,
    DelServer,
    EnableHealth,
    Op,
    SetAddr,
    SetState,
    SetWeight,
)
from synapse.haproxy.render import Renderer
from synapse.haproxy.running import (
    ADMIN_FORCED_DRAIN,
    ADMIN_FORCED_MAINT,
    CHECK_CONFIGURED,
    CHECK_ENABLED,
    RunningServer,
    RunningState,
)
from synapse.model import DesiredService, Server, server_name

TIMEOUT = 20.0  # generous: 2 shared cores; conditions are polled, never timed
DEFAULTS = [
    "mode http",
    "timeout connect 1s",
    "timeout client 10s",
    "timeout server 10s",
]


def haproxy_config(**overrides: Any) -> HAProxyConfig:
    data: dict[str, Any] = {
        "global": ["maxconn 256"],
        "defaults": list(DEFAULTS),
        "config_file_path": "/tmp/synapse-test/haproxy.cfg",
        "reload_command": "true",
        "server_order_seed": 7,
    }
    data.update(overrides)
    return HAProxyConfig.model_validate(data)


def managed_config(directory: Path, **overrides: Any) -> HAProxyConfig:
    """Managed mode with every file and socket in `directory` (keep it short: unix paths)."""
    overrides.setdefault("restart_interval", 0.5)
    return haproxy_config(
        config_file_path=str(directory / "haproxy.cfg"),
        reload_command=None,
        **{
            "global": ["maxconn 256", "hard-stop-after 5s"],
            # no stats page: its fixed default port would be shared by tests running at once;
            # nothing outlives a test
            "managed": {"stats": {"enabled": False}, "stop_on_exit": True},
            **overrides,
        },
    )


def service_config(**haproxy: Any) -> ServiceConfig:
    return ServiceConfig.model_validate({"discovery": {"method": "base"}, "haproxy": haproxy})


def server(host: str, port: int, name: str | None = "i", **fields: Any) -> Server:
    return Server(server_name(host, port, name), host, port, **fields)


def service(
    name: str, servers: list[Server], backend_only: bool = False, **haproxy: Any
) -> DesiredService:
    """A service with a frontend on port 3000 unless told otherwise (no `port` key at all
    with backend_only, as in Airbnb configs)."""
    if not backend_only:
        haproxy.setdefault("port", 3000)
    return DesiredService(name, service_config(**haproxy), list(servers))


def render(
    services: list[DesiredService], config: HAProxyConfig | None = None, **ids: Any
) -> DesiredConfig:
    return Renderer(config or haproxy_config()).render(services, ids.get("running_ids"))


def running_from(desired: DesiredConfig, **admin: int) -> RunningState:
    """HAProxy running exactly `desired` (admin={server name: admin_state} to vary states)."""
    backends: dict[str, dict[str, RunningServer]] = {p: {} for p in desired.parsed.proxies}
    for proxy, lines in desired.parsed.servers.items():
        spec = desired.backends.get(proxy)
        for name, line in lines.items():
            host, _, port = line.address.rpartition(":")
            weight = spec.servers[name].weight if spec and name in spec.servers else 1
            sid = spec.servers[name].id if spec and name in spec.servers else 1
            backends[proxy][name] = RunningServer(
                proxy, name, sid or 1, host.strip("[]"), int(port),
                admin_state=admin.get(name, 0), weight=weight, initial_weight=weight,
            )  # fmt: skip
    return RunningState(backends=backends, config=desired.parsed)


def with_servers(running: RunningState, backend: str, *servers: RunningServer) -> RunningState:
    assert running.backends is not None
    backends = {b: dict(s) for b, s in running.backends.items()}
    for srv in servers:
        backends[backend][srv.name] = srv
    return dataclasses.replace(running, backends=backends)


def simulate(running: RunningState, desired: DesiredConfig, ops: tuple[Op, ...]) -> RunningState:
    """Apply runtime ops as HAProxy 2.6 would, then write the candidate file (as the controller)."""
    assert running.backends is not None
    backends = {b: dict(s) for b, s in running.backends.items()}
    for op in ops:
        servers = backends[op.backend]
        current = servers.get(op.server)
        if isinstance(op, AddServer):
            assert current is None, f"{op} on an existing server"
            host, _, port = op.address.rpartition(":")
            tokens = op.options.split()
            weight = (
                int(tokens[len(tokens) - 1 - tokens[::-1].index("weight") + 1])
                if ("weight" in tokens)
                else 1
            )
            sid = int(tokens[tokens.index("id") + 1]) if "id" in tokens else 999
            checked = [t for t in tokens if t in ("check", "no-check")][-1:] == ["check"]
            servers[op.server] = RunningServer(
                op.backend, op.server, sid, host.strip("[]"), int(port),
                admin_state=ADMIN_FORCED_MAINT, weight=weight, initial_weight=weight,
                check_state=CHECK_CONFIGURED if checked else 0,  # (its checks disabled)
            )  # fmt: skip
            continue
        assert current is not None, f"{op} on a missing server"
        if isinstance(op, SetState):
            state = current.admin_state & ~(ADMIN_FORCED_MAINT | ADMIN_FORCED_DRAIN)
            state |= {"ready": 0, "maint": ADMIN_FORCED_MAINT, "drain": ADMIN_FORCED_DRAIN}[
                op.state
            ]
            servers[op.server] = dataclasses.replace(current, admin_state=state)
        elif isinstance(op, SetWeight):
            servers[op.server] = dataclasses.replace(current, weight=op.weight)
        elif isinstance(op, SetAddr):
            servers[op.server] = dataclasses.replace(current, addr=op.addr, port=op.port)
        elif isinstance(op, DelServer):
            assert current.forced_maint, "HAProxy deletes only servers in maintenance"
            del servers[op.server]
        elif isinstance(op, EnableHealth):
            enabled = current.check_state | CHECK_ENABLED
            servers[op.server] = dataclasses.replace(current, check_state=enabled)
        else:  # pragma: no cover - a new op type needs a model here
            raise AssertionError(f"unknown op {op!r}")
    return RunningState(backends=backends, config=parse_config(desired.text))


# --------------------------------------------------------------------------- traffic


def fetch_names(port: int, requests: int) -> list[str]:
    """GET / `requests` times through HAProxy; each answer is the backend's name (or 5xx)."""
    names = []
    for _ in range(requests):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as answer:
                names.append(answer.read().decode())
        except urllib.error.HTTPError as err:
            names.append(str(err.code))
    return names


async def answered_by(port: int, requests: int = 12, host: str | None = None) -> set[str]:
    if host is None:
        return set(await asyncio.to_thread(fetch_names, port, requests))
    return set(await asyncio.to_thread(fetch_with_host, port, host, requests))


def fetch_with_host(port: int, host: str, requests: int) -> list[str]:
    names = []
    for _ in range(requests):
        request = urllib.request.Request(f"http://127.0.0.1:{port}/", headers={"Host": host})
        try:
            with urllib.request.urlopen(request, timeout=5) as answer:
                names.append(answer.read().decode())
        except urllib.error.HTTPError as err:
            names.append(str(err.code))
    return names


async def eventually(check: Callable[[], Awaitable[Any]], what: str) -> Any:
    """Poll an async check until it returns something truthy (bounded by TIMEOUT)."""
    deadline = time.monotonic() + TIMEOUT
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = await check()
            if last:
                return last
        except OSError as err:  # HAProxy not listening yet
            last = err
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


async def serves(port: int, expected: set[str], host: str | None = None) -> None:
    """Wait until traffic through HAProxy reaches exactly the `expected` backends."""

    async def exact() -> bool:
        return await answered_by(port, 4 * max(len(expected), 1), host) == expected

    await eventually(exact, f"port {port} to be served by exactly {sorted(expected)}")


def haproxy_check(text: str, tmp_path: Path) -> None:
    """The real ``haproxy -c`` accepts ``text`` (HAProxy's own words otherwise)."""
    path = tmp_path / "candidate.cfg"
    path.write_text(text)
    proc = subprocess.run(
        [shutil.which("haproxy") or "haproxy", "-c", "-f", str(path)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr


def section(text: str, header: str) -> list[str]:
    """The lines of one section of a rendered config."""
    return list(parse_config(text).sections[header])


def web(port: int, backends: Any, **haproxy: Any) -> DesiredService:
    """The service "web" on ``port``, one server per test backend (its name answers)."""
    return service(
        "web", [server("127.0.0.1", b.port, b.name) for b in backends], port=port, **haproxy
    )


async def read_back(controller: Any) -> None:
    """Until synapse read (and planned) every backend of the HAProxy it just started."""
    view = controller._reader.view

    async def done() -> bool:
        return view.sweeps > 0 and not view.unread

    await eventually(done, "the servers read after the start")


async def show_proc(controller: Any) -> Any:
    """The master's ``show proc`` of a managed controller's HAProxy (a ProcInfo)."""
    from synapse.haproxy.runtime import MasterClient

    return await MasterClient(str(controller.settings.master_socket)).show_proc()


def metric(registry: Any, name: str, **labels: str) -> float:
    """A sample of a prometheus_client CollectorRegistry (0.0: none)."""
    return registry.get_sample_value(name, labels) or 0.0


def stand_in_managed(directory: Path) -> Any:
    """A ManagedHAProxy on minimal settings, for tests that drive stand-in processes."""
    from synapse.haproxy.managed import ManagedHAProxy
    from synapse.haproxy.settings import Settings

    settings = Settings(
        config_path=directory / "h.cfg", runtime_sockets=(), managed=True, binary="haproxy",
        master_socket=directory / "m.sock", pid_file=None, state_file=None,
        candidate_path=None, check_command=None, hold_listeners=False,
    )  # fmt: skip
    return ManagedHAProxy(settings, 1.0, 1.0)
