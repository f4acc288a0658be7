"""Reading a config file that another process may be writing at that very moment.

A deploy tool that rewrites a file in place (truncate, then write) leaves a prefix of the
new text there for a while, and a prefix of a YAML file cut at a line end is often valid
YAML: a SIGHUP read then applied it (services dropped, ``port: 13``). Its content cannot
tell, so the read does. A file still open for writing by another process (Linux says so
through a read lease) or changed while being read is read again, every POLL_S; one changed
a moment ago is read again once it has been still for that moment: SETTLE_S, or
SETTLE_CLOSED_S when the kernel said no writer has it open (a script's next ``>>`` comes
within milliseconds). At most WAIT_MAX_S: then it is refused (docs/configuration.md,
"Changing a config file"). A file last changed earlier, the usual case, is read once.
What this cannot see (a closed file holding a prefix after a pause between two writers) a
reload that would remove services waits for: smartstack.reload_settle.

A file no process has open for writing whose text is a whole JSON object (``whole_json``:
whole-line ``#`` comments blanked and a byte order mark skipped, as .json files are read)
is read at once, however recently it changed. No prefix of a JSON object is one (it ends
with its closing brace, and only whitespace may follow), so it is no writer's prefix; after
one, YAML takes only comments and ``...``, which add nothing. Airbnb's synapse.conf.json
and nerve's service files are JSON, and a SIGHUP's route change waited SETTLE_CLOSED_S for
them (the edge bench: 57 ms, ~50 of it this wait). Not when the kernel will not say whether
a writer has the file open: one overwriting without truncating first (``r+``, ``dd
conv=notrunc``) leaves its new head on the old tail, which can be a JSON object neither
wrote (``{"a": 2, "b": 22}`` between ``{"a": 1, "b": 22}`` and ``{"a": 2, "b": 3}``), and
one about to truncate and write again may still. The check costs one more parse of a file
changed a moment ago: 1.1 ms for 500 services (0.16 MB), 8.7 ms for 5,000; a YAML file
stops at its first character (0.6 ms for 500 with a ``#`` line: the blanking).

An mtime more than AHEAD_MAX_S ahead of the clock was stamped before the wall clock was
stepped back (the kernel stamps files from that clock, never ahead of it): not a moment
ago, so such a file is read once like an old one. Waited for instead, every file written
in the hour before a -1 h step cost a settle wait: 300 service files read in 75.4 s (the
daemon not their owner), in 15.2 s (their owner), against 0.08 s; a SIGHUP's validating
child ran past CHILD_TIMEOUT from ~480 files (review s33). A file written in place since
the daemon's last read still waits at a SIGHUP (smartstack.reload_settle: a future mtime
holds it).
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import signal
import stat
import time
from pathlib import Path
from typing import NamedTuple

from smartstack.config_errors import ConfigError

# A file changed less than this long ago may be between two writes of one writer...
SETTLE_S = 0.25
# ... or, when no process has it open for writing, between two writers (`>`, then `>>`).
SETTLE_CLOSED_S = 0.05
# How long a read waits for a writer to finish before the file is refused.
WAIT_MAX_S = 10.0
# How often a file open for writing is looked at again.
POLL_S = 0.1
# An mtime further ahead of the clock than this predates a backward step of the clock.
AHEAD_MAX_S = 2.0
JSON_SPACE = " \t\n\r"  # what JSON takes for whitespace (str.strip takes more)
COMMENT_LINE = re.compile(r"^[ \t]*#.*$", re.MULTILINE)


def open_for_writing(fd: int) -> bool | None:
    """Whether some process has the file of ``fd`` open for writing; None when the kernel
    will not say (not Linux, leases off, the file another user's and no CAP_LEASE)."""
    setlease = getattr(fcntl, "F_SETLEASE", None)
    if setlease is None:
        return None
    try:
        # A writer opening the file while the lease is held signals this process: SIGIO
        # by default, which terminates it; SIGURG's default is to ignore it.
        fcntl.fcntl(fd, fcntl.F_SETSIG, signal.SIGURG)
        fcntl.fcntl(fd, setlease, fcntl.F_RDLCK)  # refused (EAGAIN) while a writer has it
    except OSError as exc:
        return True if exc.errno == errno.EAGAIN else None
    fcntl.fcntl(fd, setlease, fcntl.F_UNLCK)
    return False


class _Read(NamedTuple):
    text: str
    stamp: tuple[int, int, int] | None  # (inode, size, mtime); None: not a regular file
    busy: str | None  # why it is surely incomplete
    settle: float  # how long it must have been still
    closed: bool  # the kernel said no process has it open for writing


def _read_once(path: Path) -> _Read:
    with path.open(encoding="utf-8") as file:
        before = os.fstat(file.fileno())
        if not stat.S_ISREG(before.st_mode):  # a pipe (-c /dev/stdin): it reads only once
            return _Read(file.read(), None, None, 0.0, False)
        writing = open_for_writing(file.fileno())
        text = file.read()
        after = os.fstat(file.fileno())
    stamp = (after.st_ino, after.st_size, after.st_mtime_ns)
    busy = "another process has it open for writing" if writing else None
    if (before.st_ino, before.st_size, before.st_mtime_ns) != stamp:
        busy = "it changed while being read"
    settle = SETTLE_S if writing is None else SETTLE_CLOSED_S
    return _Read(text, stamp, busy, settle, writing is False)


def json_text(text: str) -> str:
    """``text`` as a .json file is read: whole-line ``#`` comments blanked (Ruby reads
    .json files as YAML: real ones carry them), a UTF-8 byte order mark (Notepad,
    PowerShell 5's ``Out-File -Encoding utf8``) a space, which JSON refuses and YAML skips
    (YAML refuses a tab-indented JSON file: review s34). Lines and columns stay, so JSON's
    errors point at the real mistake. (No '#': the regex costs ms on 500 services.)"""
    bare = " " + text[1:] if text.startswith("\ufeff") else text
    return COMMENT_LINE.sub("", bare) if "#" in bare else bare


def whole_json(text: str) -> bool:
    """Whether ``text`` is one whole JSON object, as ``json_text`` reads it (no prefix of
    one is: module doc). Empty text, any other JSON value, two documents, YAML that is not
    JSON: not whole."""
    body = json_text(text)
    if body.lstrip(JSON_SPACE)[:1] != "{" or body.rstrip(JSON_SPACE)[-1:] != "}":
        return False  # (YAML, a prefix cut anywhere but after a brace: no parse)
    try:
        return isinstance(json.loads(body), dict)
    except (ValueError, RecursionError):
        return False


def read_settled(path: Path) -> str:
    """The file's text once no writer is at work on it (module doc). OSError and
    UnicodeDecodeError as ``Path.read_text``; ConfigError when it is still being written
    after WAIT_MAX_S."""
    deadline = time.monotonic() + WAIT_MAX_S
    seen: tuple[int, int, int] | None = None
    while True:
        read = _read_once(path)
        if read.stamp is None:
            return read.text
        age = time.time_ns() / 1e9 - read.stamp[2] / 1e9
        if read.busy is None and (age >= read.settle or age < -AHEAD_MAX_S or read.stamp == seen):
            return read.text  # still long enough, stamped before a step back, or seen still
        if read.busy is None and read.closed and whole_json(read.text):
            return read.text  # no writer at work and no writer's prefix (module doc)
        seen = None if read.busy else read.stamp
        left = deadline - time.monotonic()
        if left <= 0:
            why = read.busy or f"it changed {age:.2f} s ago"
            raise ConfigError([
                f"{path}: file still being written after {WAIT_MAX_S:g} s ({why}): "
                "write a new file and rename it over the old one"
            ])  # fmt: skip
        pause = POLL_S if read.busy else min(max(read.settle - age, 0.01), read.settle)
        time.sleep(min(pause, left))
