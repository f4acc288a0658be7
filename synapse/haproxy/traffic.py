"""Live traffic and state per server for the status page, from HAProxy's `show stat`.

The state is live (health checks included); /status's running state is read again only
when synapse changes a backend and in the background sweep (every 30 s).

A rate needs two samples: ``TrafficSampler`` keeps the previous counters and turns the
difference into per-second figures. Viewers of the page share the samples: a sample
younger than ``min_interval`` is answered from memory, so ten open pages cost HAProxy
no more than one. Counters that went down (a reload started a new worker) give no rate
for that interval instead of a negative one.
"""

from __future__ import annotations

import csv
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from synapse.haproxy.sockets import HAProxySocketError, unix_request

# `show stat <proxy> <type mask> <server>`: -1 = every proxy, 4 = servers only.
SHOW_SERVERS = "show stat -1 4 -1"
Key = tuple[str, str]  # (proxy, server)


@dataclass(frozen=True)
class Traffic:
    """One server's figures: rates per second (None until two samples), totals since start."""

    req_rate: float | None  # sessions (requests in http mode) per second
    err_rate: float | None  # 5xx responses per second
    total: int
    errors_5xx: int
    last_change: int | None  # seconds since its state last changed (HAProxy's lastchg)
    state: str | None = None  # HAProxy's live state (health checks): UP, DOWN, MAINT, ...


def parse_show_stat(text: str) -> dict[Key, dict[str, str]]:
    """`show stat` CSV (header line ``# pxname,svname,...``) -> {(proxy, server): fields}."""
    lines = text.splitlines()
    if not lines or not lines[0].startswith("# "):
        return {}
    reader = csv.DictReader([lines[0][2:], *lines[1:]])
    return {(row["pxname"], row["svname"]): row for row in reader if row.get("svname")}


def live_state(status: str | None) -> str | None:
    """`show stat`'s status as one word: "UP 1/3" (going down) is still UP, "no check" is
    UP, "MAINT (via web/a)" is MAINT."""
    if not status:
        return None
    if status == "no check":
        return "UP"
    return status.split()[0]


def _int(value: str | None) -> int:
    return int(value) if value and value.isdigit() else 0


@dataclass(frozen=True)
class _Sample:
    at: float
    counters: dict[Key, tuple[int, int, int | None, str | None]]  # stot, 5xx, lastchg, state


class TrafficSampler:
    """Samples `show stat` on one admin socket; ``traffic()`` -> {(proxy, server): Traffic}."""

    def __init__(
        self,
        path: str,
        min_interval: float = 1.0,
        request: Callable[[str, str, float], Awaitable[str]] = unix_request,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = path
        self.min_interval = min_interval
        self._request = request
        self._clock = clock
        self._previous: _Sample | None = None
        self._last: _Sample | None = None
        self._result: dict[Key, Traffic] = {}
        self.error: str | None = None

    async def traffic(self) -> dict[Key, Traffic]:
        now = self._clock()
        if self._last is not None and now - self._last.at < self.min_interval:
            return self._result
        try:
            text = await self._request(self.path, SHOW_SERVERS, 2.0)
        except (HAProxySocketError, OSError) as exc:  # no HAProxy (yet): no figures
            self.error = f"{type(exc).__name__}: {exc}"
            self._result = {}
            return self._result
        self.error = None
        rows = parse_show_stat(text)
        counters = {
            key: (
                _int(row.get("stot")),
                _int(row.get("hrsp_5xx")),
                _int(row["lastchg"]) if (row.get("lastchg") or "").isdigit() else None,
                live_state(row.get("status")),
            )
            for key, row in rows.items()
        }
        self._previous, self._last = self._last, _Sample(now, counters)
        self._result = self._rates(self._previous, self._last)
        return self._result

    @staticmethod
    def _rates(before: _Sample | None, after: _Sample) -> dict[Key, Traffic]:
        out = {}
        seconds = after.at - before.at if before is not None else 0.0
        for key, (total, errors, changed, state) in after.counters.items():
            old = before.counters.get(key) if before is not None else None
            req_rate = err_rate = None
            if old is not None and seconds > 0 and total >= old[0] and errors >= old[1]:
                req_rate = (total - old[0]) / seconds
                err_rate = (errors - old[1]) / seconds
            out[key] = Traffic(req_rate, err_rate, total, errors, changed, state)
        return out
