"""HTTP clients through HAProxy while a test changes it: what every request got."""

from __future__ import annotations

import collections
import contextlib
import http.client
import threading
import time
from collections.abc import Iterator

CLIENTS = 8
DEADLINE_S = 60.0  # the whole load; each test's changes end well before


def load(port: int, stop: threading.Event, deadline: float, counts: collections.Counter) -> None:
    """GET / through HAProxy until told to stop (or the deadline): one count per answer
    status, or per kind of error."""
    while not stop.is_set() and time.monotonic() < deadline:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        try:
            conn.request("GET", "/")
            answer = conn.getresponse()
            answer.read()
            counts[answer.status] += 1
        except (OSError, http.client.HTTPException) as err:
            counts[type(err).__name__] += 1
        finally:
            conn.close()


@contextlib.contextmanager
def under_load(
    port: int, clients: int = CLIENTS, seconds: float = DEADLINE_S
) -> Iterator[collections.Counter]:
    """``clients`` threads sending requests to ``port`` meanwhile; the counts when it ends."""
    tallies: list[collections.Counter] = [collections.Counter() for _ in range(clients)]
    counts: collections.Counter = collections.Counter()
    stop = threading.Event()
    deadline = time.monotonic() + seconds
    threads = [
        threading.Thread(target=load, args=(port, stop, deadline, tally), daemon=True)
        for tally in tallies  # (one each: no increment lost between threads)
    ]
    for thread in threads:
        thread.start()
    try:
        yield counts
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=5)
    assert not any(thread.is_alive() for thread in threads)
    counts.update(sum(tallies, collections.Counter()))


def all_answered(counts: collections.Counter, at_least: int, during: str = "") -> None:
    """Every request ``under_load`` sent was answered 200 (``during``: when, for the
    message), and at least ``at_least`` were (the load ran)."""
    failed = {k: n for k, n in counts.items() if k != 200}
    assert not failed, f"failed requests{during}: {failed} ({counts[200]} answered)"
    assert counts[200] >= at_least, counts
