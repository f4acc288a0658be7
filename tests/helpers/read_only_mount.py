"""A command run with some directories read-only, as a failing disk the kernel remounted
read-only looks to it: an empty read-only tmpfs mounted over each (or a read-only bind of
itself, to keep what it holds), in a private mount namespace (``unshare -rm``: no root
needed, nothing outside the command sees the mounts)."""

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


def read_only(argv: list[str], keep: Sequence[Path] = (), empty: Sequence[Path] = ()) -> list[str]:
    """``argv`` with ``keep`` bind-mounted read-only over themselves (their files stay) and
    a read-only tmpfs over each of ``empty``; the command is exec'd (its pid is the one
    started)."""
    mounts = [f"mount --bind {shlex.quote(str(d))} {shlex.quote(str(d))} && "
              f"mount -o remount,bind,ro {shlex.quote(str(d))}" for d in keep]  # fmt: skip
    mounts += [f"mount -t tmpfs -o ro tmpfs {shlex.quote(str(d))}" for d in empty]
    script = " && ".join([*mounts, 'exec "$0" "$@"'])
    return ["unshare", "-rm", "sh", "-c", script, *argv]
