"""The panic's backstop (synapse.haproxy.panic_poll): which backends ``show stat -1 2 -1``
says are DOWN, and which of them are newly so (an adopted HAProxy's alert never reaches
synapse: before, its backends never panicked)."""

from __future__ import annotations

from synapse.haproxy.panic_poll import backends_down, newly_down

HEADER = "# pxname,svname,qcur,status,chkfail,chkdown,lastchg,\n"


def stat(*rows: tuple[str, str, str, int]) -> str:
    lines = [f"{px},{sv},0,{status},,{chkdown},3," for px, sv, status, chkdown in rows]
    return HEADER + "\n".join(lines) + "\n\n"


def test_only_backend_lines_that_are_down() -> None:
    text = stat(("web", "BACKEND", "DOWN", 2), ("api", "BACKEND", "UP", 1),
                ("web", "a", "DOWN", 1), ("shop_zone_az1", "BACKEND", "DOWN", 0))  # fmt: skip
    assert backends_down(text) == {"web": 2, "shop_zone_az1": 0}


def test_an_empty_or_odd_answer_is_no_backend() -> None:
    assert backends_down("") == {}
    assert backends_down(HEADER + "web,BACKEND,0,DOWN,,x,3,\n") == {"web": 0}


def test_newly_down_and_down_again() -> None:
    assert newly_down({}, {"web": 1, "api": 4}) == ["api", "web"]  # (the first read: all)
    assert newly_down({"web": 1}, {"web": 1}) == []  # (still DOWN: the panic was told)
    assert newly_down({"web": 1}, {"web": 2}) == ["web"]  # (UP and DOWN again between reads)
    assert newly_down({"web": 1}, {}) == []
