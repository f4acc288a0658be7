"""The ``_getsocks`` transfer of synapse.haproxy.getsocks, both sides, over a socketpair."""

from __future__ import annotations

import array
import os
import socket
import threading

import pytest

from synapse.haproxy.getsocks import (
    COUNT,
    MAX_SEND_FD,
    Held,
    TransferError,
    _descriptions,
    send,
    transfer,
)


def _info(interface: bytes = b"") -> bytes:
    return b"\x00" + bytes([len(interface)]) + interface + b"\x00" * 4


def test_descriptions_are_split_by_their_length_bytes() -> None:
    data = _info() + _info(b"eth0") + b"\x02ns" + _info()[1:]
    assert _descriptions(data, 3) == [_info(), _info(b"eth0"), b"\x02ns" + _info()[1:]]
    with pytest.raises(TransferError, match="cut short"):
        _descriptions(data[:-1], 3)


def test_more_sockets_than_a_batch_go_both_ways_with_their_descriptions() -> None:
    """synapse's answer (send) read by the client HAProxy uses (transfer): 300 sockets,
    two batches, each acknowledged; every received descriptor is the very socket sent."""
    pairs = [socket.socketpair() for _ in range(MAX_SEND_FD + 47)]
    held = [Held(a, _info(f"if{i}".encode())) for i, (a, _b) in enumerate(pairs)]
    server, client = socket.socketpair()
    answering = threading.Thread(target=send, args=(server, held), daemon=True)
    answering.start()
    client.settimeout(5)
    received = transfer(client)
    answering.join(5)
    assert [info for _fd, info in received] == [h.info for h in held]
    for (fd, _), (_a, b) in zip(received, pairs, strict=True):
        b.sendall(b"x")
        assert os.read(fd, 1) == b"x"  # the same socket as the one held
        os.close(fd)
    for a, b in pairs:
        a.close()
        b.close()
    server.close()
    client.close()


def test_a_refusal_is_an_error_and_leaves_nothing_open() -> None:
    server, client = socket.socketpair()
    server.sendall(b"Permission denied\n")
    client.settimeout(5)
    with pytest.raises(TransferError, match="refused"):
        transfer(client)
    assert server.recv(64) == b"_getsocks\n"


def test_an_answer_cut_short_closes_what_it_received() -> None:
    server, client = socket.socketpair()
    kept, peer = socket.socketpair()
    server.sendall(COUNT.pack(2))
    server.sendmsg(
        [_info()], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [kept.fileno()]))]
    )
    server.shutdown(socket.SHUT_WR)
    client.settimeout(5)
    before = set(os.listdir("/proc/self/fd"))
    with pytest.raises(TransferError, match="1 of 2"):
        transfer(client)
    assert set(os.listdir("/proc/self/fd")) <= before
    for sock in (server, client, kept, peer):
        sock.close()


def test_send_answers_only_getsocks() -> None:
    server, client = socket.socketpair()
    client.sendall(b"show info\n")
    with pytest.raises(TransferError, match="not a _getsocks request"):
        send(server, [])
    server.close()
    client.close()
