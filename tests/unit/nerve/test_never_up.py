"""A service that never came up since its start or reload (a SIGHUP gave it a wrong port):
no transition, so before this nothing said why. Once a check has failed `fall` times in a
row nerve warns `service_not_registering` with the check's error, once (scripted checks, a
reporter that records)."""

from __future__ import annotations

import pytest
from nerve_fakes import Recorder

from nerve.checks.base import BaseCheck, CheckFailed, Passed
from nerve.service import Service
from nerve.state import NeverUp
from smartstack.logs import _FIELDS as FIELDS


class Scripted(BaseCheck):
    type = "scripted"

    def __init__(self, results: list[bool]) -> None:
        super().__init__("tcp-127.0.0.1:8081", 1.0)
        self.results = results

    async def probe(self) -> Passed:
        if self.results.pop(0):
            return Passed("connected")
        raise CheckFailed("Connection refused 127.0.0.1:8081")


def told(caplog: pytest.LogCaptureFixture) -> list[dict[str, object]]:
    return [
        vars(r).get(FIELDS, {})
        for r in caplog.records
        if r.getMessage() == "service_not_registering"
    ]


async def rounds(service: Service, n: int) -> None:
    for _ in range(n):
        await service.run_round()


async def test_a_service_that_never_comes_up_says_why_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    service = Service("web", [Scripted([False] * 8)], [(2, 3)], Recorder())
    await rounds(service, 2)
    assert told(caplog) == []  # under fall: a service may take a moment to start
    await rounds(service, 6)
    assert told(caplog) == [
        {
            "service": "web",
            "check": "tcp-127.0.0.1:8081",
            "error": "Connection refused 127.0.0.1:8081",
            "failures": 3,
        }
    ]
    [record] = [r for r in caplog.records if r.getMessage() == "service_not_registering"]
    assert record.levelname == "WARNING"
    status = service.status()
    assert status["registered"] is False
    assert status["not_registering"]["error"] == "Connection refused 127.0.0.1:8081"


async def test_a_service_that_came_up_says_nothing_more(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Up, then down: service_withdrawn gives the reason; no second warning.
    service = Service("web", [Scripted([True] + [False] * 6)], [(1, 2)], Recorder())
    await rounds(service, 7)
    assert told(caplog) == []
    assert service.status()["not_registering"] is None
    assert "service_withdrawn" in [r.getMessage() for r in caplog.records]


def test_failures_count_in_a_row_and_not_in_maintenance() -> None:
    watch = NeverUp()
    args = dict(fall=3, registered=False)
    assert watch.observe("c", False, "refused", paused=False, **args) is None
    assert watch.observe("c", True, "ok", paused=False, **args) is None  # the row is broken
    assert watch.observe("c", False, "refused", paused=False, **args) is None
    assert watch.observe("c", False, "refused", paused=True, **args) is None  # operator's
    assert watch.observe("c", False, "refused", paused=False, **args) is None
    assert watch.observe("c", False, "refused", paused=False, **args) is None
    assert watch.observe("c", False, "refused", paused=False, **args) == {
        "check": "c", "error": "refused", "failures": 3,
    }  # fmt: skip
    assert watch.observe("c", False, "refused", paused=False, **args) is None  # once


def test_a_service_registered_at_its_reload_is_not_watched() -> None:
    watch = NeverUp(armed=False)
    for _ in range(5):
        assert watch.observe("c", False, "refused", 1, registered=False, paused=False) is None
