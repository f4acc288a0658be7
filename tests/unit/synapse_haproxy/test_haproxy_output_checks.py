"""HAProxy's health-check transitions relayed by a managed HAProxy: the first of a server
(or backend) in a window at once, its repeats held back and counted, its current state
relayed at the summary; an old worker's "Proxy X stopped" lines counted, not relayed."""

from __future__ import annotations

from synapse.haproxy import output_checks
from synapse.haproxy.output import notice_kind
from synapse.haproxy.output_checks import Transitions, transition


def _down(server: str = "svc1/a") -> str:
    return (
        f"[WARNING]  (14144) : Server {server} is DOWN, reason: Layer7 wrong status, code: "
        '503, info: "Service Unavailable", check duration: 0ms. 0 active and 0 backup '
        "servers left. 0 sessions active, 0 requeued, 0 remaining in queue."
    )


def _up(server: str = "svc1/a") -> str:
    return (
        f"[WARNING]  (14144) : Server {server} is UP, reason: Layer7 check passed, code: 200, "
        "check duration: 0ms. 1 active and 0 backup servers online. 0 sessions requeued, 0 "
        "total in queue."
    )


def _offer(checks: Transitions, line: str, now: float) -> bool:
    found = transition(line)
    assert found is not None, line
    return checks.offer(found, line, now)


NO_SERVER = "[ALERT]    (14144) : backend 'svc1' has no server available!"
STOPPED = "[WARNING]  (14144) : Proxy s{} stopped (cumulated conns: FE: 0, BE: 0)."


def test_transitions_are_recognised_and_nothing_else() -> None:
    assert transition(_down()) == ("check_down", "svc1/a", "DOWN", output_checks.SERVER_BURST)
    assert transition(_up("b/c_127.0.0.1:80")) == ("check_up", "b/c_127.0.0.1:80", "UP", 2)
    backup = "[WARNING]  (7) : Backup Server be/s is DOWN, reason: Layer4 timeout, check"
    assert transition(backup) == ("check_down", "be/s", "DOWN", 2)
    tracked = "[WARNING]  (7) : Server be/s is DOWN via be2/s. 0 active and 0 backup servers"
    assert transition(tracked) == ("check_down", "be/s", "DOWN", 2)
    assert transition(NO_SERVER) == ("no_server", "backend svc1", "", 1)
    for line in (
        "[WARNING]  (7) : CLI : Server be/s is UP/READY (leaving forced maintenance).",
        "[WARNING]  (7) : Server be/s is DOWN (leaving forced maintenance).",
        "[WARNING]  (7) : Server be/s is UP (leaving forced drain).",
        "[WARNING]  (7) : Server be/s is going DOWN for maintenance (DNS timeout status).",
        STOPPED.format(1),
        "[ALERT]    (7) : Current worker (8) exited with code 139 (Segmentation fault)",
        "garbage",
    ):
        assert transition(line) is None, line


def test_an_old_workers_proxy_stopped_lines_are_counted_not_relayed() -> None:
    assert notice_kind(STOPPED.format(7)) == "proxy_stopped"
    assert notice_kind(STOPPED.replace("s{}", "<HTTPCLIENT>")) == "proxy_stopped"
    hard = "[WARNING]  (7) : Proxy s1 hard-stopped (3 remaining conns will be closed)."
    assert notice_kind(hard) is None  # connections cut: relayed


def test_a_server_flapping_is_relayed_twice_per_window_then_counted() -> None:
    checks = Transitions(window=30.0, samples=2)
    now = 1000.0
    relayed = []
    for i in range(20):  # a transition a second: DOWN, UP, DOWN, ...
        line = _down() if i % 2 == 0 else _up()
        if _offer(checks, line, now + i):
            relayed.append(line)
    assert relayed == [_down(), _up()]  # a server going down is seen at once, and back up
    current, fields = checks.take(now + 30)
    # its last transition (UP at +19) is the state last relayed: nothing more to say
    assert current == []
    assert fields == {
        "notices": 18,
        "kinds": {"check_down": 9, "check_up": 9},
        "samples": [_down(), _up()],
        "flapping": 1,
    }
    assert checks.take(now + 31) == ([], None)
    # a new window: relayed at once again
    assert _offer(checks, _down(), now + 30)


def test_a_server_left_down_by_its_held_back_transition_is_relayed_at_the_summary() -> None:
    checks = Transitions(window=30.0)
    lines = [_down(), _up(), _down()]
    assert [_offer(checks, x, 10.0 + i) for i, x in enumerate(lines)] == [True, True, False]
    current, fields = checks.take(40.0)
    assert current == [(_down(), 28.0)]  # held 28 s: the log's last word is DOWN
    assert fields is not None and fields["kinds"] == {"check_down": 1}


def test_a_backends_no_server_alert_once_per_window_servers_and_backends_apart() -> None:
    checks = Transitions(window=10.0)
    assert _offer(checks, NO_SERVER, 0.0)
    assert not _offer(checks, NO_SERVER, 5.0)
    assert _offer(checks, _down("svc1/b"), 5.0)  # another key
    assert _offer(checks, NO_SERVER, 10.0)  # its window ended
    current, fields = checks.take(11.0)
    assert current == []  # an alert has no state to bring up to date
    assert fields is not None and fields["kinds"] == {"no_server": 1}


def test_servers_that_came_and_went_are_forgotten() -> None:
    checks = Transitions(window=10.0)
    for i in range(100):
        _offer(checks, _down(f"be/s{i}"), 0.0)
    _offer(checks, _down("be/x"), 20.0)
    assert list(checks._seen) == ["be/x"]
