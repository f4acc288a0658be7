"""A rendered service (``ServicePiece``) and the renderer's memory of its last render.

Kept apart from render.py so the Renderer's module holds the flow: what a piece is, when
it can be reused (``fits``) and when a patch keeps the config's shape (``same_shape``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from synapse.haproxy.configtext import Block
from synapse.haproxy.desired import DesiredConfig
from synapse.haproxy.specs import BackendSpec
from synapse.model import DesiredService


@dataclass(frozen=True)
class ServicePiece:
    """One service, rendered: reused while its DesiredService and its backend's ids stay."""

    service: DesiredService
    ids: Mapping[str, int]  # server ids HAProxy uses in the backend, as rendered with
    context: dict[str, Any]  # what the template gets as `service` ({}: default layout)
    backend: BackendSpec
    warnings: tuple[str, ...]
    shared: tuple[str, ...]  # its shared_frontend lines
    routed: bool = False  # it has haproxy.routes (the shared frontend then routes)
    text: str = ""  # its part of the config ("" when the template is rendered whole)
    made: tuple[Block, ...] | Callable[[], tuple[Block, ...]] = ()  # its blocks, or a thunk

    @property
    def blocks(self) -> tuple[Block, ...]:
        """Its parsed blocks; the default layout's are built on first use (the config's
        parse is: ``DesiredConfig.parsed``), not before HAProxy can be given the text."""
        made = self.made
        if callable(made):
            made = made()
            object.__setattr__(self, "made", made)  # (frozen: set once, the thunk let go)
        return made

    def runs_as_assigned(self, ids: Mapping[str, int]) -> bool:
        """Whether ``ids`` are exactly the ids it gave its servers. Compared in place, not
        through a cached dict of them: one per piece was ~60 bytes a server, kept for good
        once HAProxy's ids were first compared (after every start)."""
        assigned = 0
        for name, spec in self.backend.servers.items():
            if spec.id is not None:
                if ids.get(name) != spec.id:
                    return False
                assigned += 1
        return assigned == len(ids)

    def fits(self, service: DesiredService, ids: Mapping[str, int]) -> bool:
        """Whether rendering ``service`` against running ``ids`` would give this piece:
        the same service, and the ids it was rendered with, or HAProxy runs exactly its
        servers with exactly the ids it gave them (after a start or a reload)."""
        if not (self.service is service or self.service == service):
            return False
        return self.ids is ids or self.ids == ids or self.runs_as_assigned(ids)

    def same_shape(self, other: ServicePiece) -> bool:
        """Same sections, backend, warnings and shared_frontend lines: only lines differ."""
        return (
            [b.header for b in self.blocks] == [b.header for b in other.blocks]
            and self.backend.name == other.backend.name
            and self.warnings == other.warnings
            and self.shared == other.shared
            and self.routed == other.routed
        )


@dataclass(frozen=True)
class Frame:
    text: str
    blocks: tuple[Block, ...]


@dataclass(frozen=True)
class Rendered:
    """The last render: its input, its pieces (None for a disabled service), its output."""

    services: list[DesiredService]
    pieces: list[ServicePiece | None]
    config: DesiredConfig
    positions: dict[str, int]  # backend name -> index in services


# What ``Renderer.membership_specs`` built for a service: (it, the ids, spec, warnings).
EarlySpec = tuple[DesiredService, Mapping[str, int], BackendSpec, list[str]]


def early_fits(early: EarlySpec | None, service: DesiredService, ids: Mapping[str, int]) -> bool:
    """Whether a spec ``membership_specs`` built holds for ``service`` with ``ids``: the
    same service, and the same ids or every server of the spec running with its id (its
    commands added them since: built again on these ids it keeps them all, as
    ``server_ids.assign_ids`` keeps the ids HAProxy uses)."""
    if early is None or early[0] is not service:
        return False
    built, servers = early[1], early[2].servers
    return built is ids or all(ids.get(n) == s.id for n, s in servers.items()) or built == ids
