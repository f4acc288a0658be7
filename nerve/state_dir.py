"""Where nerve keeps what survives a restart: maintenance flags, the last good config."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from nerve.config import NerveConfig

DEFAULT_STATE_DIR = "nerve-state"  # next to the config file


def resolve_state_dir(config: NerveConfig, config_path: Path | None) -> Path | None:
    """``state_dir`` (relative to the config file's directory), else ``nerve-state`` beside
    the config file; None (flags in memory only) for a daemon built without a file."""
    base = config_path.parent if config_path is not None else Path.cwd()
    if config.state_dir:
        return base / config.state_dir
    return base / DEFAULT_STATE_DIR if config_path is not None else None
