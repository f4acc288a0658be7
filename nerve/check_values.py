"""Load-time checks of the values an HTTP check sends.

Each of these passed ``nerve -k`` and then failed at every check for ever, so the service
was never registered (h11's "Illegal target characters", a UnicodeEncodeError, "Name or
service not known"): refused at load instead, with what was probably meant.
Pure functions; a problem is returned as text for the caller's ValueError.
"""

from __future__ import annotations

import re
from urllib.parse import quote

from smartstack.config_check import idna_hint

# RFC 9112 request-target as h11 takes it: printable ASCII, no space.
_TARGET = re.compile(r"[\x21-\x7e]+", re.ASCII)
_PRINTABLE = "".join(chr(c) for c in range(0x21, 0x7F))
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+", re.ASCII)  # a header name
_FIELD_VALUE = re.compile(r"[\x20-\x7e\t]*", re.ASCII)  # no CR/LF, no non-ASCII
_WHITESPACE = re.compile(r"\s")


def uri_problem(uri: str) -> str | None:
    if _TARGET.fullmatch(uri):
        return None
    return (
        f"{uri!r} is not an HTTP request target (printable ASCII, no spaces or line "
        f"breaks): did you mean the percent-encoded {quote(uri, safe=_PRINTABLE)!r}?"
    )


def header_problem(name: str, value: str) -> str | None:
    if not _TOKEN.fullmatch(name):
        return (
            f"header name {name!r} is not an HTTP token (ASCII letters, digits and "
            "!#$%&'*+.^_`|~- only, no spaces or line breaks)"
        )
    if not _FIELD_VALUE.fullmatch(value) or value != value.strip(" \t"):  # (h11 refuses both)
        hint = ""
        if value.isascii():
            hint = f": did you mean {' '.join(value.split())!r}?"
        elif name.lower() == "host":
            hint = idna_hint(value)
        return (
            f"header {name!r} value {value!r} must be printable ASCII without line breaks "
            f"or surrounding whitespace{hint}"
        )
    return None


def host_problem(host: str) -> str | None:
    if _WHITESPACE.search(host):
        stripped = "".join(host.split())
        return f"{host!r} contains whitespace (no such host): did you mean {stripped!r}?"
    return None
