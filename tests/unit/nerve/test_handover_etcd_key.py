"""A service replaced while its hand-over waits (a SIGHUP moved it to an etcd not up yet, a
second SIGHUP changed its weight): its withdrawal, retried until that etcd answers, must
not delete the key the later service has put there (the weight is not part of the key).
Fakes only: one etcd's keys, and the reporters' successors as the reloads set them."""

from __future__ import annotations

import logging
from dataclasses import replace

import pytest
from test_etcd_leftover import OURS, REGISTRATION, FakeEtcd

from nerve.handover import Predecessor, pass_on
from nerve.reporters.etcd import EtcdReporter
from nerve.reporters.etcd_lease import LeaseKeeper
from nerve.service import Service
from smartstack.logs import _FIELDS
from smartstack.record import encode


def service_on(etcd: FakeEtcd, path: str, weight: int) -> Service:
    keeper = LeaseKeeper(etcd, 2)  # type: ignore[arg-type]
    reporter = EtcdReporter("web", replace(REGISTRATION, weight=weight), keeper, path)
    return Service("web", [], [], reporter, initially_up=True)


def deleted(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        getattr(r, _FIELDS)["key"] for r in caplog.records if r.getMessage() == "etcd_key_deleted"
    ]


async def test_a_replaced_waiting_service_leaves_the_key_its_replacement_put() -> None:
    etcd_a, etcd_b = FakeEtcd(), FakeEtcd()
    first = service_on(etcd_a, "/a/web", 1)  # registered on A
    moved = service_on(etcd_b, "/b/web", 2)  # SIGHUP 1: B down, the hand-over waits
    predecessor = Predecessor(first.reporter, moved)  # (as hand_over sets them)
    moved.predecessor, first.reporter.successor = predecessor, moved.reporter
    weighted = service_on(etcd_b, "/b/web", 3)  # SIGHUP 2: only the weight changed
    pass_on(moved, weighted)
    mine: EtcdReporter = moved.reporter  # type: ignore[assignment]
    theirs: EtcdReporter = weighted.reporter  # type: ignore[assignment]
    assert mine.key == theirs.key and mine.revision is None  # never put (B was down)
    key = theirs.key.encode()
    await etcd_b.put(key, theirs.data, lease=OURS)  # B up: the weight-3 service puts it
    assert await mine._withdraw()  # retried while the old registration on A waits
    assert etcd_b.keys[key].value == encode(theirs.registration)  # (was: deleted)
    first.reporter.successor = theirs  # A's retired now (hand_over): retried again
    assert await mine._withdraw()
    assert etcd_b.keys[key].value == encode(theirs.registration)


async def test_a_key_no_successor_writes_is_deleted_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A put whose answer was lost (revision unknown), its key no later service's: it is
    deleted, and the log says so (was: deleted silently, as never registered)."""
    caplog.set_level(logging.INFO)
    etcd_a, etcd_b = FakeEtcd(), FakeEtcd()
    first = service_on(etcd_a, "/a/web", 1)
    moved = service_on(etcd_b, "/b/web", 2)
    moved.reporter.successor = first.reporter
    mine: EtcdReporter = moved.reporter  # type: ignore[assignment]
    await etcd_b.put(mine.key.encode(), mine.data, lease=OURS)  # its answer lost
    assert not mine.registered and mine.revision is None
    assert await mine._withdraw()
    assert mine.key.encode() not in etcd_b.keys and deleted(caplog) == [mine.key]
    assert await mine._withdraw()  # nothing left: nothing logged
    assert deleted(caplog) == [mine.key]
