"""``managed.stop_delay`` (``synapse.stop_delay``): how long HAProxy serves on after synapse's
stop signal before its soft stop. (The stop itself: tests/integration/synapse/
test_synapse_stop_delay.py.)"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from smartstack.modelbase import ValidationError
from synapse.config import ManagedHAProxy as ManagedConfig
from synapse.config import load_synapse_config
from synapse.stop_delay import AUTO_S, planned_stop, stop_delay

CONTAINER = "synapse is the child of tini, PID 1 of its PID namespace: HAProxy dies with it"


@pytest.mark.parametrize(
    ("managed", "reason", "delay"),
    [
        ({}, CONTAINER, AUTO_S),  # auto, in a container: an app stopped with it drains
        ({}, None, 0.0),  # auto on a host: HAProxy is left serving, nothing to delay
        ({"stop_on_exit": True}, "managed.stop_on_exit is true", 0.0),  # today's stop
        ({"stop_on_exit": True, "stop_delay": 3}, "managed.stop_on_exit is true", 3.0),
        ({"stop_delay": 0}, CONTAINER, 0.0),  # turned off
        ({"stop_delay": 12.5}, CONTAINER, 12.5),
        ({"stop_on_exit": False, "stop_delay": 9}, None, 0.0),  # left serving: no delay
    ],
)
def test_the_delay_applies_only_where_synapse_stops_haproxy(managed, reason, delay) -> None:
    assert stop_delay(ManagedConfig.model_validate(managed), reason) == delay


def test_no_managed_haproxy_no_delay() -> None:
    assert stop_delay(None, CONTAINER) == 0.0


@pytest.mark.parametrize("value", [-1, 120.5, 121, "soon", "nan", "121", True, None, float("nan")])
def test_stop_delay_out_of_bounds_is_refused(value: Any) -> None:
    with pytest.raises(ValidationError):
        ManagedConfig.model_validate({"stop_delay": value})


@pytest.mark.parametrize("value", [0, 0.5, 120, "auto"])
def test_stop_delay_in_bounds_is_taken(value: Any) -> None:
    assert ManagedConfig.model_validate({"stop_delay": value}).stop_delay == value


def test_auto_is_the_default() -> None:
    assert ManagedConfig().stop_delay == "auto"


class _Running:
    def __init__(self, alive: bool, master_pid: int | None) -> None:
        self.alive, self.master_pid = alive, master_pid


def test_no_delay_when_haproxy_never_started() -> None:
    """The registry was unreachable, HAProxy never started: SIGTERM waited 5.13 s for a
    HAProxy that never served (and logged that it served on)."""
    config = ManagedConfig.model_validate({"stop_on_exit": True, "stop_delay": 5})
    assert planned_stop(config, None) is None
    assert planned_stop(config, _Running(False, None)) is None  # type: ignore[arg-type]
    assert planned_stop(config, _Running(True, 4242)) == "managed.stop_on_exit is true"  # type: ignore[arg-type]


def test_the_delay_decides_with_the_master_pid_as_the_stop_does(monkeypatch) -> None:
    """synapse under tini with an adopted master in another cgroup: the stop leaves it
    serving (the pid says so), so no delay either (it waited 5 s and logged it served on)."""
    from synapse.haproxy import exit_policy

    monkeypatch.setattr(exit_policy, "elsewhere", lambda master, ours, its: master == 4242)
    monkeypatch.setattr(exit_policy, "container_main", lambda *a: CONTAINER)
    config = ManagedConfig()  # stop_on_exit auto
    assert planned_stop(config, _Running(True, 4242)) is None  # type: ignore[arg-type]
    assert planned_stop(config, _Running(True, 7)) == CONTAINER  # type: ignore[arg-type]


def test_stop_grace_refuses_a_bool() -> None:
    """``stop_grace: true`` was taken as 1.0 s."""
    with pytest.raises(ValidationError):
        ManagedConfig.model_validate({"stop_grace": True})


def test_stop_delay_takes_a_numeric_string_as_stop_grace_does() -> None:
    config = ManagedConfig.model_validate({"stop_delay": "5", "stop_grace": "5"})
    assert config.stop_delay == 5.0 and config.stop_grace == 5.0


@pytest.mark.parametrize(
    ("managed", "warned"),
    [
        ({"stop_on_exit": False, "stop_delay": 5}, "stop_on_exit is false"),
        ({"launch": False, "stop_delay": 5}, "launch is false"),
        ({"launch": False, "stop_on_exit": False, "stop_delay": 5}, "launch is false"),
        ({"stop_on_exit": False}, None),  # auto: nothing asked for
        ({"stop_on_exit": False, "stop_delay": 0}, None),
        ({"stop_on_exit": True, "stop_delay": 5}, None),
        ({"stop_delay": 5}, None),  # auto: it may stop HAProxy
    ],
)
def test_an_explicit_stop_delay_that_cannot_apply_is_warned(
    tmp_path: Path, managed: dict[str, Any], warned: str | None
) -> None:
    """``stop_delay: 5`` with stop_on_exit false or launch false was ignored silently
    (``synapse -k`` said ok)."""
    path = tmp_path / "synapse.json"
    service = {"discovery": {"method": "base"}, "haproxy": {"port": 3000}}
    haproxy = {"config_file_path": str(tmp_path / "haproxy.cfg"), "managed": managed}
    path.write_text(json.dumps({"services": {"web": service}, "haproxy": haproxy}))
    _, warnings = load_synapse_config(path)
    said = [w for w in warnings if "stop_delay does not apply" in w]
    if warned is None:
        assert said == []
    else:
        assert len(said) == 1 and warned in said[0], said
