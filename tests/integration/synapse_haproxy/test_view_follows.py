"""The view that follows runtime commands (``view_ops``) against a real HAProxy 2.6: after
each change the servers synapse holds for a backend are exactly what `show servers state`
says, so the planner's next plan starts from the truth (and nothing was read back)."""

from __future__ import annotations

import dataclasses

import pytest
from haproxy_helpers import eventually, read_back, server, service
from prometheus_client import CollectorRegistry

from synapse.haproxy import view_ops
from synapse.haproxy.runtime import RuntimeClient


@pytest.mark.parametrize("removal", ["maint", "delete"])
async def test_the_followed_view_is_what_haproxy_reports(managed_factory, monkeypatch, removal):
    monkeypatch.setattr(view_ops, "CHECK_AFTER", 60.0)  # (no read but ours here)
    controller = managed_factory(
        CollectorRegistry(), remove_servers=removal, use_nerve_weights=True
    )
    checked = {"server_options": "check inter 60s"}
    a = service("a", [server("127.0.0.1", 23001, "x")], backend_only=True, **checked)
    b = service("b", [server("127.0.0.1", 23101, "y")], backend_only=True)
    await controller.apply([a, b], "start")
    await read_back(controller)
    await controller.apply([a, b], "quiet")
    view = controller._reader.view
    fresh = RuntimeClient(view.client.path)

    def members(svc, *servers):
        return dataclasses.replace(svc, servers=list(servers))

    steps = [
        (members(a, server("127.0.0.1", 23001, "x"), server("127.0.0.1", 23002, "n")), b),
        (members(a, server("127.0.0.1", 23002, "n", weight=7)), b),  # x left, n reweighed
        (members(a, server("127.0.0.1", 23002, "n", weight=7), server("127.0.0.1", 23001, "x")),
         members(b, server("127.0.0.1", 23102, "z"))),  # x back; y replaced
        (members(a, server("127.0.0.1", 23001, "x")), members(b)),  # everyone else left
    ]  # fmt: skip
    reads = view.partial_reads
    for step, desired in enumerate(steps):
        result = await controller.apply(list(desired), f"step {step}")
        assert result.ops, (step, result)
        assert not view.stale, (step, view.stale)  # followed, not read back
        _, real = await fresh.read_state(["a", "b"])
        assert {name: dict(view.backends[name]) for name in "ab"} == real, step
    assert view.partial_reads == reads  # (not one read of a backend after its commands)
    await controller.flush()


async def test_the_reads_a_second_later_share_one_kept_connection(managed_factory, monkeypatch):
    """The followed backends are read again a second later (``view_ops.Recheck``), each
    time on the connection the last such read used (not a connect per read)."""
    monkeypatch.setattr(view_ops, "CHECK_AFTER", 0.05)
    controller = managed_factory(CollectorRegistry())
    a = service("a", [server("127.0.0.1", 23201, "x")], backend_only=True)
    await controller.apply([a], "start")
    await read_back(controller)
    await controller.apply([a], "quiet")
    view, reader = controller._reader.view, controller._reader
    for step in range(3):
        reads = view.partial_reads
        extra = [server("127.0.0.1", 23202 + step, f"n{step}")]
        await controller.apply([dataclasses.replace(a, servers=[*a.servers, *extra])], "t")

        async def reread(reads: int = reads) -> bool:
            return view.partial_reads > reads and not view.stale

        await eventually(reread, "the read a moment after the commands")
    assert reader._apart is not None and reader._apart.connections == 1
    await controller.flush()
