"""The panic's backstop: HAProxy's backends polled for one newly left without a usable server.

The panic (``synapse.haproxy.panic_watch``) is told at once by HAProxy's "backend 'X' has
no server available!" line, which synapse reads from the output of a master it started. A
master it adopted (HAProxy kept running across a synapse restart or upgrade) or one in its
own container (``managed.launch: false``) writes its output elsewhere: its alerts never
reached synapse, and its backends never panicked. So every ``pause(backends)`` seconds
(0.25 s for a sidecar's few backends, growing with their number to POLL_S at 1,000: the
read costs HAProxy ~6 us a backend, kept under ~0.3 % of a core) synapse reads each
backend's status line (``show stat -1 2 -1``: one line a backend, not one a server) and
pokes the panic for each backend that is DOWN (HAProxy has no usable server for it) and
was not at the last read, or went DOWN again since (its ``chkdown`` count moved). A poke
of a backend the panic has nothing for costs one ``show servers state`` of it.

The counts are a worker's: a reload's new worker starts them again (1 for a backend its
state file brings back DOWN, 0 else), so a backend DOWN at a read, then UP, a reload, and
DOWN again before the next read showed the count of before, and was never poked (1,000
backends, a 2 s pause: 24 of 24 requests failed over 6 s, no panic, review s44). So the
same connection asks ``show info`` first: when another worker answers (its ``Pid`` and
``Start_time_sec``), every backend DOWN is poked once (a needless look a reload for one
DOWN across it: 200 of them, 3 reloads, 600 looks, none failed; paid by an HAProxy synapse
launched too, whose alerts come through its output: cheap, and the state file's DOWN
backends print no alert). A stopping worker's answer is not read (stale counts; seen only
on a connection opened before the reload, which the poll never keeps: in the first ~0.1 s
after a reload the old worker may answer as the current one, not yet stopping, which is
one more change of worker at worst, review s44). ``show info`` adds ~1 KB to a read, no
measurable cost (~5 ms at 1,000 backends).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

from synapse.haproxy.answers import is_stopping, parse_show_info
from synapse.haproxy.runtime import RuntimeClient
from synapse.haproxy.sockets import HAProxySocketError

log = logging.getLogger("synapse.haproxy.panic")
POLL_S = 2.0  # the longest pause between reads (1,000 backends and more)
FASTEST_S = 0.25  # the shortest (up to 125 backends)
# The pause a backend read adds. Under 500 backends the gap of an adopted HAProxy's panic
# (its "no server available" to the poll's read) stays under a second, which the default
# wait of a checked service covers (server_wait; with a 2 s poll, 4 clients got 4 503s
# over 2 panics past their 1 s wait, review s43).
PER_BACKEND_S = 0.002
ASK = "show stat -1 2 -1"  # every proxy's backend line only (type 2)
ASKS = ["show info", ASK]  # (one connection: the worker that answered is the one read)


@dataclass(frozen=True)
class Read:
    """One read: the worker that answered (its pid and start) and {backend: chkdown} of
    its backends DOWN."""

    worker: str
    down: dict[str, int]


def read_of(info: str, stat: str) -> Read | None:
    """The read of ``show info`` and ``show stat``'s answers; None when a stopping worker
    answered (an old one, after a reload, on the listener it shares for a moment). The
    start time too: a worker in a container restarted may have its pid again."""
    if is_stopping(info):
        return None
    fields = parse_show_info(info)
    worker = f"{fields.get('Pid', '')}@{fields.get('Start_time_sec', '')}"
    return Read(worker, backends_down(stat))


def backends_down(text: str) -> dict[str, int]:
    """{backend: its chkdown} of the backends ``show stat`` says are DOWN (columns found by
    the header's names; a plain split: the columns read come before any free text, which
    HAProxy may quote; 1,000 backends parse in ~2 ms so, in ~6.5 with csv.DictReader)."""
    lines = text.lstrip("# ").splitlines()
    if not lines:
        return {}
    header = lines[0].split(",")
    try:
        name, kind, status, count = (header.index(c) for c in ("pxname", "svname", "status",
                                                               "chkdown"))  # fmt: skip
    except ValueError:
        return {}
    down: dict[str, int] = {}
    for line in lines[1:]:
        fields = line.split(",")
        if len(fields) > count and fields[kind] == "BACKEND" and fields[status] == "DOWN":
            down[fields[name]] = int(fields[count]) if fields[count].isdigit() else 0
    return down


def pause(backends: int) -> float:
    """Seconds between reads when the last one listed ``backends`` backends."""
    return min(POLL_S, max(FASTEST_S, backends * PER_BACKEND_S))


def newly_down(before: Read | None, now: Read) -> list[str]:
    """The backends DOWN now that were not DOWN before, or went DOWN again since; all of
    them when another worker answers now (a reload: its counts started again)."""
    if before is None or before.worker != now.worker:
        return sorted(now.down)
    return sorted(name for name, count in now.down.items() if before.down.get(name) != count)


async def poll(client: RuntimeClient, poke: Callable[[str], None]) -> None:
    """Read the backends' status every ``pause``, poke the newly DOWN ones (runs until
    cancelled; a failed read, a reload say, waits for the next)."""
    before: Read | None = None
    backends = 0  # (the first read after FASTEST_S: an adoption's look comes soon)
    while True:
        await asyncio.sleep(pause(backends))
        try:
            answers = await client.ask(ASKS)
        except HAProxySocketError as err:
            log.debug("panic poll: %s", err)
            continue
        except Exception:  # (must not end the backstop: the next read tries again)
            log.exception("panic poll failed")
            continue
        if len(answers) < len(ASKS):  # (cut short: HAProxy killed as it answered)
            log.debug("panic poll: no answer (cut short)")
            continue
        now = read_of(answers[0], answers[1])
        if now is None:  # (stale: the next read finds the new worker)
            log.debug("panic poll: a stopping worker answered")
            continue
        backends = answers[1].count(",BACKEND,")
        for backend in newly_down(before, now):
            poke(backend)
        before = now
