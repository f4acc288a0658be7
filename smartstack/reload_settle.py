"""A SIGHUP reload whose files were written in place a moment ago waits for them first.

smartstack.config_read waits for a writer it can see (a file open for writing, or changed
within SETTLE_CLOSED_S), but a script's ``>`` then ``>>`` with a pause between the two
(a template step, a slow command) leaves a closed file holding a prefix, and a YAML prefix
cut at a line end is valid YAML without what comes after the cut (review s32: synapse
applied ``services=1``, 496 of 562 api requests failed; a prefix without a frontend's
``port`` line failed 263 of 280).

What a reload does cannot tell a prefix from an edit (a prefix may change a service as
well as remove one), but how the file was written can: a prefix is only ever seen in a
file written IN PLACE (``>``, ``>>``, ``cp``: the same inode as when the daemon last read
it, with a new size or mtime) or in a NEW one (a service_conf_dir file not there at the last
read). A file renamed over (another inode: ``mv``, ansible, puppet, most editors) is whole
the moment it appears, and a deleted file is no prefix. So a reload one of whose files was
written in place or is new, less than FRESH_S ago, waits until every file has been
unchanged (inode, size, mtime) for FRESH_S, reads them again and applies what they then
say. At most HOLD_MAX_S: then what is there is applied, with a warning. The daemons keep
the stamps of their files as of their last successful read (start, each applied reload).
A start never waits. Nor does a file whose text is a whole JSON object as the reload read
it (its stamp unchanged since) that no process has open for writing, as the kernel says: no
prefix of one is (smartstack.config_read.whole_json). When the kernel will not say (the
daemon not the file's owner, no CAP_LEASE), it holds as before (``whole_json_file``).
So a JSON config written in place is applied at once (it waited FRESH_S: 2,010 ms from
SIGHUP to a route in the edge bench), a YAML one still waits, and so does an empty file.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import stat
import time
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path

from smartstack import config_read
from smartstack.config_read import whole_json
from smartstack.configfile import conf_dir_files
from smartstack.logs import event

# A file changed less than this long ago may be a prefix a writer has not finished.
FRESH_S = 2.0
# The longest a removing reload waits for its files to be still.
HOLD_MAX_S = 6.0
POLL_S = 0.1

Stamp = tuple[int, int, int] | None  # (inode, size, mtime ns); None: missing


def conf_directories(conf_dirs: Iterable[str | None]) -> list[Path]:
    return sorted({Path(os.path.abspath(os.path.expanduser(d))) for d in conf_dirs if d})


def watched_files(config_path: Path, conf_dirs: Iterable[str | None]) -> list[Path]:
    """The config file and the service files in each ``service_conf_dir``."""
    paths = [config_path]
    for directory in conf_directories(conf_dirs):
        with contextlib.suppress(OSError):  # (a directory gone: no files)
            paths += [file for _, file in conf_dir_files(directory)]
    return paths


def file_stamps(config_path: Path, conf_dirs: Iterable[str | None]) -> dict[Path, Stamp]:
    """The stamps of a config's files, as the daemon keeps them at each successful read."""
    return stamps(watched_files(config_path, conf_dirs))


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


def written_in_place(last: Stamp, now: Stamp, wall: float, fresh: float = FRESH_S) -> bool:
    """Whether a file stamped ``last`` at the daemon's last read (None: not there) and
    ``now`` may be a writer's prefix: written in place (same inode, size or mtime changed)
    or new, less than ``fresh`` s before ``wall`` (a future mtime: waits too). Renamed over
    (another inode) or deleted: whole, never held."""
    if now is None or now == last:
        return False  # deleted, or not written since
    if last is not None and last[0] != now[0]:
        return False  # renamed over: a file complete when it appeared
    return wall - now[2] / 1e9 < fresh


def fresh_in_place(
    last: dict[Path, Stamp],
    now: dict[Path, Stamp],
    wall: float,
    fresh: float = FRESH_S,
    whole: Callable[[Path, Stamp], bool] = lambda path, stamp: False,
) -> tuple[Path, float] | None:
    """The first file (and its age, s) written in place or new a moment ago, if any, but
    one that ``whole`` says is complete."""
    for path, stamp in now.items():
        written = stamp is not None and written_in_place(last.get(path), stamp, wall, fresh)
        if written and not whole(path, stamp):
            return path, wall - stamp[2] / 1e9
    return None


def whole_json_file(path: Path, stamp: Stamp) -> bool:
    """Whether ``path``, still as ``stamp`` says, holds a whole JSON object that the kernel
    says no process has open for writing. Only a regular file is read: a pipe (``-c
    /dev/stdin``) would block the loop, and was read once. Not when the kernel will not say
    (the daemon not the file's owner, no CAP_LEASE): a writer overwriting without truncating
    (``r+``, ``1<>``, ``dd conv=notrunc``) paused past config_read's SETTLE_S leaves its new
    head on the old tail, a JSON object neither version is (review s45: a real synapse
    applied alpha's new server with bravo's old one, and kept it once the file was whole)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # (a FIFO's open waits for a writer)
        with open(fd, "rb") as file:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return False
            if config_read.open_for_writing(fd) is not False:
                return False  # a writer at work, or the kernel will not say
            data = file.read()
            after = os.fstat(fd)
        text = data.decode("utf-8")
    except (OSError, UnicodeDecodeError):
        return False
    return (after.st_ino, after.st_size, after.st_mtime_ns) == stamp and whole_json(text)


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


async def hold_fresh_write(
    config_path: Path,
    conf_dirs: Iterable[str | None],
    last: dict[Path, Stamp],
    log: logging.Logger,
    read: dict[Path, Stamp] | None = None,
) -> bool:
    """Before a reload is applied: wait for its files to be still when one of them was
    written in place or is new since ``last`` (the stamps of the daemon's last read), a
    moment ago, unless it is a whole JSON object as ``read`` (its stamps before the reload
    read it) left it (module doc). True when it waited: the caller reads the files again
    and applies that, whatever it says."""
    files = stamps(watched_files(config_path, conf_dirs))
    as_read = read or {}
    hit = fresh_in_place(last, files, time.time(), whole=lambda path, stamp: (
        as_read.get(path) == stamp and whole_json_file(path, stamp)))  # fmt: skip
    if hit is None:
        return False
    changed, age = hit
    waited, still = await wait_still([*files, *conf_directories(conf_dirs)])
    detail = "written in place: read again once still" if still else (
        f"still changing after {HOLD_MAX_S:g} s: read again and applied as it is")  # fmt: skip
    event(log, "config_reload_held", level=logging.INFO if still else logging.WARNING,
          path=str(config_path), changed=str(changed), changed_s_ago=f"{age:.2f}",
          waited_s=f"{waited:.2f}", detail=detail)  # fmt: skip
    return True
