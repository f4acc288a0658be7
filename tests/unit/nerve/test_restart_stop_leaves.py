"""nerve.restart_stop: which registrations a restart stop (SIGUSR2) leaves for the next
nerve: only one standing for a healthy service; anything else is withdrawn as in a stop."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from nerve.restart_stop import at_most, leaves, left_by, restart_despite, withdraws
from smartstack.logs import _FIELDS
from smartstack.zk_session import SessionTimeout


def zk_conn(asked_s: float, granted_ms: int | None = None) -> Any:
    session = SessionTimeout(asked_s, "zk:2181")
    session.granted(granted_ms)
    return SimpleNamespace(session=session)


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
    zk = SimpleNamespace(kind="zookeeper", conn=zk_conn(12.0, 12000))
    assert at_most(zk) == 12.0  # type: ignore[arg-type]
    etcd = SimpleNamespace(kind="etcd", keeper=SimpleNamespace(ttl=5))
    assert at_most(etcd) == 5.0  # type: ignore[arg-type]


def test_a_left_znode_lasts_the_session_the_server_granted_not_the_one_asked() -> None:
    """A server bounds the session (maxSessionTimeout 4 s, 30 s asked): the node left goes
    4 s later, and the restart stop said 30 s."""
    assert at_most(SimpleNamespace(kind="zookeeper", conn=zk_conn(30.0, 4000))) == 4.0  # type: ignore[arg-type]
    assert at_most(SimpleNamespace(kind="zookeeper", conn=zk_conn(30.0))) == 30.0  # type: ignore[arg-type]


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


def test_only_a_reload_applying_changes_turns_the_restart_stop_into_a_full_withdraw() -> None:
    """A reload applying a plan, cut half-way, may have removed a service still among the
    daemon's: not left for a next nerve that no longer has it. One that changes nothing,
    or has not begun to (waiting, reading the file: 0), does not withdraw (review s32)."""
    assert not restart_despite(3)
    assert restart_despite(0)


def test_a_persistent_znode_does_not_expire_by_itself() -> None:
    from nerve.reporters.zookeeper import ZooKeeperReporter

    persistent = ZooKeeperReporter.__new__(ZooKeeperReporter)
    persistent.ephemeral = False  # (node_type persistent)
    ephemeral = ZooKeeperReporter.__new__(ZooKeeperReporter)
    ephemeral.ephemeral = True
    assert (persistent.goes_by_itself, ephemeral.goes_by_itself) == (False, True)


def test_a_zookeeper_session_too_short_for_the_takeover_is_warned_about(caplog) -> None:
    """ZooKeeper cannot renew another's session: the next nerve must start and pass `rise`
    checks within the session timeout, else the left node expires first (a gap)."""
    from nerve.restart_stop import log_left

    def zk_service(name: str, asked_s: float, granted_ms: int, rise: int, interval: float) -> Any:
        reporter = SimpleNamespace(
            kind="zookeeper", service=name, conn=zk_conn(asked_s, granted_ms)
        )
        trackers = {"http": SimpleNamespace(rise=rise)}
        return SimpleNamespace(name=name, reporter=reporter, check_interval=interval,
                               state=SimpleNamespace(trackers=trackers))  # fmt: skip

    short = zk_service("short", 4.0, 4000, rise=3, interval=1.0)  # needs 3 s + 2 s of start
    fine = zk_service("fine", 10.0, 10000, rise=3, interval=1.0)
    bounded = zk_service("bounded", 30.0, 4000, rise=3, interval=1.0)  # a server's max: 4 s
    services = [short, fine, bounded]
    with caplog.at_level("INFO", logger="nerve"):
        log_left([s.reporter for s in services], services)
    warned = [r for r in caplog.records if r.getMessage() == "restart_stop_session_short"]
    assert [getattr(r, _FIELDS)["services"] for r in warned] == ["bounded,short"]
