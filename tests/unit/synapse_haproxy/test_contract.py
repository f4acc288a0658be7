"""Every implementation of synapse.contract's Protocols has each of their methods, with its
signature: the HAProxy side and the one fake (Applier), file_output (RecordSink)."""

from __future__ import annotations

import inspect

import pytest
from applier_fakes import FakeApplier

from synapse.contract import Applier, ApplyOutcome, ApplyResult, RecordSink
from synapse.file_output import FileOutput
from synapse.haproxy.controller import HAProxyController

APPLIER_METHODS = (
    "start",
    "apply",
    "update_config",
    "flush",
    "stop",
    "status",
    "health",
    "backend_servers",
    "servers_of",
)
SINK_METHODS = ("update",)


@pytest.mark.parametrize(
    ("protocol", "methods", "implementation"),
    [
        (Applier, APPLIER_METHODS, HAProxyController),
        (Applier, APPLIER_METHODS, FakeApplier),
        (RecordSink, SINK_METHODS, FileOutput),
    ],
)
def test_every_method_of_the_contract_with_its_signature(
    protocol: type, methods: tuple[str, ...], implementation: type
) -> None:
    protocol_methods = {
        name
        for name, _ in inspect.getmembers(protocol, inspect.isfunction)
        if not name.startswith("_")
    }
    assert protocol_methods == set(methods)
    for name in methods:
        wanted, got = getattr(protocol, name), getattr(implementation, name)
        assert inspect.signature(got) == inspect.signature(wanted), name
        assert inspect.iscoroutinefunction(got) == inspect.iscoroutinefunction(wanted), name


def test_outcomes_label_metrics_with_their_value_and_say_whether_they_applied() -> None:
    assert [o.value for o in ApplyOutcome] == [
        "none", "done", "pending", "invalid", "failed", "disabled"
    ]  # fmt: skip
    assert str(ApplyOutcome.PENDING) == "pending"  # metric labels, /status, logs
    assert {o for o in ApplyOutcome if not o.applied} == {ApplyOutcome.INVALID, ApplyOutcome.FAILED}
    assert ApplyResult(reload=ApplyOutcome.DONE).reloaded and not ApplyResult().reloaded
