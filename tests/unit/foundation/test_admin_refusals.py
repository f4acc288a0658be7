"""A caller refused again and again (a wrong token in a loop) is one log line per 10 s,
each counting the refusals it stands for; its first refusal is logged at once."""

from __future__ import annotations

import logging

import pytest

from smartstack import httpserver as web
from smartstack.admin import REFUSED_KEYS, REFUSED_LINE_S, Refusals, check_token


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def refused(refusals: Refusals, caplog: pytest.LogCaptureFixture, path: str = "/x") -> None:
    request = web.Request("POST", path, web.Headers([("Authorization", "Bearer wrong")]),
                          remote="127.0.0.1")  # fmt: skip
    with (
        caplog.at_level(logging.WARNING, logger="smartstack.admin"),
        pytest.raises(web.HTTPUnauthorized),
    ):
        check_token(request, "right", refusals)


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


def test_another_path_is_another_caller_and_is_logged_at_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    refusals = Refusals(Clock())
    refused(refusals, caplog, "/maintenance/web")
    refused(refusals, caplog, "/maintenance/web")
    refused(refusals, caplog, "/zones/az1/evacuate")
    said = [(line["path"], line["refused"]) for line in lines(caplog)]
    assert said == [("/maintenance/web", 1), ("/zones/az1/evacuate", 1)]


def test_the_callers_remembered_are_bounded() -> None:
    refusals = Refusals(Clock())
    for n in range(REFUSED_KEYS * 3):
        assert refusals.note(("POST", f"/p{n}", "127.0.0.1")) == 1
    assert len(refusals._callers) <= REFUSED_KEYS
