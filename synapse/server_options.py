"""Filtering ``haproxy_server_options`` that come from registry records.

A registry record is untrusted: its server options reach HAProxy only when the
operator opts in (``haproxy.registry_server_options.allow``), and then only the
whitelisted keywords, each with an argument of a strict shape. Anything else is
dropped and reported, never passed through. Pure functions, no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

_INT = re.compile(r"^\d{1,7}$")
_WEIGHT = re.compile(r"^(?:25[0-6]|2[0-4]\d|1\d\d|\d\d?)$")  # HAProxy weights are 0-256
_TIME = re.compile(r"^\d{1,9}(?:us|ms|s|m|h|d)?$")
_TOKEN = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")

# Server keywords we know how to parse: keyword -> pattern of its one argument (None = flag).
# A keyword an operator whitelists but that is not here is refused: without knowing whether
# it takes an argument we cannot tell the argument from the next keyword.
KNOWN_KEYWORDS: dict[str, re.Pattern[str] | None] = {
    "backup": None,
    "disabled": None,
    "non-stick": None,
    "check": None,
    "no-check": None,
    "send-proxy": None,
    "send-proxy-v2": None,
    "weight": _WEIGHT,
    "maxconn": _INT,
    "minconn": _INT,
    "maxqueue": _INT,
    "rise": _INT,
    "fall": _INT,
    "slowstart": _TIME,
    "inter": _TIME,
    "fastinter": _TIME,
    "downinter": _TIME,
    "cookie": _TOKEN,
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
        pattern = KNOWN_KEYWORDS[keyword]
        if pattern is None:
            kept.append(keyword)
            continue
        argument = tokens[index] if index < len(tokens) else None
        if argument is None or not pattern.match(argument):
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
