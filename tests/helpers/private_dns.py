"""A command run with DNS of its own: a private mount and network namespace (``unshare
-rmn``: no root needed, nothing outside sees it) whose /etc/resolv.conf names a server that
reads every query and never answers (``silent_dns``: glibc waits 5 s per try, as behind a
resolver outage that drops packets) and whose /etc/hosts is a file the test edits in place
(a name that moves). Everything the command talks to runs inside it (its loopback)."""

from __future__ import annotations

import shlex
import shutil
import socket
import subprocess
import threading
from pathlib import Path

import pytest

SILENT_NAMESERVER = "127.0.0.53"


def require_private_dns() -> None:
    """Skip the test when this host cannot make private mount and network namespaces
    (user namespaces off, a container without CAP_SYS_ADMIN, no unshare(1) or ip(8))."""
    missing = [tool for tool in ("unshare", "ip") if shutil.which(tool) is None]
    script = "ip link set lo up && mount --bind /etc/hosts /etc/hosts"
    argv = ["unshare", "-rmn", "sh", "-c", script]
    probe = None if missing else subprocess.run(argv, capture_output=True, text=True, timeout=10)
    if probe is None or probe.returncode != 0:
        why = f"missing {missing}" if probe is None else probe.stderr.strip()[:200]
        pytest.skip(f"no private namespaces here: {why}")


def private_dns(argv: list[str], directory: Path, hosts: str) -> tuple[list[str], Path]:
    """``argv`` run with the silent resolver and ``hosts`` as /etc/hosts (the file returned:
    rewrite it in place, never rename over it, to change a name)."""
    resolv, hosts_file = directory / "resolv.conf", directory / "hosts"
    resolv.write_text(f"nameserver {SILENT_NAMESERVER}\n")
    hosts_file.write_text(hosts)
    mounts = " && ".join(
        ["ip link set lo up"]
        + [
            f"mount --bind {shlex.quote(str(f))} {t}"
            for f, t in ((resolv, "/etc/resolv.conf"), (hosts_file, "/etc/hosts"))
        ]
    )
    return ["unshare", "-rmn", "sh", "-c", f'{mounts} && exec "$0" "$@"', *argv], hosts_file


def silent_dns() -> socket.socket:
    """The never-answering nameserver (call it inside the namespace): it reads queries on a
    daemon thread until the process ends."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((SILENT_NAMESERVER, 53))

    def drain() -> None:
        while True:
            sock.recvfrom(4096)

    threading.Thread(target=drain, daemon=True).start()
    return sock
