"""Which kind of read-only a directory's filesystem is, from /proc/self/mountinfo.

statvfs says "read-only" for two different things (review s29):

- a read-only *mount* of a writable filesystem (``mount --bind -o ro``, ``mount -o ro`` of
  a bind, docker's ``--read-only``, a read-only ``/usr``): mountinfo's per-mount options
  say ``ro``, the superblock's say ``rw``. The deployment chose it: no write will ever
  work there, like a permission;
- a read-only *filesystem* (``mount -o remount,ro``, the kernel's ``errors=remount-ro`` on
  a failing disk): the superblock's options say ``ro``, the host's state of this moment.

A line: ``id parent major:minor root mount_point mount_options [optional fields...] -
fstype source super_options`` (proc(5)); paths escape space, tab, newline and backslash
as ``\\ooo``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

MOUNTINFO = Path("/proc/self/mountinfo")
_ESCAPE = re.compile(r"\\([0-7]{3})")


@dataclass(frozen=True)
class Mount:
    point: str  # where it is mounted (unescaped)
    mount_read_only: bool  # the per-mount option
    super_read_only: bool  # the filesystem's (superblock) option


def _unescape(field: str) -> str:
    return _ESCAPE.sub(lambda match: chr(int(match.group(1), 8)), field)


def parse(text: str) -> list[Mount]:
    """The mounts of a mountinfo text, in its order (a later one at the same point is on
    top); malformed lines are skipped."""
    mounts = []
    for line in text.splitlines():
        head, sep, tail = line.partition(" - ")  # (optional fields end at the lone "-")
        fields, after = head.split(" "), tail.split(" ")
        if not sep or len(fields) < 6 or len(after) < 3:
            continue
        mount_options, super_options = fields[5].split(","), after[2].split(",")
        mounts.append(Mount(_unescape(fields[4]), "ro" in mount_options, "ro" in super_options))
    return mounts


def covering(mounts: list[Mount], path: str) -> Mount | None:
    """The mount ``path`` (absolute, resolved) is on: the longest mount point that is it
    or an ancestor of it, the last listed among equals (mounted over the others)."""
    best: Mount | None = None
    for mount in mounts:
        point = mount.point.rstrip("/") or "/"
        inside = point == "/" or path == point or path.startswith(point + "/")
        if inside and (best is None or len(point) >= len(best.point.rstrip("/") or "/")):
            best = mount
    return best


def read_only_mount_of_writable_fs(directory: Path, text: str | None = None) -> str | None:
    """The mount point when ``directory`` (which exists) is on a read-only mount of a
    writable filesystem (the deployment's), else None, also when mountinfo cannot be read
    or does not say so plainly (the caller keeps statvfs' verdict)."""
    try:
        text = MOUNTINFO.read_text(errors="replace") if text is None else text
    except OSError:
        return None
    mount = covering(parse(text), os.path.realpath(directory))
    if mount is not None and mount.mount_read_only and not mount.super_read_only:
        return mount.point
    return None
