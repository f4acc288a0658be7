"""The server-state file as one block of rows per backend, so a dump can be partial.

`show servers state` lists every server of every backend: 1.9 MB at 1,000 backends of 20
servers, which HAProxy takes tens of milliseconds to answer and synapse as long to check,
every second, beside the changes it applies. `show servers state <backend>` answers the
same rows for one backend, and a full dump is those answers' rows one backend after the
other, in HAProxy's order of backends (that of `show backend`), under one version line
and one column header. So the state dumper (``synapse.haproxy.statedump``) keeps, for the
file it wrote last, each backend's place in it (its size) and a digest of its rows, reads
only some backends per round, and splices the ones whose rows changed into the file: the
result is the file a full dump would have written (the seconds-since-last-change column
of unchanged backends aside, which a full dump skips writing as well).
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from synapse.haproxy.answers import CANNOT_FIND_BACKEND, check_servers_state
from synapse.haproxy.sockets import UnexpectedAnswer

_SINCE_CHANGE = 9  # srv_time_since_last_change, in `show servers state` (format 1)
CHUNK = 250  # rows handled per step on the event loop (~0.5 ms)


# What ends a whole `show servers state`: the blank line that ends every CLI answer (in
# the prompt mode of a batch, "\n> " takes it, so the answers of a batch lack it).
TAIL = "\n"


def comparable_rows(lines: list[str]) -> bytes:
    """The rows without what changes every second (so unchanged rows compare equal)."""
    rows = []
    for line in lines:
        if not line.startswith("#"):  # (HAProxy separates the columns by one space)
            fields = line.split(" ", _SINCE_CHANGE + 1)  # the rest stays one string
            if len(fields) > _SINCE_CHANGE:
                del fields[_SINCE_CHANGE]
                line = " ".join(fields)
        rows.append(line)
    return ("\n".join(rows) + "\n").encode()


def rows_digest(lines: list[str]) -> bytes:
    """A digest of rows by ``comparable_rows``."""
    return hashlib.blake2b(comparable_rows(lines), digest_size=16).digest()


@dataclass
class Blocks:
    """The state file as written last: its head (version line and column header), each
    backend's rows (by size and digest, in the file's order) and its tail."""

    pid: str  # the HAProxy process the rows were read from
    head: str
    tail: str
    order: list[str]  # every backend HAProxy has, in its order (empty ones too)
    sizes: dict[str, int] = field(default_factory=dict)  # characters of its rows
    digests: dict[str, bytes] = field(default_factory=dict)
    file_id: tuple[int, int, int] | None = None  # (inode, mtime, size) once written

    def add(self, backend: str, rows: list[str]) -> None:
        """``backend``'s rows, after those of the backends before it in ``order``."""
        if rows:
            self.sizes[backend] = sum(len(row) + 1 for row in rows)
            self.digests[backend] = rows_digest(rows)

    @property
    def length(self) -> int:
        return len(self.head) + sum(self.sizes.values()) + len(self.tail)


def file_text(blocks: Blocks, rows_of: Mapping[str, list[str]]) -> str:
    """The file ``blocks`` describe, from every backend's rows."""
    rows = "".join(f"{row}\n" for name in blocks.order for row in rows_of.get(name, ()))
    return blocks.head + rows + blocks.tail


def head_of(answer: str) -> str:
    """The version line and column header of a `show servers state` answer."""
    check_servers_state(answer)
    lines = answer.split("\n", 2)
    if len(lines) < 3 or not lines[1].startswith("#"):
        raise UnexpectedAnswer(f"a servers state answer without a header: {answer[:120]!r}")
    return f"{lines[0]}\n{lines[1]}\n"


def _backend_of(row: str) -> str:
    fields = row.split(" ", 2)
    if len(fields) < 3:
        raise UnexpectedAnswer(f"a servers state row without a backend: {row[:120]!r}")
    return fields[1]


@functools.lru_cache(maxsize=4)
def _columns(head: str) -> int:
    """How many columns the header of ``head`` names (a row with fewer is torn)."""
    header = next((line for line in head.split("\n") if line.startswith("#")), "#")
    return len(header.lstrip("#").split())


def backend_rows(backend: str, answer: str, head: str) -> list[str] | None:
    """The rows of `show servers state <backend>`; None when HAProxy has no such backend.
    UnexpectedAnswer when the answer is not one (another header than the file's, a row of
    another backend, a torn row). Checked against ``head`` as it is (a round reads ~20
    of them a second, idle: no header split again per answer)."""
    if answer.startswith(CANNOT_FIND_BACKEND):
        return None
    if not answer.startswith(head):
        check_servers_state(answer)  # (an error message says so)
        raise UnexpectedAnswer(f"'show servers state {backend}' has another header")
    rows = [line for line in answer[len(head) :].split("\n") if line]
    if rows and not rows[-1].startswith("#") and len(rows[-1].split()) < _columns(head):
        raise UnexpectedAnswer(f"a servers state dump cut short: last row {rows[-1][:120]!r}")
    if any(_backend_of(row) != backend for row in rows):
        raise UnexpectedAnswer(f"'show servers state {backend}' named another backend")
    return rows


def changed_blocks(
    blocks: Blocks, fetched: Mapping[str, list[str]], changed: dict[str, list[str]]
) -> Iterator[None]:
    """Put in ``changed`` the fetched backends whose rows differ from the file's (the
    seconds since a change aside), CHUNK rows or so per step."""
    rows_done = 0
    for backend, rows in fetched.items():
        digest = rows_digest(rows) if rows else None
        if digest != blocks.digests.get(backend):
            changed[backend] = rows
        rows_done += len(rows)
        if rows_done >= CHUNK:
            rows_done = 0
            yield


def splice(blocks: Blocks, text: str, changed: Mapping[str, list[str]]) -> tuple[str, Blocks]:
    """``text`` (the file as ``blocks`` describe it) with the rows of the ``changed``
    backends in their places, and the blocks of that text. ValueError when ``text`` is not
    the file ``blocks`` describe, or a backend's first rows have no known place."""
    if len(text) != blocks.length or not text.startswith(blocks.head):
        raise ValueError("the state file is not the one last written")
    sizes, digests = dict(blocks.sizes), dict(blocks.digests)
    pieces, at = [], len(blocks.head)
    copied = 0  # text[copied:at] is still to copy
    for backend in blocks.order:
        size = sizes.get(backend, 0)
        if backend in changed:
            rows = changed[backend]
            pieces += (text[copied:at], "".join(f"{row}\n" for row in rows))
            copied = at + size
            if rows:
                sizes[backend], digests[backend] = len(pieces[-1]), rows_digest(rows)
            else:
                sizes.pop(backend, None)
                digests.pop(backend, None)
        at += size
    pieces.append(text[copied:])
    new = Blocks(blocks.pid, blocks.head, blocks.tail, blocks.order, sizes, digests)
    return "".join(pieces), new
