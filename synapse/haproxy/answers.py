"""Parsers of HAProxy's answers: `show info`, `show backend`, `show servers state`, `show proc`."""

from __future__ import annotations

import functools
import re
import time
from collections.abc import Collection, Container, Iterator, Mapping
from dataclasses import dataclass, field
from operator import itemgetter

from smartstack.strings import share
from synapse.haproxy.running import CHECK_BITS, RunningServer, state_label
from synapse.haproxy.sockets import UnexpectedAnswer

# `show servers state` format 1; used when the header line is missing.
SERVER_STATE_COLUMNS = (
    "be_id", "be_name", "srv_id", "srv_name", "srv_addr", "srv_op_state", "srv_admin_state",
    "srv_uweight", "srv_iweight", "srv_time_since_last_change", "srv_check_status",
    "srv_check_result", "srv_check_health", "srv_check_state", "srv_agent_state",
    "bk_f_forced_id", "srv_f_forced_id", "srv_fqdn", "srv_port", "srvrecord", "srv_use_ssl",
    "srv_check_port", "srv_check_addr", "srv_agent_addr", "srv_agent_port",
)  # fmt: skip


def parse_show_info(text: str) -> dict[str, str]:
    info = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            info[key.strip()] = value.strip()
    return info


def parse_version(version: str) -> tuple[int, int, int]:
    match = re.match(r"(\d+)\.(\d+)(?:\.(\d+))?", version)
    if match is None:
        raise UnexpectedAnswer(f"cannot read an HAProxy version from {version!r}")
    major, minor, patch = match.groups()
    return int(major), int(minor), int(patch or 0)


