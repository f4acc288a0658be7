"""The bridge: the config HAProxy can reach at runtime while a reload waits, fails or is refused.

It is the structure the file on disk was rendered from (its ``Layout``), filled with
today's servers: runtime operations take HAProxy there at once, and it is written as the
config file, so the file always says what HAProxy runs.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass

from synapse.haproxy.desired import DesiredConfig
from synapse.haproxy.ops import Op
from synapse.haproxy.planner import plan
from synapse.haproxy.render import Renderer
from synapse.haproxy.running import Capabilities, RunningState
from synapse.model import DesiredService


@dataclass(frozen=True)
class Layout:
    """What the config file on disk was rendered from: re-rendering it with other servers
    gives a config HAProxy can reach at runtime (the bridge while a reload waits)."""

    services: tuple[DesiredService, ...]
    renderer: Renderer


@dataclass(frozen=True)
class Bridge:
    config: DesiredConfig
    ops: tuple[Op, ...]  # what takes the running HAProxy there
    layout: Layout  # what it was rendered from


def build_bridge(
    layout: Layout | None,
    desired: list[DesiredService],
    running: RunningState,
    ids: Mapping[str, Mapping[str, int]],
    capabilities: Capabilities,
    only: Collection[str] | None = None,
) -> Bridge | None:
    """The file's structure with today's servers, when the runtime API alone gets there.

    Services keep the config blocks the running file was rendered from; a service that
    is gone from the desired state keeps its old servers, a new one waits for the
    reload. None when there is no such config (no runtime API, no known layout, or a
    change only a reload can make, such as a server HAProxy cannot add). ``only``: the
    backends whose servers are planned (None: all; ``synapse.haproxy.revive``).
    """
    if layout is None or running.backends is None:
        return None
    wanted = {service.name: service for service in desired}
    services = []
    for old in layout.services:
        new = wanted.get(old.name)
        if new is not None and new.backend_name == old.backend_name:
            # Same config block: the service as wanted (its rendering is cached).
            same = new.config is old.config or new.config == old.config
            old = new if same else DesiredService(old.name, old.config, list(new.servers))
        services.append(old)
    try:
        config = layout.renderer.render(services, ids)
    except layout.renderer.errors:
        return None
    result = plan(config, running, capabilities, only)
    if result.reload is not None:
        return None
    return Bridge(config, result.ops, Layout(tuple(services), layout.renderer))
