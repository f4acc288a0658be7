"""Where things are: the effective paths and commands derived from the ``haproxy`` config block.

Airbnb configs name every path themselves (``stats socket`` in ``global``,
``socket_file_path``, ``reload_command``). In managed mode (ours) synapse runs
HAProxy itself, so it fills in what the operator left out: an admin socket, a
master socket and a server-state file beside ``config_file_path``. The lines it
adds to ``global``/``defaults`` are listed here so the renderer and the
controller agree on them.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from synapse.config import HAProxyConfig
from synapse.haproxy.answers import parse_version
from synapse.haproxy.routes import frontend_mode
from synapse.haproxy.sockets import UnexpectedAnswer
from synapse.haproxy.words import words as line_words

# HAProxy 2.4+ closes idle frontend connections at once when a reload soft-stops the old
# worker: a client sending its next request on one just then gets no answer (a 502 behind
# an ALB). With this option (2.6+) the old worker answers it, then closes the connection.
IDLE_CLOSE = "idle-close-on-response"
IDLE_CLOSE_SINCE = (2, 6, 0)


def _code(tokens: list[str]) -> list[str]:
    """A line's tokens before its ``# comment`` (HAProxy ignores what follows)."""
    for index, token in enumerate(tokens):
        if token.startswith("#"):
            return tokens[:index]
    return tokens


def _keyword_lines(lines: list[str], keyword: str) -> list[list[str]]:
    """Token lists of the lines that start with ``keyword`` (one or more words), their
    comments left out, quotes resolved as HAProxy does (``stats socket "/run/a.sock"``)."""
    words = keyword.split()
    found = []
    for line in lines:
        tokens = line_words(line)
        if tokens[: len(words)] == words:
            found.append(tokens)
    return found


def unix_stats_sockets(global_lines: list[str]) -> list[str]:
    """Paths of the unix ``stats socket`` lines (``ipv4@``/``ipv6@``/``abns@`` are skipped)."""
    paths = []
    for tokens in _keyword_lines(global_lines, "stats socket"):
        if len(tokens) < 3:
            continue
        # ${VAR}: HAProxy expands it with its environment, which a managed HAProxy has
        # from us; one still unexpanded here is left out (review s31: synapse created a
        # literal `${SOCKDIR}` dir and waited on a socket that never answered)
        address = os.path.expandvars(tokens[2])
        if address.startswith("unix@"):
            address = address[len("unix@") :]
        if "@" in address or ":" in address or "$" in address:
            continue
        paths.append(address)
    return paths


@dataclass(frozen=True)
class Settings:
    """The effective HAProxy control settings of one synapse."""

    config_path: Path | None
    runtime_sockets: tuple[str, ...]  # admin sockets that take runtime commands
    managed: bool
    binary: str
    master_socket: Path | None  # managed mode only
    pid_file: Path | None
    state_file: Path | None  # HAProxy's server-state-file (dumped before each reload)
    candidate_path: Path | None  # where a candidate config is validated
    check_command: str | None  # Airbnb check_command (shell), else `haproxy -c`
    extra_global: tuple[str, ...] = field(default=())  # lines synapse adds to `global`
    first_global: tuple[str, ...] = field(default=())  # added before the operator's (own_socket)
    shared_sockets: tuple[str, ...] = field(default=())  # managed: admin sockets for others
    extra_defaults: tuple[str, ...] = field(default=())  # lines synapse adds to `defaults`
    hold_listeners: bool = True  # managed: synapse keeps copies (synapse.haproxy.listeners)
    launch: bool = True  # managed: synapse starts HAProxy (false: its own container does)
    http_frontend_lines: tuple[str, ...] = field(default=())  # added to HTTP frontends
    # What it supports: managed, the binary's (`haproxy -v`); Airbnb, the running one's.
    version: tuple[int, int, int] | None = None

    @property
    def can_validate(self) -> bool:
        return self.check_command is not None or shutil.which(self.binary) is not None


def binary_version(config: HAProxyConfig) -> tuple[int, int, int] | None:
    """The managed binary's version (``haproxy -vv``, once per binary, with ``binary_lua``;
    (0, 0, 0) when it cannot be read: a missing binary, the start says why); None when not
    managed."""
    if config.managed is None:
        return None
    return _version(shutil.which(config.managed.binary) or config.managed.binary)


_VERSIONS: dict[str, tuple[int, int, int]] = {}  # binary -> its version, once read
_LUA: dict[str, bool] = {}  # binary -> built with Lua (read with its version)


