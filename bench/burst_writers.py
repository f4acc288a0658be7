"""The burst's writers: a thousand changes as many nerves send them, not as one client.

A burst of 1,000 membership changes comes from many nerves, each on its own session
(ZooKeeper) or its own connection (etcd), each sending its own requests. One Python
client sending all of them one after the other times the writer, not the registry: a
plain kazoo client handles one request per turn of its connection thread (~0.8 ms a
request here, ~810 ms of the sixth round's 1,055 ms burst), and one etcd transaction
of 1,000 operations is a single revision no fleet of nerves would produce.

So the changes are dealt round robin to ``WRITERS`` writers, and every writer sends its
share at once from its own thread, pipelined on its own connection:
- ZooKeeper: each writer is a session made as nerve makes its own
  (smartstack.zookeeper: kazoo with the inline handler and the bulk connection); its
  deletes and creates are async requests, all in flight together;
- etcd: each writer is a keep-alive HTTP connection to the JSON gateway, one request per
  change (put or delete-range), one after the other (HTTP/1.1 has no pipelining), as the
  fleet benchmark's etcd writer does (bench.fleet_registry).

Everything is connected before the clock starts; ``write`` returns when every change
is acknowledged.
"""

from __future__ import annotations

import base64
import http.client
import json
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol, TypeVar

from kazoo.client import KazooClient

from smartstack import kazoo_conn
from smartstack.kazoo_inline import InlineHandler
from smartstack.record import Registration, encode

WRITERS = 10  # nerves writing at once (the fleet benchmark's etcd writer: 10 threads)
Handle = str
Add = tuple[str, Registration]  # (the service's path, the record)
T = TypeVar("T")


class BurstWriter(Protocol):
    def write(self, adds: list[Add], removes: list[Handle]) -> list[Handle]: ...
    def close(self) -> None: ...


def deal(items: Sequence[T], writers: int) -> list[list[T]]:
    """Round robin: item k goes to writer k % writers (so services mix in every writer)."""
    return [list(items[i::writers]) for i in range(writers)]


def undeal(shares: Sequence[Sequence[T]], total: int) -> list[T]:
    """The inverse of ``deal``: the items back in their original order."""
    writers = len(shares)
    out: list[T] = []
    for k in range(total):
        out.append(shares[k % writers][k // writers])
    return out


class _Fan:
    """One thread per writer, started before the clock: ``run`` hands every writer its job
    at once and returns their answers when all are done."""

    def __init__(self, writers: int, name: str) -> None:
        self.writers = writers
        self._pool = ThreadPoolExecutor(max_workers=writers, thread_name_prefix=name)
        # Start the threads now (the pool makes them on demand): none is made in the burst.
        list(self._pool.map(lambda _: None, range(writers)))

    def run(self, job: Callable[[int], T]) -> list[T]:
        return list(self._pool.map(job, range(self.writers)))

    def close(self) -> None:
        self._pool.shutdown(wait=True)


class ZkBurstWriter:
    """``WRITERS`` ZooKeeper sessions, each pipelining its share of a burst."""

    def __init__(self, hosts: str, name: Callable[[str, Registration], str]) -> None:
        self._name = name
        self.clients = [self._client(hosts) for _ in range(WRITERS)]
        self._fan = _Fan(WRITERS, "bench-zk-writer")

    @staticmethod
    def _client(hosts: str) -> KazooClient:
        # As smartstack.zookeeper.ZooKeeperConnection makes nerve's client.
        client = KazooClient(hosts=hosts, timeout=30, handler=InlineHandler())
        kazoo_conn.install(client, None)
        client.start(timeout=30)
        return client

    def write(self, adds: list[Add], removes: list[Handle]) -> list[Handle]:
        """Every change its own request; returns the created znodes' paths, in order."""
        add_shares, remove_shares = deal(adds, WRITERS), deal(removes, WRITERS)

        def one(i: int) -> list[Handle]:
            client = self.clients[i]
            deletes = [client.delete_async(h) for h in remove_shares[i]]
            creates = [
                client.create_async(self._name(p, r), encode(r), ephemeral=True, sequence=True)
                for p, r in add_shares[i]
            ]
            for result in deletes:
                result.get(timeout=60)
            return [result.get(timeout=60) for result in creates]

        return undeal(self._fan.run(one), len(adds))

    def close(self) -> None:
        self._fan.close()
        for client in self.clients:
            client.stop()
            client.close()


def _b64(text: str | bytes) -> str:
    return base64.b64encode(text.encode() if isinstance(text, str) else text).decode()


class EtcdBurstWriter:
    """``WRITERS`` keep-alive connections to etcd's JSON gateway, one request per change."""

    def __init__(self, port: int, key: Callable[[str, Registration], str]) -> None:
        self._key = key
        self.conns = [
            http.client.HTTPConnection("127.0.0.1", port, timeout=30) for _ in range(WRITERS)
        ]
        for conn in self.conns:
            conn.connect()  # before the clock
        self._fan = _Fan(WRITERS, "bench-etcd-writer")

    @staticmethod
    def _call(conn: http.client.HTTPConnection, endpoint: str, body: dict[str, Any]) -> None:
        conn.request("POST", f"/v3/{endpoint}", json.dumps(body).encode(),
                     {"Content-Type": "application/json"})  # fmt: skip
        resp = conn.getresponse()
        payload = resp.read()
        if resp.status != 200:
            raise RuntimeError(f"etcd {endpoint} answered {resp.status}: {payload[:300]!r}")

    def write(self, adds: list[Add], removes: list[Handle]) -> list[Handle]:
        """Every change its own request; returns the written keys, in order."""
        keys = [self._key(p, r) for p, r in adds]
        puts = [(k, r) for k, (_, r) in zip(keys, adds, strict=True)]
        put_shares, remove_shares = deal(puts, WRITERS), deal(removes, WRITERS)

        def one(i: int) -> None:
            conn = self.conns[i]
            for handle in remove_shares[i]:
                self._call(conn, "kv/deleterange", {"key": _b64(handle)})
            for key, reg in put_shares[i]:
                self._call(conn, "kv/put", {"key": _b64(key), "value": _b64(encode(reg))})

        self._fan.run(one)
        return keys

    def close(self) -> None:
        self._fan.close()
        for conn in self.conns:
            conn.close()
