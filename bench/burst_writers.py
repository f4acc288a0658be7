"""The burst's writers: a thousand changes as many nerves send them, not as one client.

A burst of 1,000 membership changes comes from many nerves, each on its own session
(ZooKeeper) or its own connection (etcd), each sending its own requests. One Python
client sending all of them one after the other times the writer, not the registry: a
plain kazoo client handles one request per turn of its connection thread (~0.8 ms a
request here, ~810 ms of the sixth round's 1,055 ms burst), and one etcd transaction
of 1,000 operations is a single revision no fleet of nerves would produce.

So the changes are dealt round robin to ``WRITERS`` writers, and every writer sends its
share at once, pipelined on its own connection:
- ZooKeeper: each writer is a session made as nerve makes its own
  (smartstack.zookeeper: kazoo with the inline handler and the bulk connection); its
  deletes and creates are async requests, all in flight together;
- etcd: each writer is a gRPC client (aetcd, as nerve and synapse use), one put or delete
  per change, all in flight at once.

Everything is connected before the clock starts; ``write`` returns when every change
is acknowledged.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Coroutine, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol, TypeVar

import aetcd
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
        # Each warm-up job waits for all the others, so every thread exists (jobs that
        # return at once would be run by the first few threads).
        everyone = threading.Barrier(writers)
        list(self._pool.map(lambda _: everyone.wait(timeout=30), range(writers)))

    def run(self, job: Callable[[int], T]) -> list[T]:
        return list(self._pool.map(job, range(self.writers)))

    def close(self) -> None:
        self._pool.shutdown(wait=True)


class ZkBurstWriter:
    """``WRITERS`` ZooKeeper sessions, each pipelining its share of a burst."""

    def __init__(self, hosts: str, name: Callable[[str, Registration], str]) -> None:
        self._name = name
        self.clients: list[KazooClient] = []
        try:
            for _ in range(WRITERS):
                self.clients.append(self._client(hosts))
            self._fan = _Fan(WRITERS, "bench-zk-writer")
        except BaseException:  # no session of a failed start outlives it
            self._close_clients()
            raise

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
        self._close_clients()

    def _close_clients(self) -> None:
        for client in self.clients:
            with contextlib.suppress(Exception):
                client.stop()
                client.close()


class EtcdBurstWriter:
    """``WRITERS`` gRPC clients (aetcd, what synapse and nerve use), each sending its share
    of a burst at once, every change its own put or delete, all in flight together (HTTP/2
    multiplexes them): the etcd side of the ZooKeeper writer's pipelined sessions. They run
    on an event loop in a thread of their own, started and connected before the clock."""

    def __init__(self, port: int, key: Callable[[str, Registration], str]) -> None:
        self._key = key
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="bench-etcd-writer", daemon=True
        )
        self._thread.start()
        self.clients: list[aetcd.Client] = self._run(self._connect(port))

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=120)

    @staticmethod
    async def _connect(port: int) -> list[aetcd.Client]:
        clients = [aetcd.Client(host="127.0.0.1", port=port) for _ in range(WRITERS)]
        for client in clients:
            await client.connect()
            await client.get(b"/bench-burst-warm-up")  # the channel up before the clock
        return clients

    def write(self, adds: list[Add], removes: list[Handle]) -> list[Handle]:
        """Every change its own request; returns the written keys, in order."""
        keys = [self._key(p, r) for p, r in adds]
        puts = [(k, r) for k, (_, r) in zip(keys, adds, strict=True)]
        put_shares, remove_shares = deal(puts, WRITERS), deal(removes, WRITERS)

        async def one(i: int) -> None:
            client = self.clients[i]
            await asyncio.gather(
                *(client.delete(h.encode()) for h in remove_shares[i]),
                *(client.put(k.encode(), encode(r)) for k, r in put_shares[i]),
            )

        async def everyone() -> None:
            await asyncio.gather(*(one(i) for i in range(WRITERS)))

        self._run(everyone())
        return keys

    def close(self) -> None:
        async def close_all() -> None:
            for client in self.clients:
                with contextlib.suppress(Exception):
                    await client.close()

        with contextlib.suppress(Exception):
            self._run(close_all())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()
