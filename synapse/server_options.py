"""Filtering ``haproxy_server_options`` that come from registry records.

A registry record is untrusted: its server options reach HAProxy only when the
operator opts in (``haproxy.registry_server_options.allow``), and then only the
whitelisted keywords, each with an argument of a strict shape. Anything else is
dropped and reported, never passed through. Pure functions, no I/O.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from smartstack.logs import event

if TYPE_CHECKING:
    from synapse.config import SynapseConfig

log = logging.getLogger("synapse.daemon")

MAX_TIMER_MS = 2**31 - 1  # HAProxy refuses longer timers ("timer overflow")
_TIME_UNITS_MS = {"us": 0.001, "ms": 1, "": 1, "s": 1000, "m": 60_000, "h": 3_600_000,
                  "d": 86_400_000}  # fmt: skip
_TIME = re.compile(r"(\d{1,10})(us|ms|s|m|h|d)?", re.ASCII)
_TOKEN = re.compile(r"[A-Za-z0-9_.-]{1,64}", re.ASCII)

# An argument check: True when HAProxy 2.6 accepts the value. The ranges matter as much as
# the shape: one record with `rise 0` would make every candidate config fail `haproxy -c`
# and so block every structural change of every service while it is registered.
Check = Callable[[str], bool]


def _integer(low: int, high: int) -> Check:
    def check(text: str) -> bool:
        return text.isascii() and text.isdigit() and len(text) <= 10 and low <= int(text) <= high

    return check


def haproxy_ms(text: str) -> float | None:
    """An HAProxy time (``500``, ``2s``, ``1m``: a bare number is ms) in ms; None: not one."""
    match = _TIME.fullmatch(text)
    if match is None:
        return None
    return int(match.group(1)) * _TIME_UNITS_MS[match.group(2) or ""]


def _timer(low_ms: float) -> Check:
    def check(text: str) -> bool:
        milliseconds = haproxy_ms(text)
        return milliseconds is not None and low_ms <= milliseconds <= MAX_TIMER_MS

    return check


def _token(text: str) -> bool:
    return _TOKEN.fullmatch(text) is not None


_COUNT = _integer(0, 9_999_999)
_POSITIVE = _integer(1, 9_999_999)  # rise/fall: "has to be > 0"
_INTERVAL = _timer(0.001)  # inter/fastinter/downinter: 0 is refused

# Server keywords we know how to parse: keyword -> check of its one argument (None = flag).
# A keyword an operator whitelists but that is not here is refused: without knowing whether
# it takes an argument we cannot tell the argument from the next keyword.
KNOWN_KEYWORDS: dict[str, Check | None] = {
    "backup": None,
    "disabled": None,
    "non-stick": None,
    "check": None,
    "no-check": None,
    "send-proxy": None,
    "send-proxy-v2": None,
    "weight": _integer(0, 256),  # HAProxy weights are 0-256
    "maxconn": _COUNT,
    "minconn": _COUNT,
    "maxqueue": _COUNT,
    "rise": _POSITIVE,
    "fall": _POSITIVE,
    "slowstart": _timer(0),
    "inter": _INTERVAL,
    "fastinter": _INTERVAL,
    "downinter": _INTERVAL,
    "cookie": _token,
}


@dataclass(frozen=True)
class FilteredOptions:
    text: str  # the options that passed, space separated ("" when none)
    dropped: tuple[str, ...] = ()  # one short reason per refused part

    def __bool__(self) -> bool:
        return bool(self.text)


def filter_server_options(options: str | None, allowed: Iterable[str]) -> FilteredOptions:
    """Keep only whitelisted, well-formed server keywords of ``options``.

    >>> filter_server_options("backup weight 10 track other/srv", ["backup", "weight"]).text
    'backup weight 10'
    """
    if not options:
        return FilteredOptions("")
    whitelist = {k for k in allowed if k in KNOWN_KEYWORDS}
    kept: list[str] = []
    dropped: list[str] = []
    tokens = options.split()
    index = 0
    while index < len(tokens):
        keyword = tokens[index]
        index += 1
        if keyword not in whitelist:
            dropped.append(f"{keyword[:32]!r} is not an allowed keyword")
            continue
        check = KNOWN_KEYWORDS[keyword]
        if check is None:
            kept.append(keyword)
            continue
        argument = tokens[index] if index < len(tokens) else None
        if argument is None or not check(argument):
            dropped.append(f"{keyword} needs a valid argument (got {str(argument)[:32]!r})")
            # A malformed argument is not re-read as a keyword: skip it too.
            index += 0 if argument is None or argument in whitelist else 1
            continue
        kept.extend((keyword, argument))
        index += 1
    return FilteredOptions(" ".join(kept), tuple(dropped))


def unknown_keywords(allowed: Iterable[str]) -> list[str]:
    """Whitelisted keywords this filter cannot parse (reported once at startup)."""
    return sorted(k for k in allowed if k not in KNOWN_KEYWORDS)


def warn_about(config: SynapseConfig) -> None:
    """Registry server options allowed with keywords that never pass (start, SIGHUP)."""
    if config.haproxy is not None:
        policy = config.haproxy.registry_server_options
        unknown = unknown_keywords(policy.keywords)
        if policy.allow and unknown:
            event(log, "registry_server_options_unknown_keywords", level=logging.WARNING,
                  keywords=unknown, effect="never passed through")  # fmt: skip
