"""Frontend ports another process already listens on, found before our HAProxy binds them.

HAProxy binds with SO_REUSEPORT, so a second synapse (or any HAProxy of the same user)
whose config binds the same port starts "successfully" and the kernel splits the
connections between the two. Before a managed HAProxy starts or reloads, the ``bind``
addresses of its config are compared with the live TCP listeners of this network
namespace (sock_diag, else ``/proc/net/tcp*``); a listener owned by a process outside
our own HAProxy (the masters synapse started or adopted, their workers) is a clash,
reported with the port and the owner. Another master running the same config file is not
ours: one left under a master socket that moved would go on serving beside ours, never
updated (synapse.haproxy.moved adopts it first, and replaces it).
"""

from __future__ import annotations

import ipaddress
import os
import socket
import struct
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

LISTEN = "0A"
_SKIPPED_PREFIXES = ("unix@", "abns@", "fd@", "sockpair@", "udp", "quic", "/")
_FAMILY_PREFIXES = ("ipv4@", "ipv6@", "tcp@", "tcp4@", "tcp6@")
MAX_RANGE = 256  # ports of one "bind :8000-8010" range checked at most
TAKEN = "frontend port already in use, HAProxy would share it (SO_REUSEPORT)"
NOT_HERE = "bind address not on this host"  # (synapse.haproxy.not_here)
PORT_RECHECK_S = 2.0  # between looks at the binds of services left out for them (port_taken)


def waits(error: str) -> bool:
    """An error of a bind HAProxy cannot have yet (``port_taken``), not of a bad line."""
    return TAKEN in error or NOT_HERE in error


@dataclass(frozen=True)
class Clash:
    address: str  # as the config's bind line says it
    port: int
    owners: tuple[str, ...]  # "pid 123 (haproxy)"; empty when not visible to this user
    pids: tuple[int, ...] = ()  # the owners' pids
    missing: str = ""  # the address the bind needs that this host does not have (not_here)

    @property
    def why(self) -> str:
        return NOT_HERE if self.missing else TAKEN

    def __str__(self) -> str:
        if self.missing:
            return f"{self.address} (HAProxy binds it once {self.missing} is on an interface)"
        who = ", ".join(self.owners) or "a process of another user"
        return f"port {self.port} ({self.address}) is already bound by {who}"


def _lines_with(text: str, word: str) -> Iterator[str]:
    """The lines of ``text`` that contain ``word``: 20,000 server lines are not split."""
    start = 0
    while (index := text.find(word, start)) != -1:
        end = text.find("\n", index)
        end = len(text) if end == -1 else end
        # (splitlines() splits on more than "\n": the caller splits each of these again)
        yield text[text.rfind("\n", 0, index) + 1 : end]
        start = end + 1


def bind_items(config_text: str) -> Iterator[tuple[str, str, list[int], list[str]]]:
    """(as written, host, ports, the line's options) for every TCP address of the config's
    ``bind`` lines."""
    candidates = _lines_with(config_text, "bind")
    for line in (line for text in candidates for line in text.splitlines()):
        tokens = line.split()
        if len(tokens) < 2 or tokens[0] != "bind":
            continue
        for written in tokens[1].split(","):
            address = written
            for prefix in _FAMILY_PREFIXES:
                address = address.removeprefix(prefix)
            if address.startswith(_SKIPPED_PREFIXES):
                continue
            host, sep, ports = address.rpartition(":")
            if sep:
                yield written, host.strip("[]"), _ports(ports), tokens[2:]


def bind_addresses(config_text: str) -> list[tuple[str, str, int]]:
    """(as written, ip, port) for every TCP address of the config's ``bind`` lines; a
    `::` bind without `v6only` is dual-stack (Linux's default): 0.0.0.0 too."""
    found = []
    resolved: dict[str, set[str]] = {}
    for written, host, ports, options in bind_items(config_text):
        for port in ports:
            if host not in resolved:  # a thousand frontends bind one address
                resolved[host] = resolve(host)
            found.extend((written, ip, port) for ip in resolved[host])
            if "::" in resolved[host] and _dual_stack(options):
                found.append((written, "0.0.0.0", port))
    return found


