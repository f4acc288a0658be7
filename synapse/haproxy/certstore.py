"""Which certificates the edge lists, and synapse's copies of them (issue 13).

``CertStore`` lives as long as the edge's TLS config; the reload path (``before_read``)
and the certificate watcher both go through it, under one lock, so what it remembers
outlives every reload and watcher restart:

- ``kept``: the copies the crt-list names now (copy path -> normalised PEM), the last
  good text of each name. A file of ``cert_dir`` that is refused now (half-written, the key
  of another certificate, expired) keeps its copy listed; so does one HAProxy refused.
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

from smartstack.logs import event
from synapse.atomic import read_text
from synapse.edge_config import HAProxyTLS
from synapse.haproxy import tls

log = logging.getLogger("synapse.haproxy.certwatch")
ABSENT_GRACE = 0.9  # seconds a file must stay missing before it counts as removed


@dataclass
class Plan:
    wanted: dict[Path, str]  # copy path -> normalised PEM: what HAProxy should serve
    absent: dict[Path, float] = field(default_factory=dict)  # kept, missing since (clock)
    empty: bool = False  # cert_dir missing or without a PEM: every kept one stays


def plan(
    usable: Mapping[Path, str],
    refused: Collection[Path],
    kept: Mapping[Path, str],
    absent_since: Mapping[Path, float],
    now: float,
    grace: float = ABSENT_GRACE,
) -> Plan:
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


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


class CertStore:
    def __init__(self, config: HAProxyTLS, paths: tls.TLSPaths) -> None:
        self.config = config
        self.paths = paths
        self.lock = asyncio.Lock()  # one scan-and-write at a time: reload path or watcher
        self._kept: dict[Path, str] | None = None  # None: not read from disk yet
        self._absent: dict[Path, float] = {}
        self.clock = time.monotonic
        self._empty_logged = False
        self._rejected: dict[Path, str] = {}  # copy -> digest of a text HAProxy refused
        self._logged: dict[Path, str] = {}  # refused file -> digest (and reason) logged

    # --- what is listed ----------------------------------------------------------------

    @property
    def kept(self) -> dict[Path, str]:
        """The copies the crt-list names (read from disk the first time)."""
        if self._kept is None:
            self._kept = self._read_listed()
        return self._kept

    def listed_names(self) -> list[Path]:
        """Every certificate the crt-list on disk names after the placeholder: what an
        HAProxy that read it holds (older synapses listed cert_dir's files themselves)."""
        return [Path(p) for p in (read_text(self.paths.crt_list) or "").split()[1:]]

    def _read_listed(self) -> dict[Path, str]:
        kept: dict[Path, str] = {}
        for path in self.listed_names():
            text = read_text(path) if path.parent == self.paths.copies else None
            if text and "-----BEGIN CERTIFICATE-----" in text:
                kept[path] = text
        return kept

    # --- one scan ----------------------------------------------------------------------

    def next_scan(self) -> Plan:
        """Scan cert_dir (openssl: off the event loop) and decide what to list; logs the
        refused files and an emptied directory. What is listed changes with ``write``."""
        usable, refused = tls.scan(Path(self.config.cert_dir))
        kept = self.kept
        copies: dict[Path, str] = {}
        refused_copies: set[Path] = set()
        for path, text in usable.items():
            copy, text = self.paths.copy_of(path), tls.normalised(text)
            if self._rejected.get(copy) == _digest(text):  # HAProxy said no (logged then)
                refused_copies.add(copy)
            else:
                copies[copy] = text
        for path, why in refused.items():
            refused_copies.add(self.paths.copy_of(path))
            self._refuse(path, why, self.paths.copy_of(path) in kept)
        result = plan(copies, refused_copies, kept, self._absent, self.clock())
        self._absent = result.absent
        self._log_empty(result)
        return result

    def _log_empty(self, result: Plan) -> None:
        if result.empty and not self._empty_logged:
            event(log, "cert_dir_empty", level=logging.WARNING, cert_dir=self.config.cert_dir,
                  kept=len(result.wanted),
                  detail="cert_dir is missing or holds no PEM: every certificate keeps "
                  "serving until it holds PEMs again")  # fmt: skip
        self._empty_logged = result.empty

    def write(self, certs: Mapping[Path, str]) -> None:
        """List exactly ``certs`` (copy -> text): copies, crt-list, stale copies gone."""
        tls.write_listed(self.paths, certs)
        self._kept = dict(certs)

    def follow(self, served: Mapping[Path, str]) -> None:
        """The files follow what HAProxy serves (a text not known: the copy it read)."""
        kept = self.kept
        certs: dict[Path, str] = {}
        for path, text in served.items():
            text = text or kept.get(path, "")
            if text and path.parent == self.paths.copies:
                certs[path] = text
        if certs != kept:
            self.write(certs)

    def refresh(self) -> Plan:
        """Before HAProxy reads the config: scan, and list what the plan wants."""
        result = self.next_scan()
        self.write(result.wanted)
        return result

    # --- refusals ----------------------------------------------------------------------

    def rejected(self, copy: Path, text: str, why: str) -> None:
        """HAProxy refused ``text`` for ``copy`` at runtime: never list that text (a reload
        would fail on it); the last good copy stays."""
        self._rejected[copy] = _digest(text)
        self._refuse(self.source_of(copy), why, copy in self.kept)

    def source_of(self, copy: Path) -> Path:
        """The file of cert_dir whose copy is ``copy``."""
        return Path(self.config.cert_dir) / copy.name

    def _refuse(self, path: Path, why: str, kept: bool) -> None:
        digest = _digest(f"{read_text(path) or ''}\0{why}")
        if self._logged.get(path) == digest:
            return
        self._logged[path] = digest
        event(log, "certificate_refused", level=logging.ERROR, file=str(path), reason=why,
              serving="the last good copy" if kept else "nothing")  # fmt: skip
