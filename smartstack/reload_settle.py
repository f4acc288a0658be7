"""A SIGHUP reload that would remove services from a file changed a moment ago waits first.

smartstack.config_read waits for a writer it can see (a file open for writing, or changed
within SETTLE_CLOSED_S), but a script's ``>`` then ``>>`` with a pause between the two
(a template step, a slow command) leaves a closed file holding a prefix, and a YAML prefix
cut at a line end is valid YAML without the services after the cut. Review s32 measured
it: a 1.0 s pause, synapse applied ``services=1`` (496 of 562 api requests failed) and
both nerves withdrew api until the next SIGHUP.

A file's content cannot tell a prefix from a shorter config, but what a reload would do
can: a reload that only adds or changes costs little if it was early (the next write's
SIGHUP finishes it), one that removes takes traffic away. So a reload whose result removes
services (or, for synapse, shortens a service's ``default_servers`` / static ``servers``),
read from files one of which changed less than FRESH_S ago, waits until every file has been
unchanged (inode, size, mtime) for FRESH_S, reads them again and applies what they then say:
the complete file. At most HOLD_MAX_S: then what is there is applied, with a warning. A
start, and a reload that does not remove, never waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path

from smartstack.configfile import conf_dir_files
from smartstack.logs import event

# A file changed less than this long ago may be a prefix a writer has not finished.
FRESH_S = 2.0
# The longest a removing reload waits for its files to be still.
HOLD_MAX_S = 6.0
POLL_S = 0.1

Stamp = tuple[int, int, int] | None  # (inode, size, mtime ns); None: missing


def watched_files(config_path: Path, conf_dirs: Iterable[str | None]) -> list[Path]:
    """The config file, each ``service_conf_dir`` and the service files in it (a
    directory's mtime moves when a file is created or removed there)."""
    paths = [config_path]
    for conf_dir in {d for d in conf_dirs if d}:
        directory = Path(os.path.abspath(os.path.expanduser(conf_dir)))
        paths.append(directory)
        with contextlib.suppress(OSError):  # (gone: its stamp is None)
            paths += [file for _, file in conf_dir_files(directory)]
    return paths


def stamps(paths: Iterable[Path]) -> dict[Path, Stamp]:
    result: dict[Path, Stamp] = {}
    for path in paths:
        try:
            st = os.stat(path)
        except OSError:
            result[path] = None
            continue
        result[path] = (st.st_ino, st.st_size, st.st_mtime_ns)
    return result


def changed_ago(seen: dict[Path, Stamp], now: float) -> float | None:
    """Seconds since the most recent change among ``seen`` (None: none of them exists)."""
    mtimes = [stamp[2] / 1e9 for stamp in seen.values() if stamp is not None]
    return now - max(mtimes) if mtimes else None


def must_hold(removes: bool, age: float | None, fresh: float = FRESH_S) -> bool:
    """Whether a reload waits: it removes, and one of its files changed ``age`` s ago, less
    than ``fresh`` (a future mtime, a clock set back: negative, waits too)."""
    return removes and age is not None and age < fresh


def is_still(age: float | None, still_for: float, fresh: float = FRESH_S) -> bool:
    """Files changed ``age`` s ago and seen unchanged for ``still_for`` s are done being
    written when either is at least ``fresh`` (the second: an mtime in the future)."""
    return age is None or age >= fresh or still_for >= fresh


async def wait_still(
    paths: list[Path],
    fresh: float = FRESH_S,
    most: float = HOLD_MAX_S,
    sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    clock: Callable[[], float] = time.monotonic,
    wall: Callable[[], float] = time.time,
) -> tuple[float, bool]:
    """Wait until ``paths`` have been unchanged for ``fresh`` s, at most ``most`` s:
    (seconds waited, whether they were still by then)."""
    start = clock()
    seen, since = stamps(paths), start
    while True:
        now = clock()
        age = changed_ago(seen, wall())
        if is_still(age, now - since, fresh):
            return now - start, True
        if now - start >= most:
            return now - start, False
        left = fresh - max(age or 0.0, now - since)
        await sleep(max(min(left, POLL_S * 5, most - (now - start)), 0.01))
        current = stamps(paths)
        if current != seen:
            seen, since = current, clock()


async def hold_removal(
    config_path: Path, conf_dirs: Iterable[str | None], removes: list[str], log: logging.Logger
) -> bool:
    """Before a reload that ``removes`` these (services, or what of them) is applied: wait
    for its files to be still when one changed a moment ago (module doc). True when it
    waited: the caller reads the files again and applies that, whatever it says."""
    if not removes:
        return False
    paths = watched_files(config_path, conf_dirs)
    age = changed_ago(stamps(paths), time.time())
    if not must_hold(True, age):
        return False
    waited, still = await wait_still(paths)
    event(log, "config_reload_held", level=logging.INFO if still else logging.WARNING,
          path=str(config_path), removes=",".join(removes), changed_s_ago=f"{age:.2f}",
          waited_s=f"{waited:.2f}", detail="read again once still" if still else
          f"still changing after {HOLD_MAX_S:g} s: read again and applied as it is")  # fmt: skip
    return True
