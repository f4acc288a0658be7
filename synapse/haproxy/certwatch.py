"""Watch ``haproxy.tls.cert_dir`` and keep HAProxy's certificates in step through the
runtime API: no SIGHUP, no reload (edge, issue 13).

Every ``interval`` seconds the store (``synapse.haproxy.certstore``) scans the directory
and says what to serve; a certificate added, replaced or removed is sent as runtime
commands on its copy's name, one certificate (PEM and extra files) at a time, and then the
copies and the crt-list on disk follow what HAProxy serves, so that a later reload or
restart starts from the same certificates. A PEM the store refuses (broken, half-written,
expired) keeps its last good copy serving; so does a certificate HAProxy itself refuses
(its transaction is aborted; one with extra files is tried without them at the next scan).

``send`` runs one runtime command and returns HAProxy's answer; certificates travel as
multi-line payloads (``<<``), which ``RuntimeClient`` refuses by design, so
``payload_sender`` gives one for an admin socket.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable
from pathlib import Path

from smartstack.logs import event
from smartstack.tasks import cancel_and_wait
from synapse.haproxy import tls
from synapse.haproxy.certfiles import Cert
from synapse.haproxy.certstore import CertStore

log = logging.getLogger("synapse.haproxy.certwatch")
# Words of HAProxy's answers to a refused ssl command (2.6).
_FAILURE_WORDS = ("error", "can't", "unable", "unknown", "failed", "not found")
# Answers about HAProxy's one certificate transaction, not about the certificate: a
# reload between `set` and `commit` (the commit reaches the new process), or a transaction
# left open in it (a watcher stopped in between). Taken as a refusal, they kept a renewed
# certificate out of HAProxy and of every later reload until its content changed again.
_TRANSIENT = ("no ongoing transaction", "ongoing transaction is about", "currently locked")
_OTHER_TRANSACTION = re.compile(r"ongoing transaction is about '([^']+)'")

Send = Callable[[str], Awaitable[str]]


def payload_sender(socket_path: str, timeout: float = 10.0) -> Send:
    """A ``send`` for the admin socket at ``socket_path`` that allows ``<<`` payloads."""

    async def send(command: str) -> str:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_unix_connection(socket_path)
            try:
                # The payload ends at an empty line: the command's last newline plus ours.
                writer.write(command.encode() + b"\n")
                await writer.drain()
                return (await reader.read()).decode(errors="replace")
            finally:
                writer.close()

    return send


def refused_answer(answer: str) -> bool:
    lowered = answer.lower()
    return any(word in lowered for word in _FAILURE_WORDS)


class CertWatcher:
    def __init__(
        self, store: CertStore, send: Send, served: dict[Path, Cert], interval: float = 1.0
    ) -> None:
        """``served``: what HAProxy holds (copy path -> certificate; its PEM "" when not
        known)."""
        self.store = store
        self.send = send
        self.served = dict(served)
        self.interval = interval
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancel_and_wait(task)

    async def _loop(self) -> None:
        while True:
            try:
                await self.check_once()
            except (
                OSError,
                RuntimeError,
                TimeoutError,
            ) as err:  # socket gone during a restart: next time
                event(log, "cert_watch_failed", level=logging.WARNING, error=str(err))
            await asyncio.sleep(self.interval)

    async def check_once(self) -> list[Path]:
        """One scan; the copies whose change HAProxy now serves."""
        await asyncio.to_thread(self.store.prewarm)
        async with self.store.lock:
            wanted = (await asyncio.to_thread(self.store.next_scan)).wanted
            applied: list[Path] = []
            # Additions and changes before removals: after adopting an older synapse's
            # HAProxy, the copies replace cert_dir's own paths, and removing those first
            # would leave every domain on the placeholder until its copy is added.
            order = [*sorted(wanted), *sorted(set(self.served) - set(wanted))]
            for done, path in enumerate(order):
                if self.store.reloads_waiting:  # it loads the rest from the copies
                    left = [p for p in order[done:] if self.served.get(p) != wanted.get(p)]
                    if left:
                        event(log, "certificates_left_to_reload", applied=len(applied),
                              left=len(left))  # fmt: skip
                    break
                before = {path: self.served[path]} if path in self.served else {}
                after = {path: wanted[path]} if path in wanted else {}
                commands = tls.runtime_commands(before, after, self.store.paths)
                if not commands:
                    continue
                if await self._apply(path, commands, after.get(path, Cert(""))):
                    applied.append(path)
                    if after:
                        self.served[path] = after[path]
                    else:
                        self.served.pop(path, None)
            await asyncio.to_thread(self.store.follow, self.served)
        if applied:
            event(log, "certificates_updated", files=[str(p) for p in applied])
        return applied

    async def _apply(self, path: Path, commands: list[str], cert: Cert) -> bool:
        for command in commands:
            answer = await self.send(command)
            if refused_answer(answer):
                if command.startswith("set ssl cert"):
                    await self.send(f"abort ssl cert {path}")
                if any(words in answer.lower() for words in _TRANSIENT):
                    await self._transaction_busy(path, answer)
                    return False  # tried again at the next scan
                why = f"HAProxy refused {command.split(' <<')[0]!r}: {answer.strip()[:300]}"
                self.store.rejected(path, cert, why)
                return False
        return True

    async def _transaction_busy(self, path: Path, answer: str) -> None:
        """A transaction answer: abort one left open on another certificate (ours is gone
        with its process or was just aborted); nothing is refused."""
        event(log, "cert_watch_failed", level=logging.WARNING, file=str(path),
              error=answer.strip()[:300])  # fmt: skip
        other = _OTHER_TRANSACTION.search(answer)
        if other is not None and other.group(1) != str(path):
            await self.send(f"abort ssl cert {other.group(1)}")
