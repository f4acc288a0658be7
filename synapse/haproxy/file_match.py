"""Whether the config file on disk may be served while the candidate cannot be installed
(a start on a full disk, ``installer.SERVE_FILE``).

The file is the last config HAProxy ran, not today's: a port the new config gives to
another service (two services swapped ports, a port reused), or a service it removed,
would be answered by the file's service: a request answered by the wrong service, worse
than refused. So the file is served only when every frontend and listen section it has is
in the candidate exactly as it is (the same binds to the same backends, by name), and, on
the edge, its route maps on disk say what the candidate's do (one host or path moved or
added: a `map_beg` prefix could route it to another backend). Services the file lacks are
not served until the candidate gets in; servers come at runtime (the retry plans against
that HAProxy). Anything else: nothing is served, as before, and the retry waits for space.

Serving the file and then disabling the differing frontends on the runtime API is not
safe: the new worker accepts on every listener as soon as it runs, before its admin
socket can take a `disable frontend`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

from smartstack.logs import event
from synapse.atomic import read_text
from synapse.haproxy.configtext import ParsedConfig, parse_config
from synapse.haproxy.routes import RouteMaps

log = logging.getLogger("synapse.haproxy")

ANSWERING = ("frontend", "listen")  # the sections that bind ports


def unlike(file: ParsedConfig, candidate: ParsedConfig) -> list[str]:
    """The file's frontend and listen sections (headers) the candidate does not have as
    they are: served, one could answer a port for a service that is not the candidate's."""
    return [
        header
        for header, lines in file.sections.items()
        if header.split()[0] in ANSWERING and candidate.sections.get(header) != lines
    ]


def read_map(path: Path) -> dict[str, str] | None:
    """A route map file (``routes.map_text``): key -> backend; None: unreadable."""
    text = read_text(path)
    if text is None:
        return None
    entries = {}
    for line in text.splitlines():
        fields = line.split()
        if len(fields) == 2 and not fields[0].startswith("#"):
            entries[fields[0]] = fields[1]
    return entries


def maps_unlike(paths: Mapping[str, Path], wanted: RouteMaps) -> list[str]:
    """The route map kinds whose file on disk does not hold ``wanted``."""
    want = wanted.by_kind()
    found = {kind: read_map(path) for kind, path in paths.items()}
    return [kind for kind, entries in found.items() if (entries or {}) != dict(want[kind])]


def differences(
    path: Path, candidate: ParsedConfig, maps: Mapping[str, Path] | None, wanted: RouteMaps
) -> list[str] | None:
    """What keeps the config file at ``path`` from serving in place of ``candidate``: the
    sections and route maps (above) that differ; None: no file (blocking: a thread)."""
    text = read_text(path)
    if text is None:
        return None  # (start_from_file says nothing is on disk)
    sections = unlike(parse_config(text), candidate)
    read = {kind: map_path for kind, map_path in (maps or {}).items() if str(map_path) in text}
    return sections + [f"route map {kind}" for kind in maps_unlike(read, wanted)]


def say_not_served(differ: list[str]) -> None:
    event(log, "haproxy_file_not_served", level=logging.WARNING, differ=differ[:10],
          detail="the file on disk would answer these otherwise than the new config: "
          "nothing is served until the new config can be written")  # fmt: skip
