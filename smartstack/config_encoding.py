"""Saying where and why a config file is not UTF-8 (review s34).

Both daemons read config files as UTF-8 (a UTF-8 byte order mark and CRLF line ends are
fine: YAML skips the one and reads the other), as Ruby's YAML parser does. A file saved
in another encoding was refused as ``FILE: not UTF-8 text``, without where: in a
500-line file the one Latin-1 ``é`` of a comment had to be hunted down by hand. Now the
line, column and byte are said, with the encoding it was probably saved in.
"""

from __future__ import annotations

import codecs
from pathlib import Path

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
