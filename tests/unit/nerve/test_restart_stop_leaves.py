"""nerve.restart_stop: which registrations a restart stop (SIGUSR2) leaves for the next
nerve: only one standing for a healthy service; anything else is withdrawn as in a stop."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from nerve.restart_stop import at_most, leaves, left_by, restart_despite, withdraws


def service(wanted: bool = True, **reporter: Any) -> Any:
    fields = dict(
        desired=True,
        registered=True,
        holding=False,
        uncertain=False,
        successor=None,
        goes_by_itself=True,
    )
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
        {"goes_by_itself": False},  # a persistent znode: nothing would ever remove it
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


def test_a_held_leftover_is_left_untouched_by_a_restart_stop_alone() -> None:
    """A previous run's registration still held (checks undecided) stays on a restart
    stop, as a kill -9 would leave it (its own session / lease bounds it); a stop
    withdraws it, and anything else not left is withdrawn either way."""
    held = service(holding=True).reporter
    assert not withdraws(held, [], restart=True)
    assert withdraws(held, [], restart=False)
    failing = service(False).reporter
    assert withdraws(failing, [], restart=True)
    healthy = service().reporter
    assert not withdraws(healthy, [healthy], restart=True)


def test_a_reload_in_flight_turns_the_restart_stop_into_a_full_withdraw() -> None:
    """A SIGHUP reload not finished may remove a service still among the daemon's: it
    must not be left registered for a next nerve that no longer has it."""
    running = SimpleNamespace(done=lambda: False)
    finished = SimpleNamespace(done=lambda: True)
    assert not restart_despite([running, finished])  # type: ignore[list-item]
    assert restart_despite([finished])  # type: ignore[list-item]
    assert restart_despite([])


def test_a_persistent_znode_does_not_expire_by_itself() -> None:
    from nerve.reporters.zookeeper import ZooKeeperReporter

    persistent = ZooKeeperReporter.__new__(ZooKeeperReporter)
    persistent.ephemeral = False  # (node_type persistent)
    ephemeral = ZooKeeperReporter.__new__(ZooKeeperReporter)
    ephemeral.ephemeral = True
    assert (persistent.goes_by_itself, ephemeral.goes_by_itself) == (False, True)