def _version(binary: str) -> tuple[int, int, int]:
    if binary not in _VERSIONS:  # (a failure is not kept: the next start asks again)
        try:  # (-vv: -v's first line, then the build options)
            out = subprocess.run([binary, "-vv"], capture_output=True, text=True, timeout=10)
            _VERSIONS[binary] = parse_version(out.stdout.split("version", 1)[1].strip())
            _LUA[binary] = "Built with Lua" in out.stdout or "+LUA" in out.stdout.split()
        except (OSError, subprocess.SubprocessError, IndexError, UnexpectedAnswer):
            return (0, 0, 0)
    return _VERSIONS[binary]


def binary_lua(binary: str) -> bool | None:
    """Whether the managed ``binary`` was built with Lua (None: its ``-vv`` not read)."""
    return _LUA.get(shutil.which(binary) or binary)


def running_settings(
    settings: Settings, config: HAProxyConfig, version: tuple[int, int, int] | None
) -> Settings | None:
    """Airbnb mode: the settings for the HAProxy that runs, whose ``version`` its runtime
    API gave (the process ``reload_command`` reloads: an ``haproxy`` on PATH may be another
    binary, or none), when ``settings`` were made for another; None: keep ``settings``."""
    if settings.managed or version is None or version == settings.version:
        return None
    return settings_for(config, version)


def http_frontend_extras(
    settings: Settings, lines: list[str], defaults: Iterable[str]
) -> list[str]:
    """What synapse adds to a frontend of ``lines``: ``settings.http_frontend_lines`` when
    it is an HTTP frontend and does not say otherwise itself (``no option ...``)."""
    if not settings.http_frontend_lines or frontend_mode(lines, defaults) != "http":
        return []
    if any(IDLE_CLOSE in line for line in lines):
        return []
    return list(settings.http_frontend_lines)


# Connections HAProxy serves at once on synapse's own admin socket (it uses ~5: an apply's,
# the settle reads', the sweep's, looks, the state dump's and outside-reload watch's shared
# one) and on each other admin socket (SHARED_MAXCONN, given to the operator's own lines
# that name none). All CLI listeners share one cap, `stats maxconn` (HAProxy's default 10),
# and so does the master's socket pair to its worker, through which a master-worker reload
# hands the listening sockets over (`-x sockpair@N`, not an expose-fd admin socket): others
# filling the cap left synapse's socket unanswered and failed the hand-over (new sockets
# bound beside the old ones: connections reset). So `stats maxconn` is at least the sum of
# the sockets' caps plus MASTER_ROOM (``stats_maxconn``).
OWN_MAXCONN = 20
SHARED_MAXCONN = 10
MASTER_ROOM = 5  # the master's socket pair: a reload's hand-over, commands it forwards

_WARNED: set[tuple[int, int]] = set()  # (the operator's stats maxconn, raised to): said once


def _maxconn(tokens: list[str]) -> int | None:
    """The ``maxconn`` of a `stats socket` line's tokens; None when it names none, or
    names 0 (no limit of its own: as uncapped as none)."""
    for index, token in enumerate(tokens[:-1]):
        if token == "maxconn" and tokens[index + 1].isdigit():
            return int(tokens[index + 1]) or None
    return None


def stats_maxconn(config: HAProxyConfig) -> int:
    """Managed mode: the least `stats maxconn` that leaves the master's socket pair room
    when every admin socket is full: synapse's own cap, the others' (an uncapped one gets
    SHARED_MAXCONN: ``managed_global``) and MASTER_ROOM."""
    others = [_maxconn(tokens) or SHARED_MAXCONN
              for tokens in _keyword_lines(config.global_, "stats socket")]  # fmt: skip
    return OWN_MAXCONN + (sum(others) if others else SHARED_MAXCONN) + MASTER_ROOM


def _capped(line: str) -> str:
    """An uncapped `stats socket` line (no ``maxconn``, or ``maxconn 0``) with
    SHARED_MAXCONN, before its comment (after it, HAProxy ignored it: uncapped)."""
    tokens = line.split()
    code = _code(tokens)
    if len(code) == len(tokens) and "maxconn" not in code:
        return f"{line.rstrip()} maxconn {SHARED_MAXCONN}"
    kept = [t for i, t in enumerate(code)
            if t != "maxconn" and (i == 0 or code[i - 1] != "maxconn")]  # fmt: skip
    return " ".join([*kept, "maxconn", str(SHARED_MAXCONN), *tokens[len(code) :]])


