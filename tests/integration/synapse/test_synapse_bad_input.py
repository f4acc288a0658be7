"""Real synapse processes (managed HAProxy): a taken admin port, a frontend port another
synapse's HAProxy already serves, and what /metrics says about the build."""

from __future__ import annotations

import socket

from prometheus_client.parser import text_string_to_metric_families
from synapse_e2e import Synapse, spread, wait, wait_serving

from smartstack.build_info import version
from testbed.process import free_port


def base_service(port: int, backend) -> dict:
    return {
        "discovery": {"method": "base"},
        "default_servers": [{"name": backend.name, "host": "127.0.0.1", "port": backend.port}],
        "haproxy": {"port": port},
    }


def test_a_taken_admin_port_is_logged_and_synapse_keeps_serving(http_backend_factory):
    a = http_backend_factory("a")
    port = free_port()
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        syn = Synapse({"svc": base_service(port, a)})
        syn.admin_port = squatter.getsockname()[1]
        syn.config["admin"] = {"port": syn.admin_port}
        syn.write_config()
        try:
            syn.process.start()
            wait(lambda: "admin_not_started" in syn.log(200), what=f"the log line\n{syn.log()}")
            wait_serving(port, {"a"})
            assert syn.process.alive
            log = syn.log(200)
            [line] = [x for x in log.splitlines() if "admin_not_started" in x]
            assert f"port={syn.admin_port}" in line and "in use" in line
            assert "Traceback" not in log
        finally:
            syn.cleanup()


def test_a_second_synapse_on_the_same_frontend_port_fails_loudly(http_backend_factory):
    """Its service is left out (isolated, port and holder named); nothing is shared."""
    a, b = http_backend_factory("a"), http_backend_factory("b")
    port = free_port()
    with Synapse({"svc": base_service(port, a)}) as first:
        wait_serving(port, {"a"})
        second = Synapse({"svc": base_service(port, b)})
        try:
            second.process.start()
            wait(lambda: "already bound by" in second.log(200), what=f"the clash\n{second.log()}")
            line = next(x for x in second.log(200).splitlines() if "already bound by" in x)
            assert f"port {port} (localhost:{port}) is already bound by pid" in line
            assert "(haproxy)" in line and "SO_REUSEPORT" in line
            isolated = wait(lambda: second.status()["haproxy"]["isolated_services"].get("svc"))
            assert f"port {port}" in isolated["error"] and "taken" in isolated["running"]
            # Nothing was shared: every request still reaches the first synapse's backend.
            assert set(spread(port, 30)) == {"a"}
            assert second.process.alive and first.process.alive
        finally:
            second.cleanup()


def test_metrics_carry_build_info_and_process_series_and_no_created(http_backend_factory):
    a = http_backend_factory("a")
    port = free_port()
    with Synapse({"svc": base_service(port, a)}) as syn:
        text = syn.admin("/metrics")
        [info] = [x for x in text.splitlines() if x.startswith("synapse_build_info{")]
        assert f'version="{version()}"' in info and 'python="' in info and info.endswith(" 1.0")
        assert "process_resident_memory_bytes " in text
        assert "process_start_time_seconds " in text
        assert "python_info{" in text
        assert "_created" not in text
        # The exposition parses as a whole (promtool is not installed here).
        names = {family.name for family in text_string_to_metric_families(text)}
        assert {"synapse_build_info", "process_cpu_seconds"} <= names
