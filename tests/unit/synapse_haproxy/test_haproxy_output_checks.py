"""HAProxy's health-check transitions relayed by a managed HAProxy: the first of a server
(or backend) in a window at once, its repeats held back and counted, its current state
relayed at the summary; an old worker's "Proxy X stopped" lines counted, not relayed."""

from __future__ import annotations

from synapse.haproxy import output_checks
from synapse.haproxy.output import notice_kind
from synapse.haproxy.output_checks import Transitions, backend_key, named_server, transition


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


def test_a_real_outage_after_a_bounce_is_relayed_once_it_settles() -> None:
    # review s27 A: DOWN, UP relayed; the real DOWN 0.5 s later (and its backend's second
    # alert) held: relayed SETTLE s later at their own level, not at the window's end
    checks = Transitions(window=30.0, settle=5.0)
    lines = [_down(), NO_SERVER, _up(), _down(), NO_SERVER]
    times = [0.0, 0.0, 0.1, 0.5, 0.5]
    assert [_offer(checks, x, t) for x, t in zip(lines, times, strict=True)] == [True] * 3 + [
        False
    ] * 2
    assert checks.next_settle() == 5.5
    assert checks.settled(5.4) == []
    assert checks.settled(5.5) == [(_down(), 5.0), (NO_SERVER, 5.0)]  # HAProxy's order
    assert checks.next_settle() is None
    current, fields = checks.take(30.0)
    assert current == []  # said already
    assert fields is not None and fields["kinds"] == {"check_down": 1, "no_server": 1}


def test_a_flap_never_settles_and_a_server_coming_up_drops_its_backends_alert() -> None:
    checks = Transitions(window=30.0, settle=5.0)
    for i in range(20):  # a transition a second, the alert with each DOWN
        for line in [_down(), NO_SERVER] if i % 2 == 0 else [_up()]:
            _offer(checks, line, float(i))
        assert checks.settled(float(i)) == []
    # it stays UP: the server's state is the one last relayed, its backend has a server
    assert checks.settled(100.0) == []
    assert checks.take(100.0)[0] == []


def test_a_backends_alert_held_after_its_servers_last_up_is_relayed_when_it_settles() -> None:
    # review s27 B: synapse's own maintenance empties the backend after a bounce
    checks = Transitions(window=30.0, settle=5.0)
    for line, at in [(_down(), 0.0), (NO_SERVER, 0.0), (_up(), 0.1), (NO_SERVER, 0.5)]:
        _offer(checks, line, at)
    _, fields = checks.take(1.0)  # a summary before it settles leaves it held
    assert fields is not None and fields["kinds"] == {"no_server": 1}
    assert checks.settled(5.5) == [(NO_SERVER, 5.0)]
    # a server of it leaving maintenance: the held alert is no longer true
    _offer(checks, NO_SERVER, 6.0)
    checks.came_up("svc1/b")
    assert checks.settled(20.0) == []


def test_a_server_put_in_maintenance_has_its_held_line_dropped() -> None:
    # review s27 C: a held DOWN of a server deleted since is not its "current state"
    checks = Transitions(window=30.0, settle=5.0)
    assert [_offer(checks, x, 0.1 * i) for i, x in enumerate([_down(), _up(), _down()])] == [
        True,
        True,
        False,
    ]
    checks.forget("svc1/a")
    assert checks.settled(10.0) == []
    current, fields = checks.take(10.0)
    assert current == [] and fields is not None and fields["kinds"] == {"check_down": 1}
    # back from maintenance, flapping again: its next held line is news
    for i, line in enumerate([_up(), _down()]):
        assert not _offer(checks, line, 11.0 + i)
    assert checks.settled(17.0) == [(_down(), 5.0)]


def test_the_server_a_notice_names() -> None:
    assert (
        named_server("[WARNING]  (7) : Server be/s is going DOWN for maintenance. 0 ac") == "be/s"
    )
    cli = "[WARNING]  (7) : CLI : Backup Server be/s_1:80 is UP/READY (leaving forced maint"
    assert named_server(cli) == "be/s_1:80"
    added = "[NOTICE]   (7) : CLI : 'server be/c_127.0.0.1:21003' : New server registered."
    assert named_server(added) == "be/c_127.0.0.1:21003"
    assert named_server("[NOTICE]   (7) : Server deleted.") is None
    assert backend_key("be/s") == "backend be"
