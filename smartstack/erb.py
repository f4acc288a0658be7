"""The little ERB that real synapse config files use: environment variables, nothing else.

Ruby synapse renders its config files as ERB before parsing them, and real files use
it only to read the environment. We support exactly those forms::

    <%= ENV['NAME'] %>   <%= ENV["NAME"] %>
    <%= ENV.fetch('NAME') %>   <%= ENV.fetch('NAME', 'default') %>

An unset variable without a default is an error naming it; any other ERB tag is
refused (we do not run Ruby), with the file and line.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

_TAG = re.compile(r"<%(.*?)%>", re.DOTALL)
_INDEX = re.compile(r"=\s*ENV\[\s*(['\"])(?P<name>[A-Za-z_][A-Za-z0-9_]*)\1\s*\]\s*-?")
_FETCH = re.compile(
    r"=\s*ENV\.fetch\(\s*(['\"])(?P<name>[A-Za-z_][A-Za-z0-9_]*)\1"
    r"(?:\s*,\s*(['\"])(?P<default>[^'\"\\]*)\3)?\s*\)\s*-?"
)


class ErbError(ValueError):
    """An ERB tag we cannot render; the message names file and line."""


def _line_of(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


def render(text: str, path: Path, environ: Mapping[str, str] | None = None) -> str:
    """Replace the supported ``<%= ENV ... %>`` tags; ErbError for anything else."""
    if "<%" not in text:
        return text
    env = os.environ if environ is None else environ
    out: list[str] = []
    position = 0
    for tag in _TAG.finditer(text):
        line = _line_of(text, tag.start())
        body = tag.group(1).strip()
        form = _INDEX.fullmatch(body) or _FETCH.fullmatch(body)
        if form is None:
            shown = tag.group(0) if len(tag.group(0)) <= 60 else tag.group(0)[:57] + "..."
            raise ErbError(
                f"{path}:{line}: unsupported ERB {shown!r}: only <%= ENV['NAME'] %> and "
                "<%= ENV.fetch('NAME', 'default') %> are rendered"
            )
        name = form.group("name")
        value = env.get(name)
        if value is None and "default" in form.groupdict():
            value = form.group("default")
        if value is None:
            raise ErbError(f"{path}:{line}: environment variable {name} is not set (no default)")
        out.append(text[position : tag.start()])
        out.append(value)
        position = tag.end()
    rest = text[position:]
    if "<%" in rest:
        line = _line_of(text, position + rest.index("<%"))
        raise ErbError(f"{path}:{line}: ERB tag '<%' is never closed with '%>'")
    out.append(rest)
    return "".join(out)
