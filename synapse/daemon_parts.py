"""The synapse daemon's optional parts, each built from the config when it asks for it
(the HAProxy controller, Airbnb's file_output and state file)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from synapse.config import SynapseConfig
from synapse.contract import Applier, RecordSink
from synapse.state_cache import StateCache

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry


def make_controller(config: SynapseConfig, registry: CollectorRegistry) -> Applier | None:
    """The HAProxy controller, or None when the config has no ``haproxy`` block."""
    if config.haproxy is None:
        return None
    from synapse.haproxy.controller import HAProxyController

    return HAProxyController(config.haproxy, registry)


def state_key(config: SynapseConfig) -> tuple[str | None, float | None]:
    haproxy = config.haproxy
    return (haproxy.state_file_path, haproxy.state_file_ttl) if haproxy else (None, None)


def make_file_output(config: SynapseConfig) -> RecordSink | None:
    """Airbnb's file_output, when the top-level ``file_output`` block is set."""
    if config.file_output is None:
        return None
    from synapse.file_output import FileOutput  # here: a synapse without it never loads it

    return FileOutput(config.file_output.output_directory)


def make_state_cache(config: SynapseConfig) -> StateCache | None:
    """Airbnb's state file, loaded, when ``haproxy.state_file_path`` is set."""
    path, ttl = state_key(config)
    if path is None or ttl is None:
        return None
    cache = StateCache(path, ttl)
    cache.load()
    return cache
