"""nerve.restart_stop: which registrations a restart stop (SIGUSR2) leaves for the next
nerve: only one standing for a healthy service; anything else is withdrawn as in a stop."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from nerve.restart_stop import at_most, leaves, left_by


def service(wanted: bool = True, **reporter: Any) -> Any:
    fields = dict(desired=True, registered=True, holding=False, uncertain=False, successor=None)
    fields.update(reporter)
    return SimpleNamespace(state=SimpleNamespace(wanted=wanted), reporter=SimpleNamespace(**fields))


def test_a_healthy_registered_service_is_left() -> None:
    assert leaves(service())


@pytest.mark.parametrize(
    "case",
    [
        {"wanted": False},  # failing checks or maintenance
        {"desired": False},  # its withdrawal decided (being written)
        {"registered": False},  # nothing written
        {"holding": True},  # a previous run's registration, not decided yet
        {"uncertain": True},  # its last write's outcome unknown
        {"successor": object()},  # a reload is replacing it
    ],
)
def test_anything_else_is_withdrawn(case: dict[str, Any]) -> None:
    wanted = case.pop("wanted", True)
    assert not leaves(service(wanted, **case))


def test_a_plain_stop_leaves_nothing() -> None:
    assert left_by([service()], restart=False) == []
    healthy = service()
    assert left_by([healthy, service(False)], restart=True) == [healthy.reporter]


def test_how_long_a_left_registration_lasts_without_a_successor() -> None:
    client = SimpleNamespace(_session_timeout=12000)  # ms, as negotiated with the server
    zk = SimpleNamespace(kind="zookeeper", conn=SimpleNamespace(client=client))
    assert at_most(zk) == 12.0  # type: ignore[arg-type]
    etcd = SimpleNamespace(kind="etcd", keeper=SimpleNamespace(ttl=5))
    assert at_most(etcd) == 5.0  # type: ignore[arg-type]