def _lower(values: list[str], least: int) -> bool:
    return bool(values) and values[0].isdigit() and int(values[0]) < least


def _warn_raised(theirs: int, least: int) -> None:
    if (theirs, least) not in _WARNED:  # (once: every render passes here)
        _WARNED.add((theirs, least))
        logging.getLogger("synapse.haproxy").warning(
            "haproxy.global: `stats maxconn %s` raised to %s: synapse's own admin socket "
            "(%s), your `stats socket` lines' maxconn and %s for the master's socket pair "
            "(a reload's listener hand-over) must fit in it", theirs, least, OWN_MAXCONN,
            MASTER_ROOM)  # fmt: skip


def managed_global(config: HAProxyConfig) -> list[str]:
    """Managed mode: the operator's `global` lines as rendered. A `stats socket` line with
    no ``maxconn`` (or ``maxconn 0``) gets SHARED_MAXCONN (``_capped``; uncapped, its
    clients could take all of `stats maxconn`: 30 holding it stalled changes 11 s and broke
    a reload's hand-over); a `stats maxconn` lower than ``stats_maxconn`` is raised to it,
    with a warning."""
    lines = []
    least = stats_maxconn(config)
    for line in config.global_:
        tokens = _code(line.split())
        if tokens[:2] == ["stats", "socket"] and len(tokens) > 2 and _maxconn(tokens) is None:
            line = _capped(line)
        elif tokens[:2] == ["stats", "maxconn"] and _lower(tokens[2:], least):
            _warn_raised(int(tokens[2]), least)
            line = f"stats maxconn {least}"
        lines.append(line)
    return lines


def own_socket(config: HAProxyConfig, base: Path, stem: str) -> Path:
    """Where synapse's own admin socket is: beside the socket the operator placed, the
    master socket (``master_socket_path``), else the first ``socket_file_path``, named
    after it (``m.sock`` -> ``m-synapse.sock``), else ``<name>-synapse.sock`` beside the
    config file. A config dir too long for a unix socket was fine with those two set
    short, as the docs advised: the new socket must not refuse that install's start.

    A name a configured socket has already gets a number (``m-synapse-2.sock``): the
    Airbnb example's ``socket_file_path: haproxy-synapse.sock`` beside a master socket
    ``haproxy.sock`` gave both `stats socket` lines one path, HAProxy kept the later one
    (capped, no ``expose-fd``) and no reload could hand the listeners over."""
    chosen = (config.managed and config.managed.master_socket_path) or (
        config.socket_paths[0] if config.socket_paths else None
    )
    placed = Path(chosen) if chosen else base / f"{stem}.sock"
    master = config.managed and config.managed.master_socket_path
    configured = [*config.socket_paths, *unix_stats_sockets(config.global_), master or ""]
    taken = {os.path.normpath(path) for path in configured if path}
    number = 1
    while True:  # (ends: finitely many are taken)
        name = f"{placed.stem}-synapse{f'-{number}' if number > 1 else ''}.sock"
        if os.path.normpath(placed.with_name(name)) not in taken:
            return placed.with_name(name)
        number += 1


def admin_sockets(config: HAProxyConfig, base: Path, stem: str) -> tuple[str, tuple[str, ...]]:
    """Managed mode: (synapse's own admin socket, the admin sockets left to others).

    Scrapers and operators shared an admin socket with synapse, and HAProxy serves 10
    connections at a time on all of them together (`stats maxconn`): 12 clients holding
    theirs stalled synapse's commands for seconds and had it reload, and the reload's
    hand-over of the listening sockets (through the master's socket pair, under the same
    cap) failed (the new worker bound new ones beside them: connections reset). synapse's
    own socket comes first (``expose-fd listeners``: synapse's own ``_getsocks``); the
    others are the operator's `stats socket` lines, else ``socket_file_path`` or
    ``<name>.sock``, each capped (SHARED_MAXCONN), and `stats maxconn` leaves room for the
    master's socket pair (``stats_maxconn``, ``managed_global``)."""
    own = str(own_socket(config, base, stem))  # (0600: our user only)
    if _keyword_lines(config.global_, "stats socket"):
        return own, tuple(unix_stats_sockets(config.global_))
    return own, (config.socket_paths[0] if config.socket_paths else str(base / f"{stem}.sock"),)


