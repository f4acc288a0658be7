"""How long a unix socket path the managed HAProxy can bind, checked before it starts.

HAProxy 2.6 binds a unix socket as ``<path>.<pid>.tmp`` and renames it into place; that
name, with its NUL, must fit in ``sun_path`` (108 bytes on Linux). So a path is refused
at start ("name too long for UNIX socket (limit usually 97)") when it is longer than
107 - len(".tmp") - 1 - the pid's digits: 97 bytes with 5-digit pids (pid_max 32768),
95 with 7-digit ones (pid_max 4194304). `haproxy -c` binds nothing and never sees it:
``synapse -k`` said ok, and the HAProxy that synapse then started never came up.
"""

from __future__ import annotations

import os
from pathlib import Path

from synapse.config import HAProxyConfig
from synapse.haproxy.settings import Settings

SUN_PATH = 108  # bytes of sockaddr_un.sun_path on Linux, its terminating NUL included
PID_MAX_FILE = Path("/proc/sys/kernel/pid_max")
PID_MAX_LIMIT = 4194304  # the kernel's largest pid_max (64-bit): when the file is unreadable


def bind_limit(pid_max_file: Path = PID_MAX_FILE) -> int:
    """The longest path (bytes) HAProxy binds a unix socket at, for pids of this host."""
    try:
        pid_max = int(pid_max_file.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        pid_max = PID_MAX_LIMIT
    return SUN_PATH - 1 - len(".tmp") - len(f".{pid_max - 1}")


def bound_sockets(config: HAProxyConfig, settings: Settings) -> list[tuple[str, str, str]]:
    """(key, path, how to change it) of each unix socket the managed HAProxy binds."""
    if config.managed is None or settings.master_socket is None:
        return []
    beside = "beside haproxy.config_file_path by default"
    master_key = "haproxy.managed.master_socket_path"
    master_fix = f"set {master_key} shorter" if config.managed.master_socket_path else (
        f"set {master_key} ({beside}) or move the config file"
    )  # fmt: skip
    found = [(master_key, str(settings.master_socket), master_fix)]
    own_key, own = (
        "haproxy.config_file_path",
        "move the config file (synapse's own admin socket is beside it)",
    )
    if config.managed.master_socket_path:
        own_key, own = (
            master_key,
            f"set {master_key} shorter (synapse's own admin socket is beside it)",
        )
    elif config.socket_paths:
        own_key, own = (
            "haproxy.socket_file_path[0]",
            "set haproxy.socket_file_path[0] shorter (synapse's own admin socket is beside it)",
        )
    found += [(own_key, path, own) for path in settings.runtime_sockets]
    for index, path in enumerate(settings.shared_sockets):
        if config.socket_paths:
            key = f"haproxy.socket_file_path[{index}]"
            found.append((key, path, f"set {key} shorter"))
        elif any(line.split()[:2] == ["stats", "socket"] for line in config.global_):
            found.append(("haproxy.global", path, "shorten its `stats socket` path"))
        else:
            fix = f"set haproxy.socket_file_path ({beside}) or move the config file"
            found.append(("haproxy.socket_file_path", path, fix))
    return found


def socket_path_problems(config_path: Path, config: HAProxyConfig, settings: Settings) -> list[str]:
    """One error line per socket path the managed HAProxy could not bind (too long)."""
    limit = bind_limit()
    lines = []
    for key, path, fix in bound_sockets(config, settings):
        size = len(os.fsencode(path))
        if size > limit:
            lines.append(
                f"{config_path}: {key}: the unix socket {path} is {size} bytes; HAProxy binds "
                f"at most {limit} on this host ('<path>.<pid>.tmp' must fit in the "
                f"{SUN_PATH}-byte sun_path): {fix}"
            )
    return lines
