"""A config check that gave no verdict (timed out), against a real HAProxy 2.6 (127.0.0.1
only): not a refusal of the candidate until the desired state changes, but a failed reload,
retried after the backoff."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from haproxy_helpers import eventually, server, serves, service, web
from prometheus_client import CollectorRegistry

from synapse.contract import ApplyOutcome
from synapse.haproxy import installer
from testbed.process import free_port


def metric(registry: CollectorRegistry, name: str) -> float:
    return registry.get_sample_value(name) or 0.0


async def install_again(controller, desired: list) -> list[ApplyOutcome]:
    """Apply the same desired state until it is installed; the outcomes on the way."""
    outcomes: list[ApplyOutcome] = []

    async def installed() -> bool:
        outcomes.append((await controller.apply(desired, "same state")).reload)
        return outcomes[-1] in (ApplyOutcome.DONE, ApplyOutcome.NONE)

    await eventually(installed, "the same desired state installed")
    return outcomes


async def test_a_check_that_timed_out_is_retried_not_refused(
    managed_factory, http_backend_factory, sockdir: Path
):
    b1 = http_backend_factory("b1")
    p_web, p_new = free_port(), free_port()
    slow = sockdir / "slow"
    check = f"if [ -e {slow} ]; then sleep 5; fi; haproxy -c -f {sockdir}/haproxy.cfg.candidate"
    registry = CollectorRegistry()
    controller = managed_factory(
        registry, restart_interval=0.0, check_command=check, do_checks=True, reload_timeout=1.0
    )
    await controller.start()
    assert (await controller.apply([web(p_web, [b1])], "start")).reload is ApplyOutcome.DONE

    slow.touch()  # the check is slow this once (a loaded machine, slow DNS)
    desired = [web(p_web, [b1]), service("new", [server("127.0.0.1", b1.port, "n")], port=p_new)]
    result = await controller.apply(desired, "new service")
    assert result.reload is ApplyOutcome.FAILED and "timed out" in (result.error or ""), result
    assert controller.status()["validation_error"] is None
    slow.unlink()

    # the same desired state again: retried after the backoff, and installed
    outcomes = await install_again(controller, desired)
    assert ApplyOutcome.INVALID not in outcomes, outcomes
    await serves(p_new, {"b1"})
    assert metric(registry, "synapse_haproxy_validation_failures_total") == 0
    assert metric(registry, "synapse_haproxy_reload_failures_total") == 1
    assert controller.status()["validation_error"] is None


def _errors(caplog: pytest.LogCaptureFixture, name: str) -> int:
    return sum(r.getMessage() == name and r.levelno >= logging.ERROR for r in caplog.records)


async def test_a_candidate_that_cannot_be_written_is_a_failed_reload(
    managed_factory, http_backend_factory, sockdir: Path, caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
):  # fmt: skip
    """A full or read-only disk: the candidate is not written, the check does not run. A
    failed reload like any other (counted, on /status, retried within DISK_RETRY_S), logged
    once for the streak; before, an OSError escaped the apply (a traceback at every retry,
    nothing on /status)."""
    monkeypatch.setattr(installer, "DISK_RETRY_S", 0.5, raising=False)  # (below the 1st: 1 s)
    b1 = http_backend_factory("b1")
    p_web, p_new = free_port(), free_port()
    blocker = sockdir / "full"  # (a file where the candidate's directory should be)
    registry = CollectorRegistry()
    controller = managed_factory(
        registry, restart_interval=0.0, candidate_config_file_path=str(blocker / "c.cfg")
    )
    await controller.start()
    assert (await controller.apply([web(p_web, [b1])], "start")).reload is ApplyOutcome.DONE
    blocker.write_text("")

    desired = [web(p_web, [b1]), service("new", [server("127.0.0.1", b1.port, "n")], port=p_new)]
    result = await controller.apply(desired, "new service")
    assert result.reload is ApplyOutcome.FAILED and "cannot write" in (result.error or "")
    status = controller.status()
    assert "cannot write" in status["last_reload_error"]["message"]
    assert status["last_reload_error"]["retry_in_s"] == 0.5
    assert status["pending_reload"] is not None and status["validation_error"] is None

    async def retried() -> bool:  # (by the pending reload, after its backoff)
        return metric(registry, "synapse_haproxy_reload_failures_total") >= 2

    await eventually(retried, "the reload retried")
    assert _errors(caplog, "haproxy_check_unanswered") == 1  # one line for the streak

    blocker.unlink()  # space again

    await install_again(controller, desired)
    await serves(p_new, {"b1"})
    assert metric(registry, "synapse_haproxy_validation_failures_total") == 0
    assert controller.status()["last_reload_error"] is None


async def test_a_binary_that_fails_without_an_alert_refuses_no_config(
    managed_factory, http_backend_factory, sockdir: Path
):
    """The HAProxy binary itself fails (a wrapper whose exec fails, a missing library):
    `haproxy -c` exits 1 without an ALERT about the config. Not a refusal, which stood until
    the desired state changed, long after the binary was fixed: retried, then installed."""
    b1 = http_backend_factory("b1")
    p_web, p_new = free_port(), free_port()
    broken = sockdir / "broken"
    wrapper = sockdir / "haproxy"
    wrapper.write_text(
        f"#!/bin/sh\nif [ -e {broken} ]; then\n"
        "  echo 'haproxy: error while loading shared libraries: libfoo.so.3' >&2; exit 1\n"
        'fi\nexec haproxy "$@"\n'
    )
    wrapper.chmod(0o755)
    registry = CollectorRegistry()
    controller = managed_factory(
        registry,
        restart_interval=0.0,
        managed={"binary": str(wrapper), "stats": {"enabled": False}, "stop_on_exit": True},
    )
    await controller.start()
    assert (await controller.apply([web(p_web, [b1])], "start")).reload is ApplyOutcome.DONE

    broken.touch()
    desired = [web(p_web, [b1]), service("new", [server("127.0.0.1", b1.port, "n")], port=p_new)]
    result = await controller.apply(desired, "new service")
    assert result.reload is ApplyOutcome.FAILED and "libfoo" in (result.error or ""), result
    assert controller.status()["validation_error"] is None
    broken.unlink()  # the binary works again: the same desired state goes in

    await install_again(controller, desired)
    await serves(p_new, {"b1"})
    assert metric(registry, "synapse_haproxy_validation_failures_total") == 0


async def test_route_maps_that_cannot_be_written_refuse_no_config(
    managed_factory, http_backend_factory, monkeypatch: pytest.MonkeyPatch
):
    """The route maps and the crt-list are written before the check: a full disk there says
    nothing about the candidate. Before, it was refused until the desired state changed."""
    b1 = http_backend_factory("b1")
    p_web, p_new = free_port(), free_port()
    controller = managed_factory(restart_interval=0.0)
    await controller.start()
    assert (await controller.apply([web(p_web, [b1])], "start")).reload is ApplyOutcome.DONE
    edge = controller._installer.edge
    written = edge.before_read

    async def full() -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(edge, "before_read", full)
    desired = [web(p_web, [b1]), service("new", [server("127.0.0.1", b1.port, "n")], port=p_new)]
    result = await controller.apply(desired, "new service")
    assert result.reload is ApplyOutcome.FAILED and "route maps" in (result.error or ""), result
    assert controller.status()["validation_error"] is None
    monkeypatch.setattr(edge, "before_read", written)  # space again

    await install_again(controller, desired)
    await serves(p_new, {"b1"})
