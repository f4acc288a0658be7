"""``managed.launch: false``: HAProxy runs in its own container, synapse never starts it.

A synapse container that runs HAProxy as its child takes it down at every restart, upgrade
or crash of synapse (the container's processes end with it): 29-50 requests refused per
restart at 100 requests/s. With HAProxy in a container of its own (the image's
``haproxy-wait`` command: docker/entrypoint.sh) and synapse in its PID namespace, a synapse
restart refuses nothing (docs/docker.md, "HAProxy in its own container").

Synapse writes and checks the config file as ever, adopts the master that answers on
``master_socket_path`` and reloads it there. It never starts a master (the HAProxy container
starts one from the config file synapse wrote, and its restart policy brings a crashed one
back) and never stops one (``exit_policy``). While no master answers, a start waits for one
up to its timeout (``haproxy_waiting``), then fails saying why (/health), and is retried.
A stop of synapse ends the wait (``closing``): it held the controller's lock, and the stop
waited for it (15 s, beyond docker stop's 10 s: synapse was killed).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import socket as sockets
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from smartstack.logs import event
from synapse.haproxy.adoption import Found
from synapse.haproxy.settings import Settings

log = logging.getLogger("synapse.haproxy.managed")
POLL = 0.1  # seconds between two connects to the master socket while none answers
LOOK_S = 1.0  # seconds between two whole looks for a master (a moved socket, one not answering)


async def answered(
    adopt: Callable[[str], Awaitable[Found]],
    adopted: Callable[[Found], bool],
    settings: Settings,
    timeout: float,
    closing: asyncio.Event,
) -> Found:
    """``adopt`` asked again until a master answers (it is adopted), one that cannot be
    adopted is found, ``timeout`` seconds have passed or synapse stops (``closing``): the
    last answer (its error says why none answered)."""
    socket, config = settings.master_socket, settings.config_path
    event(log, "haproxy_waiting", socket=str(socket), config=str(config),
          detail="managed.launch is false: waiting for HAProxy's own container to "
          "start it from the config file")  # fmt: skip
    deadline = time.monotonic() + timeout
    while True:
        found = await adopt("started elsewhere")
        if adopted(found) or found.masters or found.foreign:
            return found
        if time.monotonic() >= deadline:
            return dataclasses.replace(found, error=not_answering(socket, config, timeout))
        if closing.is_set():
            return dataclasses.replace(found, error=f"synapse stops: no master on {socket}")
        await _until_listening(socket, min(deadline, time.monotonic() + LOOK_S), closing)


async def _until_listening(socket: Path | None, until: float, closing: asyncio.Event) -> None:
    """Back to a whole look (``adopt``: `show proc` and three scans of /proc) once a
    second, or at once when something listens on the master socket; a connect every POLL
    meanwhile (a master's return: seen as fast). A whole look every POLL took 19-20 % of a
    core with 1,067 processes (a host's PID namespace; 36 % with 2,067), now 3 % (7 %)."""
    while True:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(closing.wait(), POLL)
        if closing.is_set() or time.monotonic() >= until or socket is None or listens(socket):
            return


def listens(path: Path) -> bool:
    """Something listens on the unix socket ``path`` (not missing, not refusing)."""
    with sockets.socket(sockets.AF_UNIX, sockets.SOCK_STREAM) as probe:
        probe.setblocking(False)  # (a full accept queue: EAGAIN, something listens)
        try:
            probe.connect(str(path))
        except (FileNotFoundError, ConnectionRefusedError, NotADirectoryError):
            return False
        except OSError:
            return True
    return True


def not_answering(socket: Path | None, config: Path | None, waited: float) -> str:
    """Why a start failed: nothing answered, and synapse starts no HAProxy itself."""
    return (
        f"no HAProxy master answered on {socket} within {waited:.0f} s; managed.launch is "
        f"false: HAProxy's own container starts it from {config} (image command haproxy-wait)"
    )


def no_launch(socket: Path | None) -> str:
    """Why synapse does not start a new master (a replacement, say) itself."""
    return (
        f"managed.launch is false: synapse starts no HAProxy (the one on {socket} runs in "
        "its own container)"
    )
