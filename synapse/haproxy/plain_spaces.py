"""Unicode spaces in users' raw HAProxy lines, written as the plain space meant (pure).

HAProxy separates words with spaces and tabs only. A no-break space (U+00A0, what a
wiki, a chat or a word processor puts in a pasted line) is part of a word there:
``option httpchk GET<NBSP>/health`` passes ``haproxy -c`` as a check of the URI
``GET<NBSP>/health``, every server answers 400 and is marked down (review s34: 50 of 50
requests 503); ``timeout<NBSP>connect 5s`` is refused as an unknown keyword that reads
exactly like the right one. Outside quotes such a character is never what was meant, so
it becomes a space (a zero-width one is dropped), with a warning that shows it. Quoted
text is HAProxy's literal text and is left as it is.
"""

from __future__ import annotations

import unicodedata

# Invisible characters with no width: dropped rather than made a space.
_ZERO_WIDTH = frozenset("\u200b\u200c\u200d\u2060\ufeff")


def _odd(char: str) -> bool:
    """A space HAProxy does not split on (every Unicode space but ' '), or a zero-width one."""
    if char.isascii():
        return False  # (the common case; ' ' and '\t' are HAProxy's own separators)
    return char in _ZERO_WIDTH or unicodedata.category(char) == "Zs"


def plain_spaces(line: str) -> tuple[str, list[str]]:
    """(``line`` with the odd spaces outside quotes made plain, their names: ``'U+00A0
    NO-BREAK SPACE'``, once each, in order); an unchanged line comes back as itself."""
    if line.isascii():
        return line, []
    out: list[str] = []
    found: list[str] = []
    quote = ""  # the open quote ('"' or "'"), "" outside quotes
    escaped = False
    for char in line:
        if escaped:  # HAProxy's backslash escape, outside single quotes
            escaped = False
        elif char == "\\" and quote != "'":
            escaped = True
        elif quote:
            quote = "" if char == quote else quote
        elif char in "\"'":
            quote = char
        elif _odd(char):
            name = f"U+{ord(char):04X} {unicodedata.name(char, 'SPACE')}"
            if name not in found:
                found.append(name)
            if char not in _ZERO_WIDTH:
                out.append(" ")
            continue
        out.append(char)
    return ("".join(out), found) if found else (line, [])


def space_warning(place: str, line: str, fixed: str, found: list[str]) -> str:
    """The warning for a line ``plain_spaces`` changed, the original shown escaped."""
    return (
        f"{place}: {line.strip()!r} has {', '.join(found)} outside quotes, which HAProxy "
        f"does not read as a space (a pasted line?): written as {fixed.strip()!r}"
    )
