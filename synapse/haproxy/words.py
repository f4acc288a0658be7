"""The words of an HAProxy config line, as HAProxy 2.6 reads them (src/tools.c parse_line).

A plain ``line.split()`` keeps quotes and ``${VAR}`` in a path: ``pidfile "/run/h.pid"``
was judged as the path ``"/run/h.pid"`` (relative, in a missing directory) and a valid
config refused. Here: ``'...'`` and ``"..."`` quote (quotes removed), a backslash escapes
the next character (not inside ``'...'``), ``#`` outside quotes starts a comment.
Environment variables (``$VAR``, ``${VAR}``) are HAProxy's to expand, with its environment,
not ours: a word that has one keeps its ``$`` and ``has_env`` tells the checks to leave
it alone.
"""

from __future__ import annotations


def words(line: str) -> list[str]:
    """The words of ``line`` before its comment, quotes and escapes resolved."""
    found: list[str] = []
    word: list[str] = []
    started = False  # ('' is a word: an empty quoted string)
    quote = ""
    index = 0
    while index < len(line):
        char = line[index]
        index += 1
        if char == "\\" and quote != "'" and index < len(line):
            word.append(line[index])
            started = True
            index += 1
        elif quote:
            if char == quote:
                quote = ""
            else:
                word.append(char)
        elif char in "'\"":
            quote, started = char, True
        elif char == "#":
            break
        elif char.isspace():
            if started:
                found.append("".join(word))
            word, started = [], False
        else:
            word.append(char)
            started = True
    if started:
        found.append("".join(word))
    return found


def has_env(word: str) -> bool:
    """Whether HAProxy may expand an environment variable in ``word`` (its value unknown
    here: such a word is not judged)."""
    return "$" in word
