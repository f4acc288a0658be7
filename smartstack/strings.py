"""One shared copy of equal strings (server names, addresses, options), freed when unused.

A fleet's state holds the same text many times: a server's name is in its spec, the
parsed config text and HAProxy's running state. ``sys.intern`` made them one object, but
on Python 3.12 interned strings are immortal: every name ever seen stays (23.5 MB after
200,000 distinct strings), so a fleet with server churn grows without bound. This table
keeps its own references instead and drops the strings only it still holds, once it has
doubled since the last sweep (amortised O(1) per call, at most ~2x the live entries).

Identity is a saving, never a contract: a string the sweep dropped while another thread
was taking it only means a second copy of equal text, so no lock is needed.
"""

from __future__ import annotations

import sys

FLOOR = 4096  # entries before the first sweep: a sidecar never sweeps

_table: dict[str, str] = {}
_limit = FLOOR


def _references_when_unused() -> int:
    """The count ``sweep`` sees for a string only the table holds (its key and value, the
    list walked, the loop variable, getrefcount's argument: 5 on CPython 3.11-3.13),
    measured by the same loop on a probe, so an interpreter that counts differently
    (borrowed references, free threading) does not make the sweep drop live strings."""
    probe = "".join(("smartstack.strings", ".probe"))  # a new object, held by no constant
    _table[probe] = probe
    del probe
    count = 0
    for text in list(_table):
        count = sys.getrefcount(text)
    _table.clear()
    return count


_TABLE_ONLY = _references_when_unused()


def share(text: str) -> str:
    """The table's copy of ``text`` (``text`` itself when it is new)."""
    kept = _table.setdefault(text, text)
    if len(_table) > _limit:
        sweep()
    return kept


def sweep() -> int:
    """Drop the strings nobody but the table holds; the next sweep when it doubles."""
    global _limit
    getrefcount = sys.getrefcount
    dropped = 0
    for text in list(_table):
        if getrefcount(text) <= _TABLE_ONLY:
            _table.pop(text, None)
            dropped += 1
    _limit = max(FLOOR, 2 * len(_table))
    return dropped


def size() -> int:
    """Entries in the table now (tests, and an operator's curiosity)."""
    return len(_table)


def footprint() -> int:
    """Bytes of the table and of the strings in it."""
    return sys.getsizeof(_table) + sum(map(sys.getsizeof, _table))
