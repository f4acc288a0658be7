"""ZooKeeper hosts given by name, for kazoo's connect cycles: the addresses a name last
resolved to are kept for when it stops resolving, as ``tcp_connect`` does for etcd.

kazoo resolves every host at the start of each connect cycle and skips a name that does
not resolve; none resolving, it retries the cycle. So a resolver outage at the moment the
connection dropped (a ZooKeeper restart, a network blip) kept nerve from reconnecting to a
healthy ensemble until its session expired, its ephemeral registrations deleted with it
(measured: a 10 s session, gone 10.6 s after the drop; a silent resolver also held each
cycle 20 s per name, glibc's 5 s x 2 tries for A and AAAA).

Here a lookup runs on a daemon thread (at most one per name at a time) and is waited for
at most ``LOOKUP_WAIT_S`` when addresses are kept; it failing or not answering in time
gives those addresses (logged once per streak: ``endpoint_name_unresolved`` /
``endpoint_name_resolved``). A name never resolved is waited for as kazoo would.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from typing import Any

from smartstack.logs import FailureStreak
from smartstack.registry_address import is_ip_address as is_ip

log = logging.getLogger("smartstack.zookeeper")

LOOKUP_WAIT_S = 1.0
Found = list[tuple[str, int]]  # (address, port), as kazoo takes them

_lock = threading.Lock()
_kept: dict[tuple[str, int], Found] = {}
_inflight: dict[tuple[str, int], tuple[threading.Event, list[Found | Exception]]] = {}
_streaks: dict[tuple[str, int], FailureStreak] = {}


def addresses(host: str, port: int, deadline: float | None = None) -> Found:
    """``host``'s addresses for a connect attempt (see the module docstring); raises
    ``socket.gaierror`` only for a name never resolved. ``deadline`` (monotonic): the wait
    for kept addresses ends there, shared by the hosts of one cycle (``begin`` started
    their lookups together: 5 named hosts with a silent resolver waited 5 s in turn)."""
    key = (host, port)
    if is_ip(host):  # (an address: no lookup, no thread)
        return [(host, port)]
    kept, (done, outcome) = begin(host, port)
    wait = LOOKUP_WAIT_S if deadline is None else max(0.0, deadline - time.monotonic())
    if not done.wait(wait if kept else None):
        assert kept is not None
        _streak(key).failure(f"no answer in {LOOKUP_WAIT_S:g} s", host=host, port=port,
                             addresses=_text(kept))  # fmt: skip
        return kept
    result = outcome[0]
    if isinstance(result, Exception):
        if kept is None:
            raise result
        _streak(key).failure(f"{type(result).__name__}: {result}", host=host, port=port,
                             addresses=_text(kept))  # fmt: skip
        return kept
    if key in _streaks:
        _streaks[key].success(host=host, port=port, addresses=_text(result))
    return result


def begin(host: str, port: int) -> tuple[Found | None, tuple[threading.Event, list[Any]]]:
    """Start ``host``'s lookup unless one runs: the kept addresses and the lookup."""
    key = (host, port)
    with _lock:
        kept = _kept.get(key)
        lookup = _inflight.get(key)
        if lookup is None:
            lookup = _inflight[key] = (threading.Event(), [])
            threading.Thread(target=_lookup, args=(key, lookup), daemon=True,
                             name=f"zk-resolve-{host}").start()  # fmt: skip
    return kept, lookup


def begin_all(hosts: list[tuple[str, int]]) -> None:
    """Start the lookups of a connect cycle's named hosts together."""
    for host, port in hosts:
        if not is_ip(host):
            begin(host, port)


def _lookup(key: tuple[str, int], lookup: tuple[threading.Event, list[Found | Exception]]):
    try:
        infos = socket.getaddrinfo(key[0], key[1], 0, 0, socket.IPPROTO_TCP)
        result: Found | Exception = [(info[4][0], info[4][1]) for info in infos]
    except (OSError, UnicodeError) as exc:
        result = exc
    with _lock:
        if not isinstance(result, Exception) and result:
            _kept[key] = result
        _inflight.pop(key, None)
    lookup[1].append(result)
    lookup[0].set()


def _streak(key: tuple[str, int]) -> FailureStreak:
    with _lock:
        streak = _streaks.get(key)
        if streak is None:
            streak = _streaks[key] = FailureStreak(
                log, "endpoint_name_unresolved", "endpoint_name_resolved"
            )
        return streak


def _text(found: Found) -> str:
    return ", ".join(address for address, _ in found)
