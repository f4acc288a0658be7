"""Reading an HAProxy config text back: its sections without server lines, and its server lines.

The planner decides "reload or runtime" by comparing the candidate config with
the config HAProxy runs (the file on disk, which synapse keeps equal to it).
Server lines are what the runtime API can change, so they are compared one by
one; everything else (the skeleton) must be identical or HAProxy needs a reload.
Pure functions.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# Sections whose `server` lines are backend servers (peers/resolvers/... have other meanings).
PROXY_KINDS = ("backend", "listen")
# Tokens of a server line that the runtime API changes or that do not change behaviour.
_VALUED_RUNTIME_KEYWORDS = ("id", "weight")
_FLAG_RUNTIME_KEYWORDS = ("disabled", "enabled")


@dataclass(frozen=True)
class ServerLine:
    name: str
    address: str  # as written: host:port
    options: str  # everything after the address


@dataclass(frozen=True)
class ParsedConfig:
    # header line ("backend web") -> its non-server lines, whitespace-normalised, in order
    sections: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # proxy name -> server name -> server line, for `backend` and `listen` sections
    servers: dict[str, dict[str, ServerLine]] = field(default_factory=dict)

    @property
    def proxies(self) -> frozenset[str]:
        """Names of the backend/listen sections."""
        names = set()
        for header in self.sections:
            tokens = header.split()
            if tokens[0] in PROXY_KINDS and len(tokens) > 1:
                names.add(tokens[1])
        return frozenset(names)


def _strip_comment(line: str) -> str:
    # HAProxy comments start at an unquoted, unescaped '#'; lines we write never quote one.
    in_quote = ""
    for index, char in enumerate(line):
        if char in "\"'" and (not in_quote or in_quote == char):
            in_quote = "" if in_quote else char
        elif char == "#" and not in_quote and (index == 0 or line[index - 1] != "\\"):
            return line[:index]
    return line


def parse_config(text: str) -> ParsedConfig:
    sections: dict[str, list[str]] = {}
    servers: dict[str, dict[str, ServerLine]] = {}
    header: str | None = None
    for raw in text.splitlines():
        line = _strip_comment(raw).rstrip()
        if not line.strip():
            continue
        normalised = " ".join(line.split())
        if not raw[:1].isspace():
            header = normalised
            suffix = 2
            while header in sections:  # two `defaults` sections: keep both, in order
                header = f"{normalised} #{suffix}"
                suffix += 1
            sections[header] = []
            continue
        if header is None:  # body lines before any section: keep them as their own section
            header = ""
            sections[header] = []
        tokens = normalised.split()
        kind = header.split()[0] if header else ""
        if kind in PROXY_KINDS and tokens[0] == "server" and len(tokens) >= 3:
            proxy = header.split()[1] if len(header.split()) > 1 else ""
            servers.setdefault(proxy, {})[tokens[1]] = ServerLine(
                tokens[1], tokens[2], " ".join(tokens[3:])
            )
            continue
        sections[header].append(normalised)
    return ParsedConfig({h: tuple(lines) for h, lines in sections.items()}, servers)


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


def section_changes(running: ParsedConfig, candidate: ParsedConfig) -> list[str]:
    """One line per section that differs: added, removed or changed."""
    changes = []
    for header, lines in candidate.sections.items():
        if header not in running.sections:
            changes.append(f"'{header}' added")
        elif running.sections[header] != lines:
            changes.append(f"'{header}' changed")
    changes.extend(f"'{h}' removed" for h in running.sections if h not in candidate.sections)
    return changes
