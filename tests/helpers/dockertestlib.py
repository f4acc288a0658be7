"""Helpers for the Docker tests: a report collector and polling on the event loop."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry

from synapse.config import ServiceConfig
from synapse.metrics import SynapseMetrics
from synapse.model import Report
from synapse.watchers.base import WatcherContext


async def eventually(predicate: Callable[[], Any], timeout: float = 20.0, what: str = "") -> Any:
    """Poll `predicate` on the loop (it may be a plain function) until truthy."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:  # e.g. a port not open yet
            last_error = exc
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what} ({last_error!r})")
        await asyncio.sleep(0.05)


class Collector:
    """Stands in for synapse's reconciler: keeps the reports a watcher sends."""

    def __init__(self) -> None:
        self.reports: list[Report] = []

    def __call__(self, report: Report) -> None:
        self.reports.append(report)

    def addresses(self) -> list[str] | None:
        if not self.reports:
            return None
        found = self.reports[-1].found
        return sorted(f"{f.registration.host}:{f.registration.port}" for f in found)

    def names(self) -> list[str]:
        return sorted(f.registration.name for f in self.reports[-1].found) if self.reports else []

    async def wait_addresses(self, wanted: list[str], timeout: float = 20.0) -> None:
        await eventually(lambda: self.addresses() == sorted(wanted), timeout,
                         f"addresses {sorted(wanted)} (last: {self.addresses()})")  # fmt: skip


def watcher_context() -> WatcherContext:
    return WatcherContext(
        loop=asyncio.get_running_loop(), metrics=SynapseMetrics(CollectorRegistry())
    )


def docker_service(**discovery: Any) -> ServiceConfig:
    return ServiceConfig.model_validate({"discovery": {"method": "docker", **discovery}})


# --------------------------------------------------------------------------- containers

HEALTHY_FILE_CHECK = {
    "test": ["CMD", "test", "-f", "/www/healthy"],
    "interval": 200_000_000,  # ns: 0.2 s
    "timeout": 1_000_000_000,
    "retries": 1,
}


def published_port(container: Any, port: int = 80) -> int:
    container.reload()
    return int(container.ports[f"{port}/tcp"][0]["HostPort"])


def http_get(port: int, host: str = "127.0.0.1", timeout: float = 2.0) -> str:
    """GET / over a plain socket; the body (busybox serves the container's NAME)."""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
        data = b""
        while chunk := sock.recv(4096):
            data += chunk
    head, _, body = data.decode(errors="replace").partition("\r\n\r\n")
    if " 200 " not in head.splitlines()[0]:
        raise OSError(f"unexpected answer: {head.splitlines()[0]}")
    return body.strip()


def wait_health(container: Any, status: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        container.reload()
        current = (container.attrs["State"].get("Health") or {}).get("Status")
        if current == status:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{container.name}: health {current!r}, wanted {status!r}")
        time.sleep(0.05)
