"""statsd: a real nerve process with Airbnb's ``statsd`` block sends its figures over UDP
to a real listener on 127.0.0.1, every name under the configured prefix."""

from __future__ import annotations

from pathlib import Path

from kazoo.client import KazooClient
from nerve_testlib import children, nerve_config, unique_path, write_config, zk_service

from smartstack.statsd import NULL_STATS, StatsdConfig, make_stats, metric_name
from testbed.process import wait_until
from testbed.statsd import StatsdListener
from testbed.zookeeper import ZooKeeperServer


def test_nerve_sends_check_results_and_registration_changes(
    zk: ZooKeeperServer, kz: KazooClient, nerve_process, http_backend_factory, tmp_path: Path
) -> None:
    backend = http_backend_factory("web")
    path = unique_path()
    service = zk_service(zk.hosts, path, backend.port)
    service["checks"][0]["name"] = "http.health"  # a dot in a name must not add a level
    with StatsdListener() as sink:
        config = nerve_config({"web": service}, statsd={"host": "127.0.0.1", "port": sink.port,
                                                        "prefix": "smk.test"})  # fmt: skip
        nerve = nerve_process(write_config(tmp_path / "nerve.json", config))
        sink.wait_for(
            "smk.test.nerve.check.web.http_health.success",
            "smk.test.nerve.check.web.http_health.duration",
            "smk.test.nerve.service.web.up",
            "smk.test.nerve.registry.web.register",
        )
        wait_until(lambda: children(kz, path), 20, what="the registration")
        backend.set_healthy(False)
        sink.wait_for(
            "smk.test.nerve.check.web.http_health.failure", "smk.test.nerve.service.web.down"
        )
        nerve.process.stop(timeout=10)
    lines = sink.lines()
    assert all(line.startswith("smk.test.nerve.") for line in lines), lines[:5]
    timing = next(x for x in lines if x.startswith("smk.test.nerve.check.web.http_health.dur"))
    assert timing.endswith("|ms"), timing
    assert "smk.test.nerve.service.web.up:1|c" in lines


def test_without_a_statsd_block_nothing_is_sent_and_names_are_sanitised() -> None:
    assert make_stats(None) is NULL_STATS
    NULL_STATS.incr("nerve", "x")  # the no-op takes the same calls
    assert metric_name(("synapse", "watcher", "web.api:8080|x@y", "")) == (
        "synapse.watcher.web_api_8080_x_y._"
    )


def test_a_dead_statsd_port_never_raises_into_the_daemon() -> None:
    with StatsdListener() as sink:
        port = sink.port  # closed again below: nobody listens there any more
    stats = make_stats(StatsdConfig(host="127.0.0.1", port=port))
    for _ in range(200):  # ICMP port-unreachable errors surface on later sends
        stats.incr("nerve", "check", "web", "http", "success")
        stats.timing("nerve", "check", "web", "http", "duration", seconds=0.01)
    stats.close()
    stats.incr("after", "close")
