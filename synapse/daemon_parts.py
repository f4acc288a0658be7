"""The synapse daemon's optional parts, each built from the config when it asks for it
(the HAProxy controller, Airbnb's file_output and state file)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from synapse.config import SynapseConfig
from synapse.contract import Applier, RecordSink
from synapse.last_good import state_file
from synapse.restart_held import KeyOf
from synapse.state_cache import StateCache
from synapse.zone_state import Evacuations

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry


def make_controller(config: SynapseConfig, registry: CollectorRegistry) -> Applier | None:
    """The HAProxy controller, or None when the config has no ``haproxy`` block."""
    if config.haproxy is None:
        return None
    from synapse.haproxy.controller import HAProxyController

    return HAProxyController(config.haproxy, registry)


def state_key(config: SynapseConfig) -> tuple[str | None, float | None]:
    """The state file and its TTL. In managed mode synapse keeps one even when none is
    configured (beside HAProxy's config, like its server-state file): a synapse restarted
    while its registry is silent, or answers nothing, then keeps the servers HAProxy runs
    instead of emptying them."""
    haproxy = config.haproxy
    if haproxy is None:
        return None, None
    path = state_file(haproxy.state_file_path, haproxy.managed, haproxy.config_file_path)
    return path, haproxy.state_file_ttl


def behind_haproxy(config: SynapseConfig) -> bool:
    """Managed: the config file HAProxy runs changed since this synapse last wrote it (its
    ``<config>.loaded`` marker names another file, or none; a bare ``loaded`` of the
    release before does not count: it kept the state file current): something else ran HAProxy
    meanwhile (an older synapse, which never updates the state file: after a rollback it
    held servers HAProxy had removed since). Read before the controller writes either."""
    haproxy = config.haproxy
    if haproxy is None or haproxy.managed is None or not haproxy.config_file_path:
        return False
    if not haproxy.do_writes:  # (no marker is kept)
        return False
    from synapse.haproxy.loadmark import behind  # (a managed synapse imports it anyway)

    path = Path(haproxy.config_file_path)
    return path.exists() and behind(path)


def make_file_output(config: SynapseConfig) -> RecordSink | None:
    """Airbnb's file_output, when the top-level ``file_output`` block is set."""
    if config.file_output is None:
        return None
    from synapse.file_output import FileOutput  # here: a synapse without it never loads it

    return FileOutput(config.file_output.output_directory)


def make_state_cache(
    config: SynapseConfig, keep: Evacuations | None = None, key_of: KeyOf | None = None
) -> StateCache | None:
    """Airbnb's state file, loaded, when ``haproxy.state_file_path`` is set (or managed).
    ``keep``: the runtime evacuations synapse runs with (a SIGHUP moved the file): they
    replace the file's, and ``RoundOutputs.moved`` writes them with every server at once
    (not this cache's empty servers first), or a restart would lose them. ``key_of``: the key of the
    discovery now listing a service (synapse.restart_held)."""
    path, ttl = state_key(config)
    if path is None or ttl is None:
        return None
    cache = StateCache(path, ttl, key_of=key_of)
    cache.load()
    cache.behind_haproxy = behind_haproxy(config)
    if keep is not None:  # (written with every server by RoundOutputs.moved, at once)
        cache.evacuations, cache.evacuations_unsaved = keep, True
    return cache
