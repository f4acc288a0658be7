"""The demo's zone act: which Set-Cookie answers belong to a step (no process needed)."""

from __future__ import annotations

from testbed.demo_client import Sample
from testbed.demo_zones import set_cookie_lines


def test_an_answer_after_the_event_counts_even_if_its_request_was_sent_before() -> None:
    # CI on 7f777f4: a request with SRVZONE=az1 sent just before az1's servers stopped was
    # retried by HAProxy in az2 and answered after; judged by its send time it was missed.
    before = Sample(9.9, "az1-1", {"SRVZONE": "az1"}, None, answered=9.95)
    straddling = Sample(9.99, "az2-1", {"SRVZONE": "az1"}, "SRVZONE=az2; Path=/", answered=10.02)
    later = Sample(10.1, "az2-2", {"SRVZONE": "az2"}, None, answered=10.12)
    lines = set_cookie_lines("new client", [before, straddling, later], {"SRVZONE": "az2"}, 10.0)
    assert lines == [
        "new client: cookie az1, answered by az2-1, 0.02 s in: Set-Cookie: SRVZONE=az2; Path=/"
    ]


def test_no_answer_set_a_cookie_in_the_step() -> None:
    earlier = Sample(1.0, "az1-1", {}, "SRVZONE=az1; Path=/", answered=1.01)
    lines = set_cookie_lines("new client", [earlier], {"SRVZONE": "az1"}, 5.0)
    assert lines == ["new client: no Set-Cookie in this step, it keeps SRVZONE=az1"]