def _dual_stack(options: list[str]) -> bool:
    """Whether a `::` bind with ``options`` takes IPv4 too: `v4v6` says so, `v6only` not,
    else the host's net.ipv6.bindv6only (HAProxy leaves IPV6_V6ONLY to it; 0 by default)."""
    if "v4v6" in options or "v6only" in options:
        return "v4v6" in options
    try:
        return Path("/proc/sys/net/ipv6/bindv6only").read_text().strip() != "1"
    except OSError:
        return True


def _ports(text: str) -> list[int]:
    first, _, last = text.partition("-")
    if not first.isdigit() or (last and not last.isdigit()):
        return []
    low, high = int(first), int(last or first)
    return list(range(low, min(high, low + MAX_RANGE - 1) + 1))


def resolve(host: str) -> set[str]:
    if host in ("", "*"):
        return {"0.0.0.0"}
    try:
        return {str(ipaddress.ip_address(host))}
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except OSError:
        return set()  # `haproxy -c` reports names that do not resolve
    return {str(info[4][0]) for info in infos}


def _decode(hex_address: str) -> tuple[str, int]:
    ip_hex, port_hex = hex_address.split(":")
    raw = bytes.fromhex(ip_hex)
    # /proc prints each 32-bit word in host (little-endian) order.
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    return str(ipaddress.ip_address(words)), int(port_hex, 16)


def listeners() -> list[tuple[str, int, str]]:
    """(ip, port, socket inode) of every listening TCP socket of this network namespace.

    Asked of the kernel through sock_diag, which dumps only sockets in LISTEN state: a busy
    proxy host has tens of thousands of connections, and /proc/net/tcp lists them all.
    """
    try:
        return _listeners_netlink()
    except OSError:
        return _listeners_proc()


_NLMSG_DONE, _NLMSG_ERROR, _SOCK_DIAG_BY_FAMILY = 3, 2, 20
_NLM_F_REQUEST_DUMP = 0x1 | 0x300
_TCP_LISTEN = 10
_NETLINK_SOCK_DIAG = 4


def _listeners_netlink() -> list[tuple[str, int, str]]:
    found = []
    for family in (socket.AF_INET, socket.AF_INET6):
        # inet_diag_req_v2: family, protocol, ext, pad, states, then a zeroed inet_diag_sockid
        request = struct.pack("=BBBxI", family, socket.IPPROTO_TCP, 0, 1 << _TCP_LISTEN)
        request += bytes(48)
        header = struct.pack("=IHHII", 16 + len(request), _SOCK_DIAG_BY_FAMILY,
                             _NLM_F_REQUEST_DUMP, 1, 0)  # fmt: skip
        with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, _NETLINK_SOCK_DIAG) as nl:
            nl.settimeout(5)
            nl.send(header + request)
            found.extend(_read_dump(nl, family))
    return found


def _read_dump(nl: socket.socket, family: int) -> list[tuple[str, int, str]]:
    found = []
    while True:
        data = nl.recv(65536)
        offset = 0
        while offset + 16 <= len(data):
            length, kind = struct.unpack_from("=IH", data, offset)
            if kind == _NLMSG_DONE:
                return found
            if kind == _NLMSG_ERROR or length < 16:
                raise OSError("sock_diag refused the request")
            body = offset + 16
            # inet_diag_msg: family, state, timer, retrans, sockid (sport, dport big-endian,
            # src[16], dst[16], if, cookie[2]), expires, rqueue, wqueue, uid, inode
            sport = struct.unpack_from(">H", data, body + 4)[0]
            raw = data[body + 8 : body + 8 + (4 if family == socket.AF_INET else 16)]
            inode = struct.unpack_from("=I", data, body + 68)[0]
            found.append((str(ipaddress.ip_address(raw)), sport, str(inode)))
            offset += (length + 3) & ~3


def _listeners_proc(proc_net: Path = Path("/proc/net")) -> list[tuple[str, int, str]]:
    found = []
    for name in ("tcp", "tcp6"):
        try:
            lines = (proc_net / name).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 9 and fields[3] == LISTEN:
                ip, port = _decode(fields[1])
                found.append((ip, port, fields[9]))
    return found


