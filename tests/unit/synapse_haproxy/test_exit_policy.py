"""Whether synapse's exit stops its managed HAProxy (``synapse.haproxy.exit_policy``).

``managed.stop_on_exit: auto`` (the default) stops it only where it cannot outlive synapse:
synapse is its container's main process. (The stop itself: tests/integration/synapse_haproxy/
test_managed_stop.py.)
"""

from __future__ import annotations

from typing import Any

import pytest

from smartstack.modelbase import ValidationError
from synapse.config import ManagedHAProxy as ManagedConfig
from synapse.haproxy.exit_policy import container_main, init_name, stop_reason


@pytest.mark.parametrize(
    ("pid", "ppid", "init", "main"),
    [
        (1, 0, None, True),  # PID 1 of its namespace (docker run --entrypoint synapse)
        (7, 1, "tini", True),  # our image: tini -- synapse
        (7, 1, "docker-init", True),  # docker run --init
        (7, 1, "dumb-init", True),
        (4242, 1, "systemd", False),  # a unit on a host: ppid 1 too
        (7, 1, "s6-svscan", False),  # a supervisor in a container restarts synapse
        (7, 1, "sh", False),  # a script may start synapse again
        (7, 1, None, False),  # /proc does not say
        (31, 0, None, False),  # docker exec: PID 1 lives on beside it
        (4242, 4000, None, False),  # a terminal
    ],
)
def test_haproxy_is_stopped_only_where_it_dies_with_synapse(pid, ppid, init, main) -> None:
    assert (container_main(pid, ppid, init) is not None) is main


def test_auto_is_the_default_and_true_false_say_it_all(monkeypatch) -> None:
    monkeypatch.setattr("os.getpid", lambda: 7)
    monkeypatch.setattr("os.getppid", lambda: 1)
    monkeypatch.setattr("synapse.haproxy.exit_policy.init_name", lambda: "tini")
    assert ManagedConfig().stop_on_exit == "auto"
    assert stop_reason(ManagedConfig()) == (
        "synapse is the child of tini, PID 1 of its PID namespace: HAProxy dies with it"
    )
    assert stop_reason(ManagedConfig(stop_on_exit=False)) is None
    assert stop_reason(None) is None
    monkeypatch.setattr("synapse.haproxy.exit_policy.init_name", lambda: "systemd")
    assert stop_reason(ManagedConfig()) is None
    assert stop_reason(ManagedConfig(stop_on_exit=True)) == "managed.stop_on_exit is true"


def test_the_name_of_pid_1_is_read_from_proc() -> None:
    name = init_name()
    assert name is not None and name == name.strip() and 0 < len(name) <= 15


@pytest.mark.parametrize(
    "managed", [{"stop_grace": -1}, {"stop_grace": 121}, {"stop_on_exit": "sometimes"}]
)
def test_stop_settings_are_validated(managed: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        ManagedConfig.model_validate(managed)


def test_stop_settings_in_range_are_taken() -> None:
    config = ManagedConfig.model_validate({"stop_grace": 0, "stop_on_exit": "auto"})
    assert (config.stop_grace, config.stop_on_exit) == (0, "auto")
    assert ManagedConfig.model_validate({"stop_on_exit": True}).stop_on_exit is True
