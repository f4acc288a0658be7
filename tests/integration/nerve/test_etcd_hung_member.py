"""A member that hangs (SIGSTOP: a stalled host, a network blackhole; its sockets stay open,
nothing answers) right after it carried nerve's keep-alive: nerve renews the lease through
another member before it expires, so no key of the host is deleted. On both transports."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import aetcd
import pytest
from nerve_testlib import etcd_service, nerve_config, running_nerve, unique_path, until

from nerve.reporters.etcd import EtcdReporter
from testbed.etcd import EtcdCluster
from testbed.process import free_port

TTL = 3  # seconds: keep-alives every 1 s; the old schedule renewed after exactly 3 s


def endpoint_of(client: Any) -> str:
    """Where a client's call went: the gateway's client says it, aetcd's has its address."""
    return getattr(client, "endpoint", None) or f"{client._host}:{client._port}"


@pytest.mark.parametrize("transport", ["json", "grpc"])
async def test_a_member_hanging_right_after_a_keepalive_does_not_cost_the_lease(
    etcd_cluster: EtcdCluster, caplog: pytest.LogCaptureFixture, monkeypatch, transport: str
) -> None:
    caplog.set_level(logging.INFO, logger="nerve.etcd")
    landed: list[tuple[float, str]] = []  # keep-alives etcd answered: when, through whom
    endpoints = etcd_cluster.endpoints
    path, port = unique_path(), free_port()
    key = f"{path}/i-test_127.0.0.1_{port}".encode()
    service = etcd_service(endpoints, path, port, checks=[], etcd_lease_ttl=TTL,
                           etcd_transport=transport)  # fmt: skip
    async with running_nerve(nerve_config({"web": service})) as daemon:
        reporter = daemon.services["web"].reporter
        assert isinstance(reporter, EtcdReporter)
        conn = reporter.keeper.conn
        assert conn.transport == transport
        keepalive = conn.keepalive

        async def keepalive_and_note(client: Any, lease_id: int) -> Any:
            reply = await keepalive(client, lease_id)
            landed.append((time.monotonic(), endpoint_of(client)))
            return reply

        monkeypatch.setattr(conn, "keepalive", keepalive_and_note)
        await until(lambda: reporter.registered, what="registration")
        # A follower: a new leader extends every lease, which would hide the case.
        leader = etcd_cluster.leader_index()
        assert leader is not None
        for _ in range(len(endpoints)):
            if conn.current_endpoint != endpoints[leader]:
                break
            await conn.rotate("test: off the leader")
        victim = conn.current_endpoint
        assert victim != endpoints[leader]
        host, port_text = endpoints[leader].rsplit(":", 1)
        async with aetcd.Client(host=host, port=int(port_text), timeout=2) as client:
            first = await until(lambda: client.get(key), what="the key")
            # Right after a keep-alive landed through the victim.
            seen = len(landed)
            await until(
                lambda: any(where == victim for _, where in landed[seen:]),
                timeout=3 * TTL,
                what="a keep-alive through the follower",
            )
            etcd_cluster.pause_member(endpoints.index(victim))
            paused = time.monotonic()
            try:
                while time.monotonic() < paused + 2 * TTL:  # the lease lasts TTL unrenewed
                    kv = await client.get(key)
                    assert kv is not None, "the key was deleted: the lease expired"
                    assert (kv.lease, kv.create_revision) == (first.lease, first.create_revision), (
                        "the key was deleted and put again under a new lease"
                    )
                    await asyncio.sleep(0.1)
                assert conn.current_endpoint != victim
                renewed = [at - paused for at, where in landed if at > paused]
                assert renewed and renewed[0] < TTL, renewed  # ~2/3 of it: a keep-alive timeout
            finally:
                etcd_cluster.resume_member(endpoints.index(victim))
    assert [r for r in caplog.records if r.getMessage() == "etcd_lease_lost"] == []
