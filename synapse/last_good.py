"""synapse's last good config (smartstack.last_good: why and what is kept).

Where the copy is kept: beside the state file synapse keeps (``haproxy.state_file_path``,
or in managed mode the one beside ``haproxy.config_file_path``), else in systemd's
``$STATE_DIRECTORY`` (the unit's ``StateDirectory=``); with neither (Airbnb mode without a
state file, outside systemd) no copy is kept. Written by the validating child. Where a start
with an invalid file looks for it, without trusting that file (the chicken and the egg): the
directory those keys of the file give when it can still be parsed (a wrong value elsewhere),
then ``$STATE_DIRECTORY``; the newest copy of this very config file wins.

With a ``haproxy`` block the copy is kept pending until HAProxy runs the config
(``synapse.last_good_run``): a file HAProxy refuses as a whole (a bad ``global`` line) is no
last good config, and a start whose config HAProxy refuses so runs the copy (``refused``).
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from smartstack.config_errors import ConfigError
from smartstack.last_good import fall_back, find, keep, state_directories

if TYPE_CHECKING:
    from smartstack.config_sections import SectionCache
    from synapse.config import SynapseConfig
    from synapse.config_load import ConfigSource
    from synapse.metrics import SynapseMetrics


def state_file(state_file_path: Any, managed: Any, config_file_path: Any) -> str | None:
    """The state file synapse keeps (``synapse.daemon_parts.state_key``): the configured
    one, else in managed mode one beside HAProxy's config file."""
    if isinstance(state_file_path, str) and state_file_path:
        return state_file_path
    if managed is not None and isinstance(config_file_path, str) and config_file_path:
        config_path = Path(config_file_path)
        return str(config_path.with_name(f"{config_path.stem}.synapse-state.json"))
    return None


def copy_dir(config: SynapseConfig) -> Path | None:
    """Where a config that validated keeps its copy (the module's docstring)."""
    haproxy = config.haproxy
    found = None
    if haproxy is not None:
        found = state_file(haproxy.state_file_path, haproxy.managed, haproxy.config_file_path)
    if found is not None:
        return Path(found).parent
    return next(iter(state_directories()), None)


def copy_dirs(path: str) -> list[Path]:
    """Where a refused file's last good copy may be, in order (the module's docstring)."""
    from smartstack.configfile import load_document

    haproxy = None
    for erb in (True, False):  # (a file that no longer renders: its literal paths)
        try:
            haproxy = load_document(Path(path), erb=erb).get("haproxy")
            break
        except (ConfigError, OSError, ValueError):
            continue
    named = None
    if isinstance(haproxy, dict):
        named = state_file(haproxy.get("state_file_path"), haproxy.get("managed"),
                           haproxy.get("config_file_path"))  # fmt: skip
    return [*([Path(named).parent] if named else []), *state_directories()]


def load_or_copy(
    path: str,
    zone: str | None,
    strict: bool,
    cache: SectionCache | None,
    fallback: bool,
    refused: list[str] | None = None,
    write: bool = True,
) -> tuple[SynapseConfig, list[str], dict[str, Any]]:
    """The file loaded and its copy kept (pending with a ``haproxy`` block); with
    ``fallback`` (a start), the last good copy's config when the file is refused; with
    ``refused`` (HAProxy's refusal of the file's config at a start), the copy's without
    loading the file. ConfigError as ``synapse -k`` says it (both errors when the copy is
    refused too). The third item: ``last_good`` (the copy in use), ``unsaved`` (why the
    file's copy could not be written) and ``pending``, for ``LastGood.taken``; without
    ``write``, ``keep`` instead: what writes the copy and gives them (the caller's thread)."""
    from synapse.config import load_synapse_config

    merged: list[dict[str, Any]] = []
    try:
        if refused:
            raise ConfigError(refused)
        config, warnings = load_synapse_config(path, zone, strict, cache, keep=merged)
    except ConfigError as exc:
        if not (fallback or refused):
            raise
        config, warnings, last_good = fall_back(exc.lines, find(copy_dirs(path), path),
            lambda doc: load_synapse_config(path, zone, strict, cache, document=doc))  # fmt: skip
        why = "HAProxy refuses the config file" if refused else "the config file is invalid"
        return config, warnings, {"last_good": {**last_good, "why": why}}
    kept = partial(keep, copy_dir(config), path, merged[0], config.haproxy is not None)
    return config, warnings, kept() if write else {"keep": kept}


def watch_last_good(metrics: SynapseMetrics, source: ConfigSource | None) -> ConfigSource | None:
    """``synapse_config_last_good`` follows ``source`` (1 while its last good copy runs)."""
    if source is not None:
        last_good = source.last_good
        metrics.config_last_good = lambda: float(last_good.info is not None)
    return source