def parse_show_backend(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


# The columns RunningServer takes, as text and as integers.
_TEXT_COLUMNS = ("be_name", "srv_name", "srv_addr", "srv_check_state")
# srv_check_state as printed -> the bits RunningServer keeps: a dict lookup of the text,
# not one more int() per row (the reads of every write parse all rows). HAProxy 2.6 prints
# ``check.state & 0x0F``; the table takes any byte.
_CHECK_BITS = {str(bits): bits & CHECK_BITS for bits in range(256)}
_INT_COLUMNS = ("srv_id", "srv_port", "srv_op_state", "srv_admin_state", "srv_uweight",
                "srv_iweight")  # fmt: skip
_SINCE = "srv_time_since_last_change"  # (optional: a row without it changed at the read)
_STATUS = "srv_check_status"  # (optional: 0 without it; parsed for a server built only)
CANNOT_FIND_BACKEND = "Can't find backend"
_PID = re.compile(r"^Pid: (\d+)$", re.MULTILINE)


Getters = tuple[itemgetter, itemgetter, int | None, int | None]


def _column_indexes(columns: list[str]) -> Getters:
    """Getters of a row's text and integer columns (tuples: each takes several columns),
    and the indexes of srv_time_since_last_change and srv_check_status (None: not in the
    header)."""
    try:
        texts = itemgetter(*(columns.index(c) for c in _TEXT_COLUMNS))
        ints = itemgetter(*(columns.index(c) for c in _INT_COLUMNS))
    except ValueError as err:
        raise UnexpectedAnswer(f"servers state columns without {err}") from err
    optional = (columns.index(c) if c in columns else None for c in (_SINCE, _STATUS))
    return texts, ints, *optional


_DEFAULT_GETTERS = _column_indexes(list(SERVER_STATE_COLUMNS))


@functools.lru_cache(maxsize=8)  # (the same header line in every answer: not parsed each time)
def _header_getters(header: str) -> Getters:
    return _column_indexes(header.lstrip("#").split())


def check_servers_state(text: str) -> None:
    """UnexpectedAnswer unless ``text`` starts like a format-1 `show servers state` dump
    (an error message must not become a state file); no parse of its rows."""
    if text.split("\n", 1)[0].strip() != "1":
        raise UnexpectedAnswer(f"not a format-1 servers state dump: {text[:120]!r}")


def parse_servers_state(
    text: str, known: Mapping[str, RunningServer] | None = None
) -> list[RunningServer]:
    """Rows of `show servers state` (format 1); columns by the header when there is one.

    ``known``: servers by name (the view's of this backend): a row equal to one of them
    gives that very object. A re-read of unchanged backends (the sweep, the check a
    second after commands) then builds no server and interns no string (~60 % of its
    parse, issue 15), and the view's comparison finds the same objects (a known server
    keeps its ``changed_at``: HAProxy's seconds since the change grow, the change does not)."""
    check_servers_state(text)
    lines = text.splitlines()
    texts, ints, since, status = _DEFAULT_GETTERS
    servers = []
    intern = share  # one string per backend, name and address; one int per port and per
    shared: dict[int, int] = {}  # change time: all the state held by the reader shares them
    now = int(time.monotonic())
    get = known.get if known else None
    for line in lines[1:]:
        if line.startswith("#"):
            texts, ints, since, status = _header_getters(line)
            continue
        fields = line.split()
        if not fields:
            continue
        try:
            backend, name, addr, check = texts(fields)  # (20k rows at a cold start: no genexpr)
            sid, port, op_state, admin, weight, initial = map(int, ints(fields))
            bits = _CHECK_BITS[check]
        except (IndexError, KeyError, ValueError) as err:
            raise UnexpectedAnswer(f"bad servers state line {line[:120]!r}: {err}") from err
        if get is not None:
            old = get(name)
            if old is not None and (
                old.id == sid and old.port == port and old.op_state == op_state
                and old.admin_state == admin and old.weight == weight
                and old.initial_weight == initial and old.addr == addr
                and old.backend == backend and old.check_state == bits
            ):  # fmt: skip
                servers.append(old)
                continue
        port = shared.setdefault(port, port)
        changed = now - _optional(fields, since, _SINCE)
        changed = shared.setdefault(changed, changed)
        try:  # (inline, not _optional: a call per row costs ~4 % of a cold parse)
            checked = int(fields[status]) if status is not None else 0
        except (IndexError, ValueError) as err:
            raise UnexpectedAnswer(f"bad {_STATUS} in {line[:120]!r}: {err}") from err
        servers.append(RunningServer(intern(backend), intern(name), sid, intern(addr), port,
                                     op_state, admin, weight, initial, bits, changed,
                                     checked))  # fmt: skip
    return servers


_LABEL_COLUMNS = ("be_name", "srv_name", "srv_op_state", "srv_admin_state")


@functools.lru_cache(maxsize=8)
def _label_getter(header: str) -> tuple[itemgetter, int]:
    """The getter of a row's label columns, and how many fields to split (not all 25)."""
    columns = header.lstrip("#").split() if header else list(SERVER_STATE_COLUMNS)
    try:
        indexes = [columns.index(c) for c in _LABEL_COLUMNS]
    except ValueError as err:
        raise UnexpectedAnswer(f"servers state columns without {err}") from err
    return itemgetter(*indexes), max(indexes) + 1


@functools.lru_cache(maxsize=64)  # (a handful of (op, admin) pairs in any fleet)
def _label(op_state: str, admin_state: str) -> str:
    return state_label(int(op_state), int(admin_state))


def parse_state_labels(text: str, backend: str) -> dict[str, str]:
    """{server: state label} of `show servers state <backend>`, sorted by name: what a
    look needs (synapse.haproxy.looks), without a RunningServer per row. A zone-health look
    of 1,000 stranded services reads them all every 0.1 s, and the full parse was ~70 % of
    its 32 ms (cProfile, review s38)."""
    found: list[tuple[str, str]] = []
    for be, name, label in _label_rows(text):
        if be != backend:
            raise UnexpectedAnswer(f"'show servers state {backend}' named another backend")
        found.append((name, label))
    return dict(sorted(found))


def parse_labels_of(
    show_backend: str, state: str, wanted: Collection[str]
) -> dict[str, dict[str, str] | None]:
    """{backend: {server: state label}} of ``wanted`` from a whole `show servers state`
    (every backend; `show backend` tells a backend without servers, {}, from one HAProxy
    lacks, None): one answer for the looks at many backends, the rows of others skipped.
    (A regular expression over the whole answer took as long as splitting each row: ~2 ms
    for 4,000 rows, review s39.)"""
    have = set(parse_show_backend(show_backend))
    found: dict[str, list[tuple[str, str]]] = {b: [] for b in wanted if b in have}
    for be, name, label in _label_rows(state, found):
        found[be].append((name, label))
    return {b: dict(sorted(found[b])) if b in found else None for b in wanted}


def _label_rows(text: str, only: Container[str] | None = None) -> Iterator[tuple[str, str, str]]:
    """(backend, server, state label) of each row of a `show servers state` answer (of
    backends in ``only``: the label of another is not worked out)."""
    check_servers_state(text)
    get, split = _label_getter("")
    for line in text.splitlines()[1:]:
        if line.startswith("#"):
            get, split = _label_getter(line)
            continue
        fields = line.split(None, split)
        if not fields:
            continue
        try:
            be, name, op_state, admin_state = get(fields)
            if only is not None and be not in only:
                continue
            label = _label(op_state, admin_state)
        except (IndexError, ValueError) as err:
            raise UnexpectedAnswer(f"bad servers state line {line[:120]!r}: {err}") from err
        yield be, name, label


def _optional(fields: list[str], index: int | None, column: str) -> int:
    """A row's srv_time_since_last_change (0 without the column; parsed only for a row that
    is no known server: what the planner orders leftovers by)."""
    if index is None:
        return 0
    try:
        return int(fields[index])
    except (IndexError, ValueError) as err:
        raise UnexpectedAnswer(f"bad {column} in {' '.join(fields)[:120]!r}: {err}") from err


@dataclass(frozen=True)
class ProcInfo:
    """The master's `show proc`."""

    master_pid: int | None = None
    reloads: int = 0
    failed_reloads: int = 0
    workers: tuple[int, ...] = ()
    old_workers: tuple[int, ...] = ()
    versions: dict[int, str] = field(default_factory=dict)


def parse_show_proc(text: str) -> ProcInfo:
    section = "master"
    master: int | None = None
    reloads = failed = 0
    groups: dict[str, list[int]] = {"workers": [], "old_workers": []}
    versions: dict[int, str] = {}
    for line in text.splitlines():
        if line.startswith("# "):
            section = line[2:].strip().replace(" ", "_")
            continue
        fields = line.split()
        if not fields or not fields[0].isdigit():
            continue
        pid = int(fields[0])
        versions[pid] = fields[-1]
        if section == "master" and len(fields) > 2 and fields[1] == "master":
            master = pid
            reloads = int(fields[2]) if fields[2].isdigit() else 0
            match = re.search(r"\[failed:\s*(\d+)\]", line)
            failed = int(match.group(1)) if match else 0
        elif section in groups:
            groups[section].append(pid)
    return ProcInfo(
        master, reloads, failed, tuple(groups["workers"]), tuple(groups["old_workers"]), versions
    )


_STOPPING = re.compile(r"^Stopping: 1$", re.MULTILINE)


def is_stopping(info: str) -> bool:
    """Whether `show info` came from a process that is stopping (an old worker after a
    reload, still serving the connections it had)."""
    return _STOPPING.search(info) is not None


def parse_pid(path: str, info: str) -> str:
    found = _PID.search(info)
    if found is None:
        raise UnexpectedAnswer(f"{path}: `show info` has no Pid: {info[:120]!r}")
    return found.group(1)


def parse_all_backends(show_backend: str, state: str) -> dict[str, dict[str, RunningServer] | None]:
    result: dict[str, dict[str, RunningServer] | None] = {
        name: {} for name in parse_show_backend(show_backend)
    }
    for server in parse_servers_state(state):
        servers = result.setdefault(server.backend, {})
        assert servers is not None
        servers[server.name] = server
    return result