def _overlaps(wanted: str, bound: str) -> bool:
    a, b = ipaddress.ip_address(wanted), ipaddress.ip_address(bound)
    if a == b or (b.is_unspecified and (b.version == 6 or a.version == 4)):
        return True
    return a.is_unspecified and a.version == b.version


def socket_owners(inodes: set[str], pids: Iterable[int] | None = None) -> dict[str, set[int]]:
    """inode -> pids holding that socket, among ``pids`` (None: every process this user
    may look into)."""
    owners: dict[str, set[int]] = {inode: set() for inode in inodes}
    targets = {f"socket:[{inode}]": inode for inode in inodes}
    if pids is None:
        entries = [e for e in Path("/proc").iterdir() if e.name.isdigit()]
    else:
        entries = [Path(f"/proc/{pid}") for pid in pids]
    for entry in entries:
        try:
            fds = list((entry / "fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                link = os.readlink(fd)
            except OSError:
                continue
            if link in targets:
                owners[targets[link]].add(int(entry.name))
    return owners


def _describe(pid: int) -> str:
    try:
        name = Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        name = "?"
    return f"pid {pid} ({name})"


def family(master_pid: int | None) -> set[int]:
    """Our HAProxy master and its children (workers, old workers of a reload): where our
    own listeners are looked for first, so a reload needs no scan of every process."""
    if master_pid is None:
        return set()
    pids = {master_pid}
    try:
        children = Path(f"/proc/{master_pid}/task/{master_pid}/children").read_text()
    except OSError:
        return pids
    return pids | {int(pid) for pid in children.split()}


def runs_config(pid: int, config_path: str) -> bool:
    """``pid`` is an HAProxy started with ``-f config_path`` (not a pid reused since)."""
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return config_path.encode() in args


def clash_lines(config_text: str, clashes: Iterable[Clash]) -> list[tuple[int, Clash]]:
    """(line number, clash) for each ``bind`` line of ``config_text`` that binds a clash's
    address and port (numbered as ``str.splitlines``, as isolation reads a candidate)."""
    found = []
    for number, line in enumerate(config_text.splitlines(), 1):
        tokens = line.split()
        if len(tokens) >= 2 and tokens[0] == "bind":
            written = tokens[1].split(",")
            found += [(number, clash) for clash in clashes if clash.address in written]
    return found


def foreign_listeners(
    config_text: str, own_pids: Iterable[int] = (), own_inodes: Collection[str] = ()
) -> list[Clash]:
    """The ``bind`` addresses of ``config_text`` another process listens on already.

    Ours (never a clash): ``own_pids`` (the HAProxy processes synapse started or adopted),
    and the sockets ``own_inodes`` (HAProxy's own, held by synapse for it:
    synapse.haproxy.listeners).
    """
    wanted = bind_addresses(config_text)
    if not wanted:
        return []
    by_port: dict[int, list[tuple[str, str]]] = {}  # 1,000 binds x 1,000 listeners: no product
    for bip, bport, inode in listeners():
        by_port.setdefault(bport, []).append((bip, inode))
    hits = [(w, ip, port, inode) for (w, ip, port) in wanted
            for (bip, inode) in by_port.get(port, ())
            if _overlaps(ip, bip) and inode not in own_inodes]  # fmt: skip
    if not hits:
        return []
    own = set(own_pids)
    inodes = {inode for *_, inode in hits}
    owners = socket_owners(inodes, own)  # a reload: usually all ours, no full /proc scan
    if any(not pids for pids in owners.values()):
        owners = socket_owners(inodes)
    clashes: dict[tuple[str, int], set[int]] = {}
    for written, _, port, inode in hits:
        pids = owners.get(inode, set())
        if pids and pids <= own:
            continue  # our own HAProxy
        clashes.setdefault((written, port), set()).update(pids)
    return [
        Clash(written, port, tuple(_describe(pid) for pid in sorted(pids)), tuple(sorted(pids)))
        for (written, port), pids in sorted(clashes.items(), key=lambda kv: kv[0][1])
    ]