def settings_for(config: HAProxyConfig, version: tuple[int, int, int] | None = None) -> Settings:
    """The settings of ``config``; ``version``: the HAProxy's, when known (managed: the
    binary's, ``binary_version``; Airbnb: the running one's, ``running_settings``): what it
    supports is then used."""
    config_path = Path(config.config_file_path) if config.config_file_path else None
    managed = config.managed is not None
    base = config_path.parent if config_path else Path(".")
    stem = config_path.stem if config_path else "haproxy"
    extra_global: list[str] = []
    extra_defaults: list[str] = []

    sockets = list(config.socket_paths) or unix_stats_sockets(config.global_)
    first_global: tuple[str, ...] = ()
    shared: tuple[str, ...] = ()
    if managed:  # (``admin_sockets``)
        own, shared = admin_sockets(config, base, stem)
        sockets = [own]
        first_global = (
            f"stats socket {own} mode 600 level admin expose-fd listeners maxconn {OWN_MAXCONN}",
        )
        if not _keyword_lines(config.global_, "stats maxconn"):  # (else the operator's)
            first_global += (f"stats maxconn {stats_maxconn(config)}",)
        if not _keyword_lines(config.global_, "stats socket"):  # (else the operator's)
            line = f"stats socket {shared[0]} mode 600 level admin maxconn {SHARED_MAXCONN}"
            extra_global.append(line)

    state_file: Path | None = None
    configured_state = _keyword_lines(config.global_, "server-state-file")
    if configured_state and len(configured_state[0]) > 1:
        state_file = _state_path(config, configured_state[0][1])
    elif config.server_state_file or managed:
        state_file = Path(config.server_state_file or base / f"{stem}.state")
        extra_global.append(f"server-state-file {state_file}")
        state_file = _state_path(config, str(state_file))
    if state_file is not None and not _keyword_lines(
        config.defaults, "load-server-state-from-file"
    ):
        extra_defaults.append("load-server-state-from-file global")

    master_socket = None
    pid_file = None
    binary = "haproxy"
    if config.managed is not None:
        binary = config.managed.binary
        master_socket = Path(config.managed.master_socket_path or base / f"{stem}-master.sock")
        pid_file = Path(config.managed.pid_file) if config.managed.pid_file else None

    candidate = config.candidate_config_file_path
    if candidate is None and config_path is not None:
        candidate = str(config_path.with_name(config_path.name + ".candidate"))
    check_command = config.check_command if config.do_checks and config.check_command else None
    return Settings(
        config_path=config_path,
        runtime_sockets=tuple(sockets) if config.do_socket else (),
        managed=managed,
        binary=binary,
        master_socket=master_socket,
        pid_file=pid_file,
        state_file=state_file,
        candidate_path=Path(candidate) if candidate else None,
        check_command=check_command,
        extra_global=tuple(extra_global),
        first_global=first_global,
        shared_sockets=shared,
        extra_defaults=tuple(extra_defaults),
        # (launch false: a new HAProxy is not synapse's to hand them to: ``elsewhere``)
        hold_listeners=config.managed is None
        or (config.managed.hold_listeners and config.managed.launch),
        launch=config.managed is None or config.managed.launch,
        http_frontend_lines=_http_frontend_lines(config, version),
        version=version,
    )


def _state_path(config: HAProxyConfig, path: str) -> Path:
    """Where HAProxy reads the server-state file: a relative one under `server-state-base`
    when `global` sets it (synapse wrote it in its own working directory instead)."""
    based = _keyword_lines(config.global_, "server-state-base")
    if Path(path).is_absolute() or not based or len(based[0]) < 2:
        return Path(path)
    return Path(based[0][1]) / path


def _http_frontend_lines(
    config: HAProxyConfig, version: tuple[int, int, int] | None
) -> tuple[str, ...]:
    """Idle kept-alive connections survive a reload (``IDLE_CLOSE``), unless the operator's
    ``defaults`` decide it themselves. Both modes: the Airbnb way reloads too."""
    if version is None or version < IDLE_CLOSE_SINCE:
        return ()
    if any(IDLE_CLOSE in line for line in config.defaults):
        return ()
    return (f"option {IDLE_CLOSE}",)


# Where HAProxy lives: these cannot change while synapse runs (a SIGHUP refuses them).
FIXED = ("config_path", "runtime_sockets", "managed", "master_socket", "binary", "pid_file",
         "hold_listeners", "launch")  # fmt: skip


def restart_needed(old: Settings, new: Settings) -> list[str]:
    """The settings ``new`` changes that only a synapse restart can take."""
    return [key for key in FIXED if getattr(new, key) != getattr(old, key)]
