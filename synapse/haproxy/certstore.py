"""Which certificates the edge lists, and synapse's copies of them (issue 13).

``CertStore`` lives as long as the edge's TLS config; the reload path (``before_read``)
and the certificate watcher both go through it, under one lock, so what it remembers
outlives every reload and watcher restart:

- ``kept``: the copies the crt-list names now (copy path -> certificate: the normalised
  PEM with its extra files), the last good one of each name. A file of ``cert_dir`` that
  is refused now (half-written, the key of another certificate, expired) keeps its copy
  listed; so does one HAProxy refused. An extra file that is refused (an ``.ocsp`` caught
  half-written, or for another certificate) never takes its certificate with it: the same
  PEM keeps its last good extra files, a new PEM goes without them; a certificate whose
  extra files HAProxy refuses is tried again without them.
- removals: a file counts as removed only when it is still absent on a scan at least
  ``ABSENT_GRACE`` after the first scan that missed it (two watcher scans; the two scans
  of one reload, check then install, do not count twice), and never while ``cert_dir`` is
  missing or holds no PEM at all (``rm *.pem; cp new/*`` or a swapped directory caught in
  between): that is logged once per streak (``cert_dir_empty``) and every certificate
  keeps serving.

A new store starts from the copies the crt-list on disk names: a restarted synapse keeps
the last good certificates of the previous one. ``plan`` is the rule, without any I/O.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Generic, TypeVar

from smartstack.logs import event
from synapse.atomic import read_bytes, read_text
from synapse.edge_config import HAProxyTLS
from synapse.haproxy import certfiles, extracheck, tls
from synapse.haproxy.certfiles import Cert

log = logging.getLogger("synapse.haproxy.certwatch")
ABSENT_GRACE = 0.9  # seconds a file must stay missing before it counts as removed
T = TypeVar("T")  # what is served under a name (a Cert; the rule does not look inside)


@dataclass
class Plan(Generic[T]):
    wanted: dict[Path, T]  # copy path -> certificate: what HAProxy should serve
    absent: dict[Path, float] = field(default_factory=dict)  # kept, missing since (clock)
    empty: bool = False  # cert_dir missing or without a PEM: every kept one stays


def plan(
    usable: Mapping[Path, T],
    refused: Collection[Path],
    kept: Mapping[Path, T],
    absent_since: Mapping[Path, float],
    now: float,
    grace: float = ABSENT_GRACE,
) -> Plan[T]:
    """What to list after one scan at ``now`` (everything keyed by copy path): the usable
    PEMs, the last good copy of a refused one, and a missing one until it has been missing
    for ``grace`` seconds (``absent_since``: when earlier scans first missed it)."""
    if not usable and not refused:  # missing or emptied: no evidence, nothing removed
        kept_absent = {p: t for p, t in absent_since.items() if p in kept}
        return Plan(dict(kept), kept_absent, empty=bool(kept))
    wanted = dict(usable)
    absent: dict[Path, float] = {}
    for path, text in kept.items():
        if path in refused:
            wanted[path] = text
        elif path not in usable:
            since = absent_since.get(path, now)
            if now - since < grace:
                wanted[path] = text
                absent[path] = since
    return Plan(wanted, absent)


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class CertStore:
    def __init__(self, config: HAProxyTLS, paths: tls.TLSPaths) -> None:
        self.config = config
        self.paths = paths
        self.lock = asyncio.Lock()  # one scan-and-write at a time: reload path or watcher
        # Reload paths waiting for the lock: a watcher batch yields to them between
        # certificates (a wildcard renewal of 300 PEMs held a SIGHUP back 14-28 s).
        self.reloads_waiting = 0
        self._kept: dict[Path, Cert] | None = None  # None: not read from disk yet
        self._absent: dict[Path, float] = {}
        self.clock = time.monotonic
        self._empty_logged = False
        self._rejected: dict[Path, set[Cert]] = {}  # copy -> what HAProxy refused (one PEM)
        self._logged: dict[Path, str] = {}  # refused file -> digest (and reason) logged

    # --- what is listed ----------------------------------------------------------------

    @property
    def kept(self) -> dict[Path, Cert]:
        """The copies the crt-list names (read from disk the first time)."""
        if self._kept is None:
            self._kept = self._read_listed()
        return self._kept

    def listed_names(self) -> list[Path]:
        """Every certificate the crt-list on disk names after the placeholder: what an
        HAProxy that read it holds (older synapses listed cert_dir's files themselves)."""
        return [Path(p) for p in (read_text(self.paths.crt_list) or "").split()[1:]]

    def _read_listed(self) -> dict[Path, Cert]:
        kept: dict[Path, Cert] = {}
        for path in self.listed_names():
            cert = certfiles.read_copy(path) if path.parent == self.paths.copies else None
            if cert is not None and "-----BEGIN CERTIFICATE-----" in cert.pem:
                kept[path] = cert
        return kept

    # --- one scan ----------------------------------------------------------------------

    def next_scan(self, quick: bool = False) -> Plan[Cert]:
        """Scan cert_dir (openssl: off the event loop) and decide what to list; logs the
        refused files and an emptied directory. What is listed changes with ``write``.
        ``quick`` (a reload): a changed PEM openssl has not checked yet keeps its last good
        copy, and the watcher sends it after the reload; 300 renewed PEMs took openssl
        12-25 s, which held the reload back."""
        kept = self.kept
        defer = (lambda path: self.paths.copy_of(path) in kept) if quick else None
        usable, refused = tls.scan(Path(self.config.cert_dir), defer)
        copies: dict[Path, Cert] = {}
        refused_copies: set[Path] = set()
        for path, text in usable.items():
            cert = self._cert_of(path, tls.normalised(text))
            if cert is None:  # HAProxy said no, even without the extra files (logged then)
                refused_copies.add(self.paths.copy_of(path))
            else:
                copies[self.paths.copy_of(path)] = cert
        for path, why in refused.items():
            refused_copies.add(self.paths.copy_of(path))
            if why == tls.DEFERRED:
                continue
            self._refuse(path, why, self._serving(self.paths.copy_of(path) in kept))
        result = plan(copies, refused_copies, kept, self._absent, self.clock())
        self._absent = result.absent
        self._log_empty(result)
        return result

    def _cert_of(self, source: Path, pem: str) -> Cert | None:
        """What to serve for the usable PEM ``source``: with its extra files when they are
        fit and HAProxy took them; else the same PEM's last good ones; else none. None
        when HAProxy refused even that."""
        copy = self.paths.copy_of(source)
        found = extracheck.checked(source, pem)
        kept = self.kept.get(copy)
        fallback = kept if kept is not None and kept.pem == pem else found.cert.bare()
        rejected = self._rejected.get(copy, set())
        options = [fallback] if found.refused else [found.cert, fallback]
        cert = next((option for option in options if option not in rejected), None)
        for suffix, why in found.refused.items():
            extra = certfiles.extra_path(source, suffix)
            kept_it = cert is not None and suffix in cert.extras()  # (the same PEM's)
            serving = "the last good copy" if kept_it else "the certificate without it"
            self._refuse(extra, why, serving)
        for suffix, why in found.ignored.items():
            self._ignore(certfiles.extra_path(source, suffix), why)
        return cert

    def _log_empty(self, result: Plan) -> None:
        if result.empty and not self._empty_logged:
            event(log, "cert_dir_empty", level=logging.WARNING, cert_dir=self.config.cert_dir,
                  kept=len(result.wanted),
                  detail="cert_dir is missing or holds no PEM: every certificate keeps "
                  "serving until it holds PEMs again")  # fmt: skip
        self._empty_logged = result.empty

    def write(self, certs: Mapping[Path, Cert]) -> None:
        """List exactly ``certs`` (copy -> certificate): copies with their extra files,
        crt-list, stale files gone."""
        tls.write_listed(self.paths, certs)
        self._kept = dict(certs)

    def follow(self, served: Mapping[Path, Cert]) -> None:
        """The files follow what HAProxy serves (a PEM not known: the copy it read)."""
        kept = self.kept
        certs: dict[Path, Cert] = {}
        for path, cert in served.items():
            known = cert if cert.pem else kept.get(path)
            if known is not None and known.pem and path.parent == self.paths.copies:
                certs[path] = known
        if certs != kept:
            self.write(certs)

    def refresh(self, quick: bool = False) -> Plan[Cert]:
        """Before HAProxy reads the config: scan, and list what the plan wants."""
        result = self.next_scan(quick)
        self.write(result.wanted)
        return result

    async def refresh_for_reload(self) -> Plan[Cert]:
        """``refresh`` for the reload path, its turn before the rest of a watcher's batch:
        the reload loads those certificates from the copies anyway."""
        self.reloads_waiting += 1
        try:
            await self.lock.acquire()
        finally:
            self.reloads_waiting -= 1
        try:  # (openssl checks each new PEM: off the event loop)
            return await asyncio.to_thread(self.refresh, True)
        finally:
            self.lock.release()

    def prewarm(self) -> None:
        """Have openssl check every PEM of cert_dir now, outside the lock (its verdicts are
        kept per content): the locked scan then holds a reload back for no openssl call."""
        tls.scan(Path(self.config.cert_dir))

    # --- refusals ----------------------------------------------------------------------

    def rejected(self, copy: Path, cert: Cert, why: str) -> None:
        """HAProxy refused ``cert`` for ``copy`` at runtime: never list it (a reload would
        fail on it); the last good copy stays, and with extra files the same PEM is tried
        without them. Only the refusals of one PEM are remembered."""
        same_pem = {c for c in self._rejected.get(copy, set()) if c.pem == cert.pem}
        self._rejected[copy] = same_pem | {cert}
        self._refuse(self.source_of(copy), why, self._serving(copy in self.kept))

    def source_of(self, copy: Path) -> Path:
        """The file of cert_dir whose copy is ``copy``."""
        return Path(self.config.cert_dir) / copy.name

    @staticmethod
    def _serving(kept: bool) -> str:
        return "the last good copy" if kept else "nothing"

    def _first_time(self, path: Path, why: str) -> bool:
        """Whether ``path`` with this content is told ``why`` for the first time."""
        digest = _digest((read_bytes(path) or b"") + b"\0" + why.encode())
        if self._logged.get(path) == digest:
            return False
        self._logged[path] = digest
        return True

    def _refuse(self, path: Path, why: str, serving: str) -> None:
        if self._first_time(path, why):
            event(log, "certificate_refused", level=logging.ERROR, file=str(path), reason=why,
                  serving=serving)  # fmt: skip

    def _ignore(self, path: Path, why: str) -> None:
        if self._first_time(path, why):
            event(log, "certificate_file_ignored", level=logging.WARNING, file=str(path),
                  reason=why)  # fmt: skip
