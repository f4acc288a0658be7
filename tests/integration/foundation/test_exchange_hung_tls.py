"""An etcd call to a member that completed the TLS handshake and then hangs (SIGSTOP, a
wedged process: the kernel still acknowledges, nothing answers) is cut at the caller's
timeout, not a second later: a hung exchange is aborted, not closed politely (a polite TLS
close waits for the peer's close_notify, which a hung member never sends). With nerve's
shortest lease (2 s, a keep-alive cut at ~0.5 s) that second is what moves the keep-alive
to the next member in time."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import threading
import time
from pathlib import Path

from smartstack.etcd_http import Target, call
from testbed.tls import make_test_pki


def hung_tls_member(pki_dir: Path, stop: threading.Event) -> tuple[int, threading.Thread, list]:
    """A TLS listener in a thread of its own: it completes each handshake, then neither
    reads nor writes again until ``stop``."""
    pki = make_test_pki(pki_dir)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(pki.server_cert, pki.server_key)
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    held: list = [pki]

    def serve() -> None:
        with listener:
            while not stop.is_set():
                with contextlib.suppress(OSError):
                    conn, _ = listener.accept()
                    conn.settimeout(5)
                    held.append(context.wrap_socket(conn, server_side=True))
            for each in held[1:]:
                each.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return listener.getsockname()[1], thread, held


async def test_a_call_to_a_hung_tls_member_ends_at_its_timeout(tmp_path: Path) -> None:
    stop = threading.Event()
    port, thread, held = hung_tls_member(tmp_path / "pki", stop)
    client_side = ssl.create_default_context(cafile=str(held[0].ca_cert))
    target = Target("127.0.0.1", port, client_side, {})
    try:
        began = time.monotonic()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(call(target, "/v3/lease/keepalive", {"ID": "1"}), 0.5)
        took = time.monotonic() - began
        assert len(held) > 1, "the handshake never completed"
        assert took < 0.85, f"the call ended {took:.2f} s after it began (timeout 0.5 s)"
    finally:
        stop.set()
        thread.join(5)
