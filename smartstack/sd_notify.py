"""systemd's readiness notification (sd_notify(3)), without libsystemd.

A Python process cannot handle SIGHUP for its first ~0.1 s (the interpreter's own start,
before ``smartstack.early_signals`` runs), and SIGHUP's default action ends it. Under
``Type=notify`` (examples/systemd) ``systemctl start``/``restart`` returns only once the
daemon sent READY=1, which it does once it has taken SIGHUP over and serves (the admin
server listens): ``systemctl restart nerve && systemctl reload nerve`` no longer reaches
the interpreter's start. Without ``$NOTIFY_SOCKET`` (not under systemd, or ``Type=exec``)
nothing is sent.
"""

from __future__ import annotations

import logging
import os
import socket

from smartstack.logs import event

ENV = "NOTIFY_SOCKET"
SEND_TIMEOUT_S = 1.0  # systemd reads its socket at once; a stuck one must not hold the daemon

log = logging.getLogger("smartstack.sd_notify")


def ready() -> bool:
    """READY=1 to ``$NOTIFY_SOCKET``; True when it was sent. The variable is removed, as
    sd_notify's ``unset_environment`` does: the processes the daemon starts from now on
    (exec checks, a managed HAProxy, config children) do not speak for its unit."""
    address = os.environ.pop(ENV, "")
    if not address:
        return False
    try:
        send(address, b"READY=1")
    except OSError as exc:
        event(log, "systemd_notify_failed", level=logging.WARNING, socket=address,
              error=f"{type(exc).__name__}: {exc}")  # fmt: skip
        return False
    return True


def send(address: str, message: bytes) -> None:
    """One datagram to a unix socket: a path, or ``@name`` in the abstract namespace."""
    if address.startswith("@"):
        address = "\0" + address[1:]
    elif not address.startswith("/"):  # (vsock: and the like: systemd in a VM)
        raise OSError(f"unsupported notify socket address {address!r}")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        sock.settimeout(SEND_TIMEOUT_S)
        sock.connect(address)
        sock.sendall(message)
