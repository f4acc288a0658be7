"""A managed HAProxy's first start, when nothing serves yet: the start itself checks the config
(no separate `haproxy -c`), and a config it refuses is reported exactly as a refused check."""

from __future__ import annotations

from pathlib import Path

from haproxy_helpers import server, serves, service
from prometheus_client import CollectorRegistry

from synapse.contract import ApplyOutcome
from synapse.haproxy import commands
from synapse.haproxy.runtime import MasterClient
from testbed.process import free_port


def web(port: int, backends, **haproxy):
    return service(
        "web", [server("127.0.0.1", b.port, b.name) for b in backends], port=port, **haproxy
    )


def counted_checks(monkeypatch) -> list[str]:
    """The `haproxy -c` (and other) commands the HAProxy side runs from now on."""
    checks: list[str] = []
    real = commands.run_command

    async def counting(args, timeout):
        checks.append(" ".join(args) if isinstance(args, list) else args)
        return await real(args, timeout)

    monkeypatch.setattr("synapse.haproxy.commands.run_command", counting)
    return checks


async def test_a_first_start_runs_no_separate_check(
    managed_factory, http_backend_factory, monkeypatch
):
    checks = counted_checks(monkeypatch)
    b1 = http_backend_factory("b1")
    port = free_port()
    controller = managed_factory(restart_interval=0)
    first = await controller.apply([web(port, [b1])], "t")
    assert first.reload is ApplyOutcome.DONE and controller.info.starts == 1
    assert not [c for c in checks if " -c " in c], checks
    await serves(port, {"b1"})

    # Once HAProxy serves, a reload is checked first, as ever.
    b2 = http_backend_factory("b2")
    reloaded = await controller.apply([web(port, [b1, b2], backend=["retries 2"])], "t")
    assert reloaded.reload is ApplyOutcome.DONE
    assert [c for c in checks if " -c " in c]
    await serves(port, {"b1", "b2"})


async def test_a_refused_first_start_is_reported_as_an_invalid_config(
    managed_factory, http_backend_factory
):
    """A global line no service can be isolated from: the apply is refused outright."""
    b1 = http_backend_factory("b1")
    port = free_port()
    registry = CollectorRegistry()
    bad_global = ["maxconn 256", "hard-stop-after 5s", "no-such-keyword 1"]
    controller = managed_factory(registry, restart_interval=0, **{"global": bad_global})
    bad = await controller.apply([web(port, [b1])], "bad")
    assert bad.reload is ApplyOutcome.INVALID, bad
    assert "no-such-keyword" in (bad.error or "")
    assert "haproxy.cfg.candidate" in (bad.error or "")  # the check's words, not the start's
    assert "no-such-keyword" in controller.status()["validation_error"]["message"]
    assert registry.get_sample_value("synapse_haproxy_validation_failures_total") == 1
    # As after a refused check: the candidate stays for inspection, no config file is left
    # behind (there was none), and nothing runs.
    assert "no-such-keyword" in Path(controller.settings.candidate_path).read_text()
    assert not Path(controller.settings.config_path).exists()
    assert controller.status()["haproxy_pids"]["master"] is None

    good = controller.config.model_copy(update={"global_": bad_global[:2]})
    await controller.update_config(good)
    fixed = await controller.apply([web(port, [b1])], "fixed")
    assert fixed.reload is ApplyOutcome.DONE and controller.status()["validation_error"] is None
    await serves(port, {"b1"})


async def test_a_service_refused_at_the_first_start_is_isolated(
    managed_factory, http_backend_factory
):
    """As with a refused check: the others start, the service's bad block never reaches the file."""
    b1, b2 = http_backend_factory("b1"), http_backend_factory("b2")
    web_port, api_port = free_port(), free_port()
    controller = managed_factory(restart_interval=0)
    api = service("api", [server("127.0.0.1", b2.port, b2.name)], port=api_port)
    bad = web(web_port, [b1], backend=["no-such-keyword 1"])
    result = await controller.apply([bad, api], "bad")
    assert "no-such-keyword" in controller.status()["validation_error"]["message"]
    assert result.reload is ApplyOutcome.DONE, result
    await serves(api_port, {"b2"})
    await controller.flush()
    assert "no-such-keyword" not in Path(controller.settings.config_path).read_text()


async def test_an_adopted_haproxy_is_checked_before_a_reload(
    managed_factory, http_backend_factory, monkeypatch
):
    """A restarted synapse adopts the HAProxy that serves: something runs, so a candidate is
    checked with `haproxy -c` first, and a refused one leaves the adopted HAProxy serving."""
    checks = counted_checks(monkeypatch)
    b1 = http_backend_factory("b1")
    port = free_port()
    first = managed_factory(restart_interval=0)
    assert (await first.apply([web(port, [b1])], "t")).reload is ApplyOutcome.DONE
    assert first.config.managed is not None
    leaving = first.config.managed.model_copy(update={"stop_on_exit": False})
    first.config = first.config.model_copy(update={"managed": leaving})
    await first.stop()  # (stop_on_exit false: HAProxy keeps serving for the next synapse)
    await serves(port, {"b1"})
    assert not [c for c in checks if " -c " in c], checks

    bad_global = ["maxconn 256", "hard-stop-after 5s", "no-such-keyword 1"]
    second = managed_factory(restart_interval=0, **{"global": bad_global})
    await second.start()
    master = second.status()["haproxy_pids"]["master"]
    assert master is not None  # adopted
    proc = MasterClient(str(second.settings.master_socket))
    before = await proc.show_proc()
    bad = await second.apply([web(port, [b1])], "bad")
    assert bad.reload is ApplyOutcome.INVALID, bad
    assert [c for c in checks if " -c " in c], checks
    after = await proc.show_proc()  # refused by the check: no reload was even tried
    assert (after.reloads, after.failed_reloads) == (before.reloads, before.failed_reloads)
    assert "no-such-keyword" in (bad.error or "")
    assert second.info.starts == 0 and second.status()["haproxy_pids"]["master"] == master
    await serves(port, {"b1"})
