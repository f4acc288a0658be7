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

# Invisible characters with no width: dropped rather than made a space. Not the joiners
# U+200C/U+200D: letters of Persian, Hindi... and emoji sequences hold them (review s34).
_ZERO_WIDTH = frozenset("\u200b\u2060\ufeff")

# Directives whose words are patterns or values of the traffic (an ACL's header value, a
# set-header's text, a regex, a file name): a Unicode space there may be meant (a header
# 'Jean<NBSP>Dupont': made a space, `-m str Jean Dupont` matched 'Jean' or 'Dupont' and no
# longer the name: review s34). Such a line is kept as written, with a warning.
_DATA_KEYWORDS = frozenset({
    "acl", "http-request", "http-response", "http-after-response", "tcp-request",
    "tcp-response", "use_backend", "use-server", "redirect", "errorfile", "errorloc",
    "errorloc302", "errorloc303", "lua-load", "lua-load-per-thread", "lua-prepend-path",
    "log-format", "log-format-sd", "error-log-format", "unique-id-format", "capture",
    "monitor", "stick", "stick-table", "set-var", "set-var-fmt", "setenv", "presetenv",
    "http-check", "email-alert", "description",
})  # fmt: skip


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


def carries_data(line: str) -> bool:
    """Whether ``line``'s directive takes patterns or values of the traffic (kept as written)."""
    words = line.split(None, 1)
    return bool(words) and words[0].lower() in _DATA_KEYWORDS


def kept_warning(place: str, line: str, found: list[str]) -> str:
    """The warning for a line of a ``carries_data`` directive, kept as written."""
    return (
        f"{place}: {line.strip()!r} has {', '.join(found)} outside quotes, which HAProxy "
        "reads as part of a word, not as a space (a pasted line?): kept as written, as a "
        "pattern or value may hold one; write ' ' if a space was meant, or quote the word"
    )


def space_warning(place: str, line: str, fixed: str, found: list[str]) -> str:
    """The warning for a line ``plain_spaces`` changed, the original shown escaped."""
    return (
        f"{place}: {line.strip()!r} has {', '.join(found)} outside quotes, which HAProxy "
        f"does not read as a space (a pasted line?): written as {fixed.strip()!r}"
    )
