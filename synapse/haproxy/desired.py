"""Desired state: a rendered candidate config, as the planner compares it (no I/O here).

``synapse.haproxy.render`` makes these from the desired services; the planner reads
them. Kept apart from the renderer so that the planner needs neither it nor jinja2.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from synapse.haproxy.configtext import ParsedConfig
from synapse.haproxy.specs import BackendSpec


@dataclass(frozen=True)
class Delta:
    """Where a config differs from ``base`` (the config rendered just before it): only in
    these sections, these proxies' server lines and these backend specs."""

    base: ParsedConfig
    headers: frozenset[str]
    proxies: frozenset[str]
    backends: frozenset[str]


@dataclass(frozen=True)
class DesiredConfig:
    """A rendered candidate: the text (in parts) plus what the planner needs to compare it."""

    made: ParsedConfig | Callable[[], ParsedConfig]  # its parse, or how to build it (lazy)
    backends: dict[str, BackendSpec]
    warnings: tuple[str, ...] = field(default=())
    parts: tuple[str, ...] = field(default=())
    delta: Delta | None = None  # None: compare everything

    @property
    def parsed(self) -> ParsedConfig:
        """Its parse, built on first use: a cold start spawns HAProxy with the text alone
        and builds this (~15 % of that render at 1,000 x 20) while HAProxy parses."""
        made = self.made
        if callable(made):
            made = made()
            object.__setattr__(self, "made", made)  # (frozen: set once, the thunk let go)
        return made

    @property
    def text(self) -> str:
        # Joined when asked (a reload: ~1 ms at 2 MB), not kept: the candidate outlives
        # its reload as the renderer's last config, and the parts hold the same text.
        return "".join(self.parts)
