"""Reading an HAProxy config text back: its sections without server lines, and its server lines.

The planner decides "reload or runtime" by comparing the candidate config with
the config HAProxy runs (the file on disk, which synapse keeps equal to it).
Server lines are what the runtime API can change, so they are compared one by
one; everything else (the skeleton) must be identical or HAProxy needs a reload.
Pure functions.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property
from typing import NamedTuple

from smartstack.strings import share

# Sections whose `server` lines are backend servers (peers/resolvers/... have other meanings).
PROXY_KINDS = ("backend", "listen")
# Tokens of a server line that the runtime API changes or that do not change behaviour.
_VALUED_RUNTIME_KEYWORDS = ("id", "weight")
_FLAG_RUNTIME_KEYWORDS = ("disabled", "enabled")


class ServerLine(NamedTuple):  # one per server of the config: immutable, quick to build
    """A server line, its leading ``id N`` and ``cookie V`` apart: what follows them
    (``tail``) is mostly the same for every server of a backend, so it is one shared
    string, not one per server (1,000 x 20: ~1.5 MB). ``options`` is built when asked."""

    name: str
    address: str  # as written: host:port
    id: int | None  # the leading `id N` (N in canonical form), or None
    cookie: str | None  # the `cookie V` after it (V: mostly the name, the same string)
    tail: str  # the options after those

    @property
    def options(self) -> str:
        """Everything after the address."""
        return join_options(self.id, self.cookie, self.tail)


def join_options(server_id: int | None, cookie: str | None, tail: str) -> str:
    """A server's options: ``id N`` and ``cookie V`` (those it has), then the rest."""
    head = f"id {server_id}" if server_id is not None else ""
    if cookie is not None:
        head = f"{head} cookie {cookie}" if head else f"cookie {cookie}"
    return f"{head} {tail}" if head and tail else head or tail


def split_options(tokens: list[str]) -> tuple[int | None, str | None, str]:
    """(id, cookie, tail) of a server line's option tokens, as ``join_options`` writes
    them: the id only when it leads, in canonical form, then the cookie (so the options
    read back the same)."""
    server_id = cookie = None
    start = 0
    if len(tokens) > 1 and tokens[0] == "id":
        value = tokens[1]
        if value.isascii() and value.isdigit() and value == str(int(value)):
            server_id, start = int(value), 2
    if len(tokens) > start + 1 and tokens[start] == "cookie":
        cookie, start = share(tokens[start + 1]), start + 2
    return server_id, cookie, share(" ".join(tokens[start:]))


@dataclass(frozen=True)
class ParsedConfig:
    # header line ("backend web") -> its non-server lines, whitespace-normalised, in order
    sections: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # proxy name -> server name -> server line, for `backend` and `listen` sections
    servers: dict[str, dict[str, ServerLine]] = field(default_factory=dict)

    @cached_property
    def proxies(self) -> frozenset[str]:
        """Names of the backend/listen sections."""
        names = set()
        for header in self.sections:
            tokens = header.split()
            if tokens[0] in PROXY_KINDS and len(tokens) > 1:
                names.add(tokens[1])
        return frozenset(names)

    def patched(
        self, sections: dict[str, tuple[str, ...]], servers: dict[str, dict[str, ServerLine]]
    ) -> ParsedConfig:
        """A config with other lines under the same headers (so the same proxies)."""
        parsed = ParsedConfig(sections, servers)
        parsed.__dict__["proxies"] = self.proxies  # the cached_property's value: not recomputed
        return parsed


@dataclass(frozen=True)
class Block:
    """One section of a config text as written: its header, its other lines, its servers.

    A config rendered in pieces (one per service) is parsed piece by piece and the blocks
    are assembled (``assemble``) into the same ParsedConfig a parse of the whole text gives;
    blocks of unchanged pieces are the same objects, so comparing configs is cheap.
    """

    header: str  # whitespace-normalised; "" for lines before any header
    lines: tuple[str, ...]
    proxy: str | None = None  # `backend`/`listen` name: its server lines are servers
    servers: dict[str, ServerLine] = field(default_factory=dict)


