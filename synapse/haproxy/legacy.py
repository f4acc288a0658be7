"""HAProxy 1.x-era lines in users' configs, made valid for HAProxy 2.x (pure, no I/O).

Airbnb-era synapse configs carry section titles with an address (``listen stats :3212``)
and directives HAProxy 2.1-2.5 removed (``reqadd``, ``reqidel``, ``option forceclose``,
...). HAProxy 2.6 refuses the whole file for any of them, so synapse would never write a
config. Here:

- a title ``listen|frontend NAME ADDR`` becomes ``NAME`` plus a first line ``bind ADDR``;
- a removed directive with a one-to-one modern form is rewritten (``reqadd H:\\ v`` ->
  ``http-request add-header H v``), each with a warning;
- any other removed directive is an error naming where it is, the line and what to use.

Messages name the place as the caller gives it (file and key path).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from synapse.haproxy.plain_spaces import carries_data, kept_warning, plain_spaces, space_warning

# Removed directives without a one-to-one replacement: what to write instead.
_HINTS: dict[str, str] = {
    "reqrep": "'http-request replace-header NAME REGEX REPL' (or replace-path / replace-uri)",
    "reqirep": "'http-request replace-header NAME REGEX REPL' (or replace-path / replace-uri)",
    "rsprep": "'http-response replace-header NAME REGEX REPL'",
    "rspirep": "'http-response replace-header NAME REGEX REPL'",
    "reqdel": "'http-request del-header NAME'",
    "rspdel": "'http-response del-header NAME'",
    "reqidel": "'http-request del-header NAME'",
    "rspidel": "'http-response del-header NAME'",
    "reqtarpit": "'http-request tarpit if { req.hdr(NAME) -m reg REGEX }'",
    "reqitarpit": "'http-request tarpit if { req.hdr(NAME) -m reg REGEX }'",
    "reqdeny": "'http-request deny if { req.hdr(NAME) -m reg REGEX }'",
    "reqideny": "'http-request deny if { req.hdr(NAME) -m reg REGEX }'",
    "reqallow": "'http-request allow if { req.hdr(NAME) -m reg REGEX }'",
    "reqiallow": "'http-request allow if { req.hdr(NAME) -m reg REGEX }'",
    "reqpass": "nothing (remove it) or 'http-request allow if ...'",
    "reqipass": "nothing (remove it) or 'http-request allow if ...'",
    "rspdeny": "'http-response deny if { res.hdr(NAME) -m reg REGEX }'",
    "rspideny": "'http-response deny if { res.hdr(NAME) -m reg REGEX }'",
    "monitor-net": "'http-request return status 200 if { src NETWORK }'",
    "appsession": "'cookie NAME prefix' or a stick table",
    "grace": "nothing (remove it; 'hard-stop-after' in global bounds a soft stop)",
    "nbproc": "nothing (remove it: HAProxy 2.5+ uses threads, see 'nbthread')",
    "tune.chksize": "nothing (remove it: tune.bufsize is used)",
    "debug": "nothing (remove it: run haproxy with -d to debug)",
    "option http-tunnel": "nothing (remove it: HAProxy 2.1+ does not need it)",
    "option http_proxy": "'http-request set-dst' (see HAProxy's docs)",
}

# One-to-one renames: old first words -> new first words, the rest of the line unchanged.
_RENAMES: dict[str, str] = {
    "option forceclose": "option httpclose",
    "no option forceclose": "no option httpclose",
    "block": "http-request deny",
    "redispatch": "option redispatch",
    "srvtimeout": "timeout server",
    "clitimeout": "timeout client",
    "contimeout": "timeout connect",
}

_TITLE = re.compile(r"^\s*(listen|frontend)\s+(\S+)\s+(\S.*?)\s*$")
# keyword, first argument (HAProxy 1.x escapes spaces inside it as '\ '), the rest
_LINE = re.compile(r"^\s*(\S+)(?:\s+((?:\\.|\S)+))?(.*)$")
_DEL_PATTERN = re.compile(r"^\^([A-Za-z0-9!#$%&'*+.^_`|~-]+):(\.\*)?$")


@dataclass
class Modernized:
    """Lines after rewriting, with the warnings and errors (each naming its place)."""

    lines: list[str]
    warnings: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def modernize_title(title: str) -> tuple[str, str | None]:
    """``listen stats :3212`` -> (``listen stats``, ``bind :3212``); others unchanged."""
    match = _TITLE.match(title)
    if match is None:
        return title, None
    kind, name, address = match.groups()
    return f"{kind} {name}", f"bind {address}"


def _unescape(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text)


def _header_value(value: str) -> str:
    """A literal header value as an add-header argument (a log-format string)."""
    value = value.replace("%", "%%").replace('"', '\\"')
    return f'"{value}"' if not value or " " in value or "\\" in value else value


def _add_header(arg: str, rest: str, directive: str) -> str | None:
    name, sep, value = _unescape(arg).partition(":")
    if not sep or not name or " " in name:
        return None
    return f"{directive} add-header {name} {_header_value(value.strip())}{rest}"


def _del_header(arg: str, rest: str, directive: str) -> str | None:
    match = _DEL_PATTERN.match(arg)
    return f"{directive} del-header {match.group(1)}{rest}" if match else None


# Removed directives rewritten one-to-one when their argument has the simple shape.
_CONVERTERS: dict[str, Callable[[str, str], str | None]] = {
    "reqadd": lambda arg, rest: _add_header(arg, rest, "http-request"),
    "rspadd": lambda arg, rest: _add_header(arg, rest, "http-response"),
    "reqidel": lambda arg, rest: _del_header(arg, rest, "http-request"),
    "rspidel": lambda arg, rest: _del_header(arg, rest, "http-response"),
}


def _rename(line: str) -> str | None:
    words = line.split()
    for old, new in _RENAMES.items():
        size = len(old.split())
        if words[:size] == old.split():
            return " ".join([new, *words[size:]])
    return None


def modernize_line(line: str) -> tuple[str | None, str | None, str | None]:
    """(the line to write, or None to drop it; the removed directive and what to use instead
    when it cannot be rewritten). An unchanged line comes back as itself."""
    stripped = line.strip()
    match = _LINE.match(stripped)
    if match is None:
        return line, None, None
    keyword, arg, rest = match.group(1), match.group(2) or "", match.group(3)
    convert = _CONVERTERS.get(keyword)
    if convert is not None:
        converted = convert(arg, rest)
        if converted is not None:
            return converted, None, None
    renamed = _rename(stripped)
    if renamed is not None:
        return renamed, None, None
    if stripped.split() == ["nbproc", "1"]:
        return None, None, None  # the default: dropping it changes nothing
    two = " ".join(stripped.split()[:2])
    for removed in (two, keyword):
        if removed in _HINTS:
            return line, removed, _HINTS[removed]
    return line, None, None


def modernize_lines(lines: list[str], where: str) -> Modernized:
    """Rewrite what can be rewritten; ``where`` (e.g. ``FILE: services.web.haproxy.listen``)
    prefixes every message, with the line's index."""
    out = Modernized([])
    for index, line in enumerate(lines):
        if not isinstance(line, str):
            out.lines.append(line)
            continue
        place = f"{where}[{index}]"
        fixed, found = plain_spaces(line)  # a pasted no-break space (haproxy/plain_spaces.py)
        if found and carries_data(line):  # a pattern or value: perhaps meant (plain_spaces.py)
            out.warnings.append(kept_warning(place, line, found))
        elif found:
            out.warnings.append(space_warning(place, line, fixed, found))
            line = fixed
        new, removed, hint = modernize_line(line)
        if hint is not None:
            out.errors.append(
                f"{place}: {line.strip()!r}: HAProxy 2.x removed {removed!r}; use {hint}"
            )
            out.lines.append(line)
        elif new is None:
            out.warnings.append(f"{place}: {line.strip()!r} is the default in HAProxy 2.x: dropped")
        elif new != line:
            out.warnings.append(f"{place}: HAProxy 1.x {line.strip()!r} rewritten as {new!r}")
            out.lines.append(new)
        else:
            out.lines.append(line)
    return out
