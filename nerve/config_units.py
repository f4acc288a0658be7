"""Warnings for time values that look like milliseconds (or a typo) where seconds are meant.

nerve's times are seconds, as in Airbnb's nerve: ``check_interval: 500`` checks every 8
minutes and ``check_interval: 0.001`` ~1,000 times a second; both load, and both are far more
likely a unit mix-up than a choice. A warning says what the value
means in seconds and what was probably meant; nothing is refused.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from nerve.config import ServiceConfig

# Above these a value is read as milliseconds written where seconds are meant.
# (A check's 120 s timeout is a slow exec check's, not 120 ms: review s32.)
LIKELY_MS = {"check_interval": 250.0, "timeout": 250.0, "etcd_lease_ttl": 1000,
             "zk_session_timeout": 1000.0}  # fmt: skip
FASTEST_INTERVAL = 0.01  # below it nerve checks more than 100 times a second


def unit_warnings(path: Path, where: str, service: ServiceConfig) -> list[str]:
    """The warnings for one service block (``where``: its key, e.g. ``services.web``)."""
    return [f"{path}: {where}.{key}: {text}" for key, text in _suspects(service)]


def _suspects(service: ServiceConfig) -> Iterator[tuple[str, str]]:
    interval = service.check_interval
    if interval < FASTEST_INTERVAL:
        yield (
            "check_interval",
            (
                f"{interval:g} s runs the checks ~{round(1 / interval):,} times a second; values "
                f"are seconds (0.5 checks twice a second)"
            ),
        )
    values = [("check_interval", interval)]
    values += [(f"checks[{i}].timeout", c.timeout) for i, c in enumerate(service.checks)]
    if service.reporter_type == "etcd":
        values.append(("etcd_lease_ttl", service.etcd_lease_ttl))
    else:
        values.append(("zk_session_timeout", service.zk_session_timeout))
    for key, value in values:
        if value >= LIKELY_MS[key.rsplit(".", 1)[-1]]:
            yield (
                key,
                (
                    f"{value:g} s ({_spoken(value)}); values are seconds: if {value:g} "
                    f"milliseconds were meant, write {value / 1000:g}"
                ),
            )


def _spoken(seconds: float) -> str:
    """``500`` → ``8.3 minutes``: how long the value really is."""
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} hours"
    return f"{seconds / 60:.1f} minutes"
