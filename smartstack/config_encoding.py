"""Saying where and why a config file is not UTF-8 (review s34).

Both daemons read config files as UTF-8 (a UTF-8 byte order mark and CRLF line ends are
fine: YAML skips the one and reads the other), as Ruby's YAML parser does. A file saved
in another encoding was refused as ``FILE: not UTF-8 text``, without where: in a
500-line file the one Latin-1 ``é`` of a comment had to be hunted down by hand. Now the
line, column and byte are said, with the encoding it was probably saved in.
"""

from __future__ import annotations

import codecs
import re
from pathlib import Path
from typing import Any

_UTF16_BOMS = (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)
_UTF32_BOMS = (codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE)


def not_utf8_reason(data: bytes) -> str:
    """Why ``data`` (a file's bytes that do not decode as UTF-8) is refused: ``LINE:COL:
    ...`` (as a malformed YAML's place) or, for the whole file, `` ...``."""
    if data.startswith(_UTF32_BOMS):  # (before UTF-16: the LE BOMs share their start)
        return " the file is UTF-32 (it opens with a UTF-32 byte order mark); save it as UTF-8"
    if data.startswith(_UTF16_BOMS) or (len(data) > 1 and b"\x00" in data[:2]):
        return (
            " the file is UTF-16 (what Windows PowerShell's > and Out-File write, Notepad's "
            "'Unicode'); save it as UTF-8"
        )
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        start = exc.start
    else:  # (decodes now: it changed since it was read)
        return " not UTF-8 text"
    line = data.count(b"\n", 0, start) + 1
    line_start = data.rfind(b"\n", 0, start) + 1
    column = len(data[line_start:start].decode("utf-8", "replace")) + 1
    byte = data[start]
    meant = bytes([byte]).decode("cp1252", "replace")
    guess = f" ({meant!r} in Latin-1/Windows-1252?)" if byte >= 0xA0 and meant.isprintable() else ""
    return f"{line}:{column}: byte 0x{byte:02x} is not UTF-8{guess}; save the file as UTF-8"


def not_utf8_error(path: Path) -> str:
    """The one-line error for ``path``, which did not decode as UTF-8."""
    try:
        data = path.read_bytes()
    except OSError:
        return f"{path}: not UTF-8 text"
    return f"{path}:{not_utf8_reason(data)}"


UTF16_NO_BOM = (
    " the file is UTF-16 without a byte order mark (a NUL beside every character: iconv -t "
    "UTF-16LE, .NET's UnicodeEncoding); save it as UTF-8"
)


def utf16_without_bom(text: str) -> bool:
    """Whether ``text`` (decoded as UTF-8) is ASCII saved as UTF-16: a NUL beside every
    character, from the start (a file cut short by a crash has its NULs at the end)."""
    head = text[:64]
    return len(head) >= 4 and any(
        head[side::2].count("\x00") == len(head[side::2]) for side in (0, 1)
    )


def control_character(text: str, position: int, problem: str) -> tuple[str, str]:
    """(``:LINE:COL``, the problem) for a character YAML refuses at ``position`` of
    ``text`` (its ReaderError has no line); NUL bytes are what a file cut short by a crash
    or a full disk holds (the blocks allocated, never written)."""
    line = text.count("\n", 0, position) + 1
    column = position - (text.rfind("\n", 0, position) + 1) + 1
    if text[position : position + 1] == "\x00":
        problem = (
            "NUL bytes in the file (\\0: a file cut short by a crash or a full "
            "disk?); write it again"
        )
    return f":{line}:{column}", problem


# An escape that can write a UTF-16 surrogate: JSON's and YAML's \uD800-\uDFFF, YAML's \U0000D800.
_SURROGATE_ESCAPE = re.compile(r"\\(?:u|U0000)[dD][89a-fA-F]")
_SURROGATES = re.compile("[\ud800-\udfff]")


def _paired(text: str) -> str | None:
    """``text`` with its surrogate pairs joined (``\\ud83d\\ude00``, which PyYAML leaves as two
    characters and JSON joins), None when one is alone."""
    try:
        return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le")
    except UnicodeDecodeError:
        return None


def lone_surrogates(text: str, doc: Any) -> tuple[list[Any], str] | None:
    """(key path, value) of the first string (key or value) of ``doc`` holding a lone UTF-16
    surrogate, which no file or ZooKeeper path can be written with (``\\udce9`` is what
    Python's surrogateescape and ``json.dumps`` of it make of a Latin-1 byte): kazoo's
    connection thread died on one in a ``zk_path``, every service of the connection unregistered,
    synapse -k ended in a traceback on one in an HAProxy line (review s34). Surrogate pairs are
    joined in place (YAML reads ``"\\ud83d\\ude00"`` as two). Only a file with such an escape
    is walked."""
    if not _SURROGATE_ESCAPE.search(text):
        return None
    pending: list[tuple[list[Any], Any, Any, Any]] = [([], None, None, doc)]
    while pending:  # (bounded: a parsed document is a finite tree)
        loc, parent, key, value = pending.pop()
        if isinstance(value, str) and _SURROGATES.search(value):
            joined = _paired(value)
            if joined is None:
                return loc, value
            parent[key] = joined
        elif isinstance(value, dict):
            for name in list(value):
                if isinstance(name, str) and _SURROGATES.search(name):
                    joined = _paired(name)
                    if joined is None:
                        return [*loc, name], name
                    value[joined] = value.pop(name)
                    name = joined
                pending.append(([*loc, name], value, name, value[name]))
        elif isinstance(value, list):
            pending += [([*loc, i], value, i, item) for i, item in enumerate(value)]
    return None
