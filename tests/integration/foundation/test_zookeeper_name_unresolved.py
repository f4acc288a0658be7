"""ZooKeeper hosts given by a DNS name whose resolver fails (or never answers) when the
connection drops, against a real ZooKeeper: kazoo resolved every name at each connect
cycle and skipped those that did not resolve, so nerve could not reconnect to a healthy
ZooKeeper and its session expired, its ephemeral registration deleted (measured: gone
10.6 s after the drop with a 10 s session). ``smartstack.zk_names`` keeps the addresses
a name last resolved to."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import pytest
from kazoo.client import KazooClient
from kazoo.retry import KazooRetry

from smartstack import kazoo_conn
from testbed.zookeeper import ZooKeeperServer

NAME = "zk-by-name.test"
SESSION_S = 4.0


@pytest.mark.parametrize("resolver", ["fails", "hangs"])
def test_a_resolver_outage_at_a_dropped_connection_keeps_the_session(
    zk: ZooKeeperServer, monkeypatch: pytest.MonkeyPatch, resolver: str
) -> None:
    real, outage, ended = socket.getaddrinfo, threading.Event(), threading.Event()

    def getaddrinfo(host: str, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host != NAME:
            return real(host, port, *args, **kwargs)
        if outage.is_set():
            if resolver == "hangs":  # (glibc: 5 s per try, A and AAAA)
                ended.wait(20)
            raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
        return real("127.0.0.1", port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    client = KazooClient(
        hosts=f"{NAME}:{zk.port}",
        timeout=SESSION_S,
        connection_retry=KazooRetry(max_tries=-1, delay=0.1, backoff=2, max_delay=2.0),
        command_retry=KazooRetry(max_tries=0),
    )
    kazoo_conn.install(client, None)
    observer = KazooClient(hosts=zk.hosts)
    try:
        client.start(timeout=15)
        observer.start(timeout=15)
        path = client.create(f"/by-name-{resolver}", b"", ephemeral=True)
        session = client.client_id[0]
        outage.set()
        client._connection._socket.shutdown(socket.SHUT_RDWR)  # the connection drops
        time.sleep(2 * SESSION_S)
        assert observer.exists(path) is not None, "the session expired: registration gone"
        assert client.connected and client.client_id[0] == session
    finally:
        ended.set()
        for c in (client, observer):
            c.stop()
            c.close()
