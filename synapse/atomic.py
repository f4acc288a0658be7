"""Atomic file replacement: readers see the old file or the new one, never a torn write."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


def write_atomic(path: Path, data: str | bytes, mode: int = 0o644, sync: bool = True) -> None:
    """Write ``data`` (text is written as UTF-8) to a temp file beside ``path``, fsync it
    (unless ``sync`` is False: a file whose loss after a power cut is harmless), and rename
    it into place."""
    tmp = stage(path, data, mode, sync)
    try:
        os.replace(tmp, path)
    except BaseException:
        discard(tmp)
        raise


def stage(path: Path, data: str | bytes, mode: int = 0o644, sync: bool = True) -> str:
    """The first half of ``write_atomic``: ``data`` in a temp file beside ``path``, fsynced;
    returns its name. The caller renames it into place (``os.replace``) or ``discard``s it:
    the slow half can run before whatever decides whether the file is still wanted."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data.encode("utf-8") if isinstance(data, str) else data)
            handle.flush()
            if sync:
                os.fsync(handle.fileno())
        os.chmod(tmp, mode)
    except BaseException:
        discard(tmp)
        raise
    return tmp


def discard(tmp: str) -> None:
    """Remove a staged temp file that is not wanted (or whose rename failed)."""
    with contextlib.suppress(OSError):
        os.unlink(tmp)


def read_text(path: Path) -> str | None:
    """The file's text, or None when it does not exist or cannot be read."""
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None


def read_bytes(path: Path) -> bytes | None:
    """The file's bytes, or None when it does not exist or cannot be read."""
    try:
        return path.read_bytes()
    except OSError:
        return None
