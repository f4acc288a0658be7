"""Server ids and order seeds: stable per server name and per host. Pure functions.

Server ids come from a stable hash of the name (ids HAProxy already uses are kept), so a
re-render or a restart gives a server the same id (and HAProxy's state file stays valid).
"""

from __future__ import annotations

import functools
import hashlib
import socket
from collections.abc import Callable, Iterable, Mapping
from typing import Any

try:  # CPython's own SHA-1: the same digest without OpenSSL's per-call setup (half the time
    # for a short name; one per server at a cold start, 20,000 at 1,000 x 20)
    from _sha1 import sha1 as _sha1_hash
except ImportError:  # (a build without it)
    _sha1_hash = functools.partial(hashlib.sha1, usedforsecurity=False)
_sha1: Callable[[bytes], Any] = _sha1_hash


def default_order_seed() -> int:
    """Deterministic per host: re-renders and restarts keep the same server order."""
    digest = hashlib.sha256(socket.gethostname().encode()).digest()
    return int.from_bytes(digest[:4], "big")


def stable_server_id(name: str, max_id: int) -> int:
    digest = _sha1(name.encode()).digest()
    return int.from_bytes(digest[:8], "big") % max_id + 1


def assign_ids(
    names: Iterable[str], keep: Mapping[str, int], reserved: Iterable[int], max_id: int
) -> dict[str, int | None]:
    """Server ids: ``keep`` ids stay (HAProxy already uses them), the others hash and probe.

    ``reserved`` are ids taken by other servers HAProxy still has. None when the id space
    is exhausted (HAProxy then picks one itself).
    """
    names = sorted(set(names))
    ids: dict[str, int | None] = {}
    used: set[int] = set()
    for name in names if keep else ():  # (a cold start keeps none)
        wanted = keep.get(name)
        if wanted is not None and 1 <= wanted <= max_id and wanted not in used:
            ids[name] = wanted
            used.add(wanted)
    used.update(reserved)
    sha1, from_bytes = _sha1, int.from_bytes
    for name in names:
        if name in ids:
            continue
        # stable_server_id, inline (one call per server of a cold start)
        digest = sha1(name.encode()).digest()
        candidate = from_bytes(digest[:8], "big") % max_id + 1
        for _ in range(max_id):
            if candidate not in used:
                break
            candidate = candidate % max_id + 1
        else:
            ids[name] = None
            continue
        ids[name] = candidate
        used.add(candidate)
    return ids
