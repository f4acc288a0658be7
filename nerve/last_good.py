"""nerve's last good config (smartstack.last_good: why and what is kept).

Where the copy is kept: the ``state_dir`` of the config that validated (the maintenance
flags' directory, default ``nerve-state/`` beside the config file), written by the
validating child. Where a start with an invalid file looks for it, without trusting that
file (the chicken and the egg): the ``state_dir`` the file names when it can still be parsed
(a wrong value elsewhere), then systemd's ``$STATE_DIRECTORY`` (the unit's
``StateDirectory=``), then ``nerve-state/`` beside the config file; the newest copy of this
very config file wins.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nerve.state_dir import DEFAULT_STATE_DIR, resolve_state_dir
from smartstack.config_errors import ConfigError
from smartstack.last_good import age_text, fall_back, file_state_dir, find, keep, state_directories

if TYPE_CHECKING:
    from smartstack.admin import Health


def copy_dirs(path: str) -> list[Path]:
    """Where a refused file's last good copy may be, in order (the module's docstring)."""
    from smartstack.configfile import load_document

    base = Path(path).parent  # (a relative state_dir is relative to the file, as ever)
    named = file_state_dir(lambda: load_document(Path(path)), "state_dir")
    return [*([base / named] if named else []), *state_directories(), base / DEFAULT_STATE_DIR]


def validated(path: str, instance_id: str | None, strict: bool, fallback: bool) -> dict[str, Any]:
    """The validating child's answer (nerve.config_child): a valid file's copy kept; with
    ``fallback`` (a start), the last good copy's config when the file is refused."""
    from nerve.config import load_nerve_config

    merged: list[dict[str, Any]] = []
    try:
        config, warnings = load_nerve_config(path, instance_id, strict, keep=merged)
    except ConfigError as exc:
        if not fallback:
            return {"ok": False, "lines": exc.lines}
        try:
            config, warnings, last_good = fall_back(exc.lines, find(copy_dirs(path), path),
                lambda doc: load_nerve_config(path, instance_id, strict, document=doc))  # fmt: skip
        except ConfigError as both:
            return {"ok": False, "lines": both.lines}
        return {"ok": True, "config": config, "warnings": warnings,
                "plain": config.docker is None, "last_good": last_good}  # fmt: skip
    kept = keep(resolve_state_dir(config, Path(path)), path, merged[0])
    return {"ok": True, "config": config, "warnings": warnings, "plain": config.docker is None,
            "last_good": None, **kept}  # fmt: skip


def config_health(ok: bool, source: Any) -> bool | Health:
    """/health: as before, and says when the daemon runs on its last good copy."""
    info = _status(source)
    if info is None:
        return ok
    from smartstack.admin import Health

    age = age_text(info["written_at"], time.time())
    detail = f"the config file is invalid: running the last good config {age}"
    return Health(ok, {"config_last_good": info, "detail": detail})


def config_state(source: Any) -> dict[str, Any]:
    """/status's ``config_last_good``: null, or the copy in use and the file's errors."""
    return {"config_last_good": _status(source)}


def _status(source: Any) -> dict[str, Any] | None:
    """The copy in use with its age (``LastGood.status``), or None (a source without one)."""
    last_good = getattr(source, "last_good", None)
    return None if last_good is None else last_good.status()
