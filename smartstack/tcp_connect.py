"""A TCP connection to a registry endpoint given by name: its addresses raced, the last
ones it resolved to kept for when it stops resolving.

``asyncio.open_connection(name, port)`` resolves the name on every call and tries its
addresses one after another, each for the kernel's whole connect timeout (SYNs dropped:
minutes), inside the caller's few seconds: a dead first address hid the live second one
for good (measured: a nerve on etcd's JSON gateway never registered). And a resolver that
failed for a few seconds failed every call, every lease keep-alive included (one
connection each): the lease expired while etcd was up. Here:

- the name is resolved on every connect (a changed record is followed); when that fails,
  the addresses it last resolved to are used (a registry endpoint's address rarely
  changes, and one that did fails its connect: the caller moves on to its next endpoint).
  Logged once per streak (``endpoint_name_unresolved`` / ``endpoint_name_resolved``);
- the addresses are raced as RFC 8305 ("happy eyeballs") does: the next one is tried when
  the previous one failed or has not connected within HAPPY_EYEBALLS_DELAY_S;
- the address that connected last goes first: with a dead first address, a connection per
  call would otherwise pay the delay on every call;
- no address connected within CONNECT_TIMEOUT_S is a connection error (TimeoutError, an
  OSError): the caller moves on to its next endpoint at once, instead of spending the
  call's whole timeout (a listing's: 30 s) on an endpoint whose host drops SYNs.

An IP literal is never looked up.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl

from smartstack.logs import FailureStreak

log = logging.getLogger("smartstack.connect")

AddrInfo = tuple[int, int, int, tuple]  # family, type, proto, sockaddr
HAPPY_EYEBALLS_DELAY_S = 0.25  # RFC 8305's recommended connection attempt delay
# Covers the kernel's SYN retransmits at 1 s and 3 s: a live but busy host still connects.
CONNECT_TIMEOUT_S = 4.0
LOOKUP_WAIT_S = 1.0  # a lookup of a name with addresses kept (see addresses())
Key = tuple[str, int]

_resolved: dict[Key, list[AddrInfo]] = {}  # (name, port) -> its last addresses, preferred first
_streaks: dict[Key, FailureStreak] = {}


async def open_connection(
    host: str, port: int, context: ssl.SSLContext | None, server_hostname: str | None
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """``asyncio.open_connection`` to ``host``'s addresses (see the module docstring); with
    ``context``, TLS with ``server_hostname`` (None: no SNI and no name to check)."""
    infos = await addresses(host, port)
    try:
        sock = await asyncio.wait_for(_race(host, port, infos), CONNECT_TIMEOUT_S)
    except TimeoutError:
        where = f"{host}:{port}" + ("" if _numeric(host) else f" ({_text(infos)})")
        raise TimeoutError(f"no connection to {where} in {CONNECT_TIMEOUT_S:g} s") from None
    # "" = no SNI: asyncio wants a name when it has no host of its own.
    tls = {"ssl": context, "server_hostname": server_hostname or ""} if context else {}
    try:
        return await asyncio.open_connection(sock=sock, **tls)
    except BaseException:
        sock.close()
        raise


async def addresses(host: str, port: int) -> list[AddrInfo]:
    """``host``'s addresses, the one that connected last first; its last known ones when
    the lookup fails or takes over LOOKUP_WAIT_S (and some are known)."""
    key = (host, port)
    kept = _resolved.get(key)
    lookup = asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    try:
        # With addresses kept, a resolver that hangs (glibc: 5 s per try) must not spend the
        # caller's few seconds (a lease keep-alive's 3 s): they are used after LOOKUP_WAIT_S.
        found = await (asyncio.wait_for(lookup, LOOKUP_WAIT_S) if kept else lookup)
    except (socket.gaierror, TimeoutError) as exc:
        if not kept:
            raise
        why = f"{type(exc).__name__}: {exc}" if str(exc) else f"no answer in {LOOKUP_WAIT_S:g} s"
        _streak(key).failure(why, host=host, port=port,
                             addresses=_text(kept))  # fmt: skip
        return kept
    infos = [(family, kind, proto, addr) for family, kind, proto, _, addr in found]
    if not _numeric(host):
        kept = _resolved.get(key)
        if kept and kept[0] in infos:  # the last address that connected, first
            infos.remove(kept[0])
            infos.insert(0, kept[0])
        _resolved[key] = infos
        if key in _streaks:
            _streaks[key].success(host=host, port=port, addresses=_text(infos))
    return infos


def known(host: str, port: int) -> str:
    """`` (address, ...)``: what ``host`` last resolved to, for error messages ("" for an
    address or a name never resolved)."""
    kept = _resolved.get((host, port))
    return f" ({_text(kept)})" if kept else ""


def _streak(key: Key) -> FailureStreak:
    streak = _streaks.get(key)
    if streak is None:
        streak = _streaks[key] = FailureStreak(
            log, "endpoint_name_unresolved", "endpoint_name_resolved"
        )
    return streak


def _text(infos: list[AddrInfo]) -> str:
    return ", ".join(str(info[3][0]) for info in infos)


def _numeric(host: str) -> bool:
    try:
        socket.inet_pton(socket.AF_INET6 if ":" in host else socket.AF_INET, host.strip("[]"))
    except OSError:
        return False
    return True


async def _race(host: str, port: int, infos: list[AddrInfo]) -> socket.socket:
    """A connected socket to the first of ``infos`` to accept; the next one is started when
    none connected within HAPPY_EYEBALLS_DELAY_S, or at once when one failed."""
    waiting = list(infos)
    racing: dict[asyncio.Future[socket.socket], AddrInfo] = {}
    errors: list[OSError] = []
    try:
        while waiting or racing:
            if waiting:
                info = waiting.pop(0)
                racing[asyncio.ensure_future(_connect(info))] = info
            delay = HAPPY_EYEBALLS_DELAY_S if waiting else None
            done, _ = await asyncio.wait(racing, timeout=delay, return_when=asyncio.FIRST_COMPLETED)
            ended = [(racing.pop(task), task) for task in done]
            winners = [(info, task.result()) for info, task in ended if not task.exception()]
            for _, extra in winners[1:]:
                extra.close()
            if winners:
                _prefer(host, port, winners[0][0])
                return winners[0][1]
            for _, task in ended:
                if not isinstance(exc := task.exception(), OSError):
                    raise exc  # type: ignore[misc]  # a bug, not an outage
                errors.append(exc)
    finally:
        for task in racing:  # cut short (a timeout), or lost: a late winner is closed
            task.cancel()
            task.add_done_callback(_close_won)
    if len({str(exc) for exc in errors}) == 1:
        raise errors[0]  # as asyncio does: one address, or all failing alike
    raise OSError(f"{host}:{port}: " + "; ".join(str(exc) for exc in errors))


def _prefer(host: str, port: int, info: AddrInfo) -> None:
    """The address that connected goes first next time."""
    kept = _resolved.get((host, port))
    if kept and info in kept:
        _resolved[(host, port)] = [info, *(i for i in kept if i != info)]


async def _connect(info: AddrInfo) -> socket.socket:
    family, kind, proto, addr = info
    sock = socket.socket(family, kind, proto)
    try:
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, addr)
    except BaseException:
        sock.close()
        raise
    return sock


def _close_won(task: asyncio.Task[socket.socket]) -> None:
    if not task.cancelled() and task.exception() is None:
        task.result().close()
