"""The open files a managed HAProxy will ask for, against what this host lets it have.

HAProxy 2.6 (src/haproxy.c) sets its RLIMIT_NOFILE at start to ``ulimit-n`` when the
`global` section has it, else to its ``maxsock``: 10 reserved + 2 per connection of
``maxconn`` + 3 per thread + one per listener, check, pipe... With ``strict-limits`` (on by
default) a limit it cannot set is fatal: "[ALERT] Cannot raise FD limit to 200068, limit is
20000". `haproxy -c` never gets there: ``synapse -k`` said ok, the HAProxy synapse started
never came up (retried forever), and a SIGHUP adding such a line left every later reload
failing. So the need is a lower bound (2 * maxconn + 13: one thread, no listener; with
``ulimit-n`` too, the larger: HAProxy still checks maxsock against the hard limit, "FD limit
(20000) too low for maxconn=15000/maxsock=30028") and only a need above the limit is
refused: a config HAProxy accepts is never refused.

The limit is the hard RLIMIT_NOFILE HAProxy inherits from synapse (its child), or
``fs.nr_open`` when HAProxy may raise it: CAP_SYS_RESOURCE in synapse's effective set, or
in the binary's file capabilities.
"""

from __future__ import annotations

import contextlib
import os
import resource
import struct
from dataclasses import dataclass
from pathlib import Path

from synapse.haproxy.words import has_env, words

RESERVED = 10  # global.maxsock's start ("reserve 10 fds")
PER_THREAD = 3  # an epoll fd and a wake-up pipe per thread
CAP_SYS_RESOURCE = 24
NR_OPEN = Path("/proc/sys/fs/nr_open")
STATUS = Path("/proc/self/status")
RAISE_HARD = "raise LimitNOFILE / ulimit -Hn"
RAISE_NR_OPEN = "raise fs.nr_open"


@dataclass(frozen=True)
class FdNeed:
    index: int  # the line's index in haproxy.global
    line: str
    need: int  # the least RLIMIT_NOFILE HAProxy will insist on
    keyword: str  # ulimit-n or maxconn
    why: str


@dataclass(frozen=True)
class HostLimit:
    limit: int
    source: str  # what sets it, for the message
    raise_it: str = RAISE_HARD  # how the operator raises it


def _number(token: str) -> int | None:
    """HAProxy reads these with atol: leading digits."""
    digits = ""
    for char in token:
        if not char.isdigit():
            break
        digits += char
    return int(digits) if digits else None


def fd_need(lines: list[str], listeners: int = 0) -> FdNeed | None:
    """What the `global` lines make HAProxy insist on (None: nothing, or `no strict-limits`
    anywhere: HAProxy 2.6 then warns and runs with what it gets, whatever the order of
    the lines). The first ``ulimit-n``, ``maxconn`` and ``nbthread`` count, as in HAProxy
    ("already specified. Continuing."); a value from the environment is not judged.
    ``listeners``: the frontend ports, one open file each beside maxconn's (review s34:
    1,000 services at `maxconn 256` needed 1,578 where the bound said 525; -k said ok and
    HAProxy never started under a hard limit of 1,024)."""
    found: dict[str, tuple[int, str, int]] = {}
    for index, line in enumerate(lines):
        tokens = words(line)
        if tokens[:2] == ["no", "strict-limits"]:
            return None
        if len(tokens) > 1 and tokens[0] in ("ulimit-n", "maxconn", "nbthread"):
            value = None if has_env(tokens[1]) else _number(tokens[1])
            if tokens[0] not in found:
                found[tokens[0]] = (index, line, value or 0)
    needs = []
    if "ulimit-n" in found and (value := found["ulimit-n"][2]):
        index, line, _ = found["ulimit-n"]
        needs.append(FdNeed(index, line, value, "ulimit-n", f"sets its open-file limit to {value}"))
    if "maxconn" in found and (value := found["maxconn"][2]):
        # (with ulimit-n too: HAProxy still checks its maxsock against the hard limit,
        # "FD limit (20000) too low for maxconn=15000/maxsock=30067")
        index, line, _ = found["maxconn"]
        threads = found["nbthread"][2] if "nbthread" in found else 1
        own = RESERVED + PER_THREAD * max(threads, 1)
        need = 2 * value + own + listeners
        ports = f", {listeners} listening ports" if listeners else ""
        why = f"raises its open-file limit to at least {need} (2 per connection, {own} of "
        why += f"its own{ports})"
        needs.append(FdNeed(index, line, need, "maxconn", why))
    return max(needs, key=lambda found_need: found_need.need, default=None)


def host_limit(hard: int, nr_open: int, may_raise: bool) -> HostLimit:
    """What HAProxy can set: up to the hard limit, or fs.nr_open when it may raise it (an
    unlimited hard limit is capped by the kernel at nr_open too)."""
    if may_raise:
        source = "fs.nr_open: HAProxy may raise its hard limit (CAP_SYS_RESOURCE)"
        return HostLimit(nr_open, source, RAISE_NR_OPEN)
    if hard == resource.RLIM_INFINITY or hard > nr_open:
        source = "fs.nr_open, below synapse's hard RLIMIT_NOFILE"
        return HostLimit(nr_open, source, RAISE_NR_OPEN)
    return HostLimit(hard, "the hard RLIMIT_NOFILE synapse passes on to HAProxy, `ulimit -Hn`")


def cap_effective(status: str) -> int:
    """CapEff of a /proc/<pid>/status text (0 when absent)."""
    for line in status.splitlines():
        if line.startswith("CapEff:"):
            return int(line.split()[1], 16)
    return 0


def file_caps_permit(data: bytes) -> bool:
    """Whether a ``security.capability`` xattr (vfs_cap_data) permits CAP_SYS_RESOURCE."""
    if len(data) < 8:
        return False
    permitted = struct.unpack_from("<I", data, 4)[0]
    return bool(permitted & (1 << CAP_SYS_RESOURCE))


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def this_host(binary: str | None) -> HostLimit:
    """The limit a HAProxy ``binary`` that synapse starts gets on this host, now."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    nr_open = _number(_read(NR_OPEN).strip()) or 1048576  # (the kernel's default)
    may_raise = bool(cap_effective(_read(STATUS)) & (1 << CAP_SYS_RESOURCE))
    if binary and not may_raise:
        with contextlib.suppress(OSError):  # (no xattr: no file capabilities)
            may_raise = file_caps_permit(os.getxattr(binary, "security.capability"))
    return host_limit(hard, nr_open, may_raise)


def fd_problem(where: str, lines: list[str], host: HostLimit, listeners: int = 0) -> str | None:
    """The error line when HAProxy would refuse to start here (None: it starts)."""
    need = fd_need(lines, listeners)
    if need is None or need.need <= host.limit:
        return None
    fix = f"lower {need.keyword}, or {host.raise_it}"
    return (
        f"{where}.global[{need.index}]: `{need.line.strip()}`: HAProxy {need.why}, and this "
        f"host allows {host.limit} ({host.source}): it would not start ('Cannot raise FD "
        f"limit'): {fix}"
    )
