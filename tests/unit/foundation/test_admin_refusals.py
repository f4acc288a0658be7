"""A caller refused again and again (a wrong token in a loop) is one log line per 10 s,
each counting the refusals it stands for; its first refusal is logged at once."""

from __future__ import annotations

import asyncio
import logging

import pytest

from smartstack import admin_refusals
from smartstack import httpserver as web
from smartstack.admin import check_token
from smartstack.admin_refusals import REFUSED_KEYS, REFUSED_LINE_S, Refusals


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def refused(
    refusals: Refusals, caplog: pytest.LogCaptureFixture, path: str = "/x", route: str = ""
) -> None:
    request = web.Request("POST", path, web.Headers([("Authorization", "Bearer wrong")]),
                          remote="127.0.0.1")  # fmt: skip
    with (
        caplog.at_level(logging.WARNING, logger="smartstack.admin"),
        pytest.raises(web.HTTPUnauthorized),
    ):
        check_token(request, "right", refusals, route or path)


def lines(caplog: pytest.LogCaptureFixture) -> list[dict]:
    return [vars(r)["smartstack_fields"] for r in caplog.records if r.msg == "admin_unauthorized"]


def test_a_loop_with_a_wrong_token_is_one_line_then_one_per_interval_counting(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    refusals = Refusals(clock)
    for _ in range(2_000):  # a second of a client looping
        refused(refusals, caplog)
        clock.now += 0.0005
    assert [line["refused"] for line in lines(caplog)] == [1]
    clock.now += REFUSED_LINE_S
    refused(refusals, caplog)
    [_, second] = lines(caplog)
    assert second["refused"] == 2_000  # 1,999 unlogged + this one


def test_another_route_is_another_caller_and_is_logged_at_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    refusals = Refusals(Clock())
    refused(refusals, caplog, "/maintenance/web", "/maintenance/{service}")
    refused(refusals, caplog, "/maintenance/web", "/maintenance/{service}")
    refused(refusals, caplog, "/zones/az1/evacuate", "/zones/{zone}/evacuate")
    said = [(line["path"], line["route"], line["refused"]) for line in lines(caplog)]
    assert said == [
        ("/maintenance/web", "/maintenance/{service}", 1),
        ("/zones/az1/evacuate", "/zones/{zone}/evacuate", 1),
    ]


def test_paths_tried_under_one_route_are_one_caller(caplog: pytest.LogCaptureFixture) -> None:
    # Before: keyed by path, 3,000 POSTs to /maintenance/w<n> wrote 3,000 lines in 0.9 s.
    clock = Clock()
    refusals = Refusals(clock)
    for n in range(3_000):
        refused(refusals, caplog, f"/maintenance/w{n}", "/maintenance/{service}")
    clock.now += REFUSED_LINE_S
    refusals.flush()
    said = [(line["path"], line["refused"]) for line in lines(caplog)]
    assert said == [("/maintenance/w0", 1), ("/maintenance/w2999", 2_999)]


def test_the_callers_remembered_are_bounded() -> None:
    refusals = Refusals(Clock())
    for n in range(REFUSED_KEYS * 3):
        assert refusals.note(("POST", f"/p{n}", "127.0.0.1")) == 1
    assert len(refusals._callers) <= REFUSED_KEYS


async def test_a_burst_that_stops_is_counted_when_its_period_is_over(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Before: the 1,999 refusals after the first line were said only at that caller's next
    # refusal 10 s on: a burst that stopped left "refused=1" as all the log said of it.
    monkeypatch.setattr(admin_refusals, "REFUSED_LINE_S", 0.05)
    refusals = Refusals()
    for _ in range(50):
        refused(refusals, caplog)
    assert [line["refused"] for line in lines(caplog)] == [1]
    await asyncio.sleep(0.2)
    assert [line["refused"] for line in lines(caplog)] == [1, 49]
    assert refusals.timer is None  # (nothing left unsaid: no timer kept)


def test_callers_with_refusals_unsaid_outlast_many_new_ones(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Before: the 1,000th new (method, path, address), e.g. a loop over /maintenance/<n>,
    # cleared every caller, the unsaid counts of a looping one with them.
    clock = Clock()
    refusals = Refusals(clock)
    for _ in range(5):
        refused(refusals, caplog)
    for n in range(REFUSED_KEYS * 2):
        refusals.note(("POST", f"/maintenance/p{n}", "127.0.0.1"))
    clock.now += REFUSED_LINE_S
    refused(refusals, caplog)
    said = [(line["path"], line["refused"]) for line in lines(caplog)]
    assert said == [("/x", 1), ("/x", 5)]  # (4 unsaid + this one)


def test_the_admin_server_stopping_says_what_is_unsaid(caplog: pytest.LogCaptureFixture) -> None:
    refusals = Refusals(Clock())
    for _ in range(3):
        refused(refusals, caplog)
    refusals.flush(final=True)  # (AdminServer.stop: the count not lost with the daemon)
    assert [line["refused"] for line in lines(caplog)] == [1, 2]
