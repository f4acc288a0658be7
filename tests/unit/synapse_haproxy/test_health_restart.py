"""Pure parts of deliverables 1, 2 and 4 of issue 10: the crash restart delay, the state
dump comparison, /health's problems and /health/<service>'s verdict."""

from __future__ import annotations

from synapse.haproxy.health import problems, service_verdict
from synapse.haproxy.managed import restart_delay
from synapse.haproxy.statedump import comparable
from synapse.haproxy.status import HAProxyStatus


def test_the_first_crash_restarts_at_once_and_a_crash_loop_backs_off() -> None:
    assert restart_delay(1, 2.0) == 0.0
    assert [restart_delay(n, 2.0) for n in (2, 3, 4)] == [2.0, 4.0, 8.0]
    assert restart_delay(2, 0.0) == 0.5  # a zero restart_interval still backs off
    assert restart_delay(30, 2.0) == 60.0


DUMP = (
    "1\n# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight "
    "srv_iweight srv_time_since_last_change rest\n"
    "3 web 1 a 127.0.0.1 2 0 1 1 {since} 6 3 4 6 0 0 0 - 8080 - 0 0 - - 0\n"
)


def test_the_state_dump_compares_without_the_seconds_since_the_last_change() -> None:
    assert comparable(DUMP.format(since=5)) == comparable(DUMP.format(since=6))
    down = DUMP.format(since=5).replace(" 2 0 1 1 ", " 0 0 1 1 ")
    assert comparable(down) != comparable(DUMP.format(since=5))


def test_health_problems_name_what_keeps_haproxy_from_the_desired_state() -> None:
    info = HAProxyStatus()
    assert problems(info, None, True, False, True) == []
    assert problems(info, None, None, False, True) == []  # not managed: nothing to run
    assert problems(info, None, True, False, False) == ["no desired state applied yet (starting)"]
    assert problems(info, None, False, False, True) == ["HAProxy is not running"]
    info.refused("haproxy -c: bad line", None, [])
    info.reload_failed("cannot run haproxy: No such file", "start", 1.0)
    found = problems(info, "sock: Connection refused", True, True, True)
    assert [line.split(":")[0] for line in found] == [
        "HAProxy's admin socket does not answer",
        "the config cannot be applied (invalid)",
        "the last reload or start failed",
        "HAProxy still differs from the desired config after reloading it",
    ]


def test_a_service_is_healthy_with_at_least_min_up_servers_up() -> None:
    servers = {"a": "UP", "b": "DOWN", "c": "MAINT"}
    ok, body = service_verdict("web", "web", servers, 1)
    assert ok and body["up"] == 1 and body["servers"] == servers
    assert not service_verdict("web", "web", servers, 2)[0]
    assert service_verdict("web", "web", {}, 0)[0]  # min 0: an empty backend is fine
    ok, body = service_verdict("web", "web", None, 0)
    assert not ok and "does not run this backend" in body["error"]
