"""The error every config loader raises, and how it names a key: shared by the loader
(``smartstack.configfile``, which re-exports ``ConfigError``) and the checks it runs
(``smartstack.config_check``), so that neither imports the other for them."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


class ConfigError(Exception):
    """One or more problems with a config file; each line names file, key and expectation."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__("\n".join(lines))
        self.lines = lines


def format_loc(loc: Iterable[Any]) -> str:
    """('services', 'web', 'checks', 0, 'timeout') -> 'services.web.checks[0].timeout'."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"
