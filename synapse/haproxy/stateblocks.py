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


def check_last_row(text: str) -> None:
    """UnexpectedAnswer when the last row has fewer columns than the header names: a dump
    torn off mid-row (the process died while answering) must not become the state file."""
    lines = text.rstrip("\n").rsplit("\n", 1)
    last = lines[-1]
    header = next((line for line in text.split("\n", 3)[:3] if line.startswith("#")), None)
    if len(lines) < 2 or header is None or last.startswith("#"):
        return  # no rows (or no header to count by): nothing torn
    if len(last.split()) < len(header.lstrip("#").split()):
        raise UnexpectedAnswer(f"a servers state dump cut short: last row {last[:120]!r}")


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


def backend_rows(backend: str, answer: str, head: str) -> list[str] | None:
    """The rows of `show servers state <backend>`; None when HAProxy has no such backend.
    UnexpectedAnswer when the answer is not one (another header than the file's, a row of
    another backend, a torn row)."""
    if answer.startswith(CANNOT_FIND_BACKEND):
        return None
    check_servers_state(answer)
    check_last_row(answer)
    lines = [line for line in answer.split("\n") if line]
    if "".join(f"{line}\n" for line in lines[:2]) != head:
        raise UnexpectedAnswer(f"'show servers state {backend}' has another header")
    rows = lines[2:]
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