def _strip_comment(line: str) -> str:
    # HAProxy comments start at an unquoted, unescaped '#'; lines we write never quote one.
    if "#" not in line:  # nearly every line: no per-character scan
        return line
    in_quote = ""
    for index, char in enumerate(line):
        if char in "\"'" and (not in_quote or in_quote == char):
            in_quote = "" if in_quote else char
        elif char == "#" and not in_quote and (index == 0 or line[index - 1] != "\\"):
            return line[:index]
    return line


def parse_blocks(text: str) -> list[Block]:
    """The sections of ``text`` in order (comments and blank lines dropped)."""
    blocks: list[Block] = []
    header: str | None = None
    proxy: str | None = None
    lines: list[str] = []
    servers: dict[str, ServerLine] = {}

    def close() -> None:
        if header is not None:
            blocks.append(Block(header, tuple(lines), proxy, servers))

    for raw in text.splitlines():
        tokens = _strip_comment(raw).split()  # split once: the tokens make every form below
        if not tokens:
            continue
        normalised = " ".join(tokens)
        if not raw[:1].isspace():
            close()
            header, lines, servers = normalised, [], {}
            proxy = (tokens[1] if len(tokens) > 1 else "") if tokens[0] in PROXY_KINDS else None
            continue
        if header is None:  # body lines before any section: keep them as their own section
            header, lines, servers, proxy = "", [], {}, None
        if proxy is not None and tokens[0] == "server" and len(tokens) >= 3:
            # shared: the same strings as the server's spec and running state hold
            name = share(tokens[1])
            servers[name] = ServerLine(name, share(tokens[2]), *split_options(tokens[3:]))
            continue
        lines.append(normalised)
    close()
    return blocks


def assemble(blocks: Iterable[Block]) -> ParsedConfig:
    """The ParsedConfig of the concatenated texts the blocks came from.

    A repeated header (two ``defaults`` sections) gets a ``#2`` suffix; servers of two
    sections of the same proxy name are merged, as HAProxy would refuse them anyway.
    """
    sections: dict[str, tuple[str, ...]] = {}
    servers: dict[str, dict[str, ServerLine]] = {}
    for block in blocks:
        header = block.header
        suffix = 2
        while header in sections:
            header = f"{block.header} #{suffix}"
            suffix += 1
        sections[header] = block.lines
        if block.proxy is not None and block.servers:
            present = servers.get(block.proxy)
            servers[block.proxy] = block.servers if present is None else present | block.servers
    return ParsedConfig(sections, servers)


def parse_config(text: str) -> ParsedConfig:
    return assemble(parse_blocks(text))


def structural_options(options: str) -> str:
    """A server's options without what the runtime API sets (id, weight, disabled)."""
    tokens = options.split()
    kept: list[str] = []
    skip_next = False
    for token in tokens:
        if skip_next:
            skip_next = False
            continue
        if token in _VALUED_RUNTIME_KEYWORDS:
            skip_next = True
            continue
        if token in _FLAG_RUNTIME_KEYWORDS:
            continue
        kept.append(token)
    return " ".join(kept)


def section_changes(
    running: ParsedConfig, candidate: ParsedConfig, headers: Iterable[str] | None = None
) -> list[str]:
    """One line per section that differs: added, removed or changed.

    ``headers``: the only sections that may differ (None: any).
    """
    changes = []
    before, after = running.sections, candidate.sections
    if headers is not None:
        for header in sorted(headers):
            old, new = before.get(header), after.get(header)
            if old != new:
                state = "added" if old is None else "removed" if new is None else "changed"
                changes.append(f"'{header}' {state}")
        return changes
    if before == after:  # compares in C, and unchanged pieces are the very same objects
        return changes
    for header, lines in after.items():
        old = before.get(header)
        if old is None:
            changes.append(f"'{header}' added")
        elif old is not lines and old != lines:
            changes.append(f"'{header}' changed")
    changes.extend(f"'{h}' removed" for h in before if h not in after)
    return changes
