"""A command run with some directories read-only, as a failing disk the kernel remounted
read-only looks to it (a read-only tmpfs over each, empty or holding a copy of its files),
or as a deployment's read-only bind mount does, in a private mount namespace
(``unshare -rm``: no root needed, nothing outside the command sees the mounts)."""

from __future__ import annotations

import shlex
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

import pytest


def require_private_mounts() -> None:
    """Skip the test when this host cannot make a private mount namespace."""
    if shutil.which("unshare") is None:
        pytest.skip("no unshare(1): cannot mount a read-only directory")
    probe = subprocess.run(
        ["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o ro tmpfs /mnt"],
        capture_output=True,
        text=True,
        timeout=10,
    )
    if probe.returncode != 0:  # (user namespaces off, a container without CAP_SYS_ADMIN)
        pytest.skip(f"no private mount namespace here: {probe.stderr.strip()[:200]}")


def read_only(
    argv: list[str],
    keep: Sequence[Path] = (),
    empty: Sequence[Path] = (),
    bind: Sequence[Path] = (),
) -> list[str]:
    """``argv`` with ``keep`` read-only filesystems holding a copy of their files (a tmpfs
    remounted read-only: its superblock read-only, as the kernel's errors=remount-ro
    leaves a disk), a read-only tmpfs over each of ``empty``, and ``bind`` bind-mounted
    read-only over themselves (a read-only mount of a writable filesystem: a deployment's,
    as a container's read-only root); the command is exec'd (its pid is the one started)."""
    mounts = []
    for d in (shlex.quote(str(path)) for path in keep):
        copy = f'T=$(mktemp -d) && mount -t tmpfs tmpfs "$T" && cp -a {d}/. "$T"/'
        mounts.append(f'{copy} && mount --move "$T" {d} && rmdir "$T" && mount -o remount,ro {d}')
    mounts += [f"mount -t tmpfs -o ro tmpfs {shlex.quote(str(d))}" for d in empty]
    mounts += [f"mount --bind {shlex.quote(str(d))} {shlex.quote(str(d))} && "
               f"mount -o remount,bind,ro {shlex.quote(str(d))}" for d in bind]  # fmt: skip
    script = " && ".join([*mounts, 'exec "$0" "$@"'])
    return ["unshare", "-rm", "sh", "-c", script, *argv]
