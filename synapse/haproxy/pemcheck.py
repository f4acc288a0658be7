"""Whether a PEM of ``haproxy.tls.cert_dir`` can be served: a readable certificate, its own
private key, and dates that cover now (issue 13).

Certificates are read with the ``openssl`` CLI (Debian package ``openssl``), so synapse
needs no crypto library. The watcher scans every second, so what openssl says of a text
is kept per content (``checked_problem``); the dates are compared with the clock at every
scan, since a certificate that was good can expire while it is served.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import threading
from dataclasses import dataclass
from datetime import UTC, datetime

_DATE_FORMAT = "%b %d %H:%M:%S %Y %Z"  # openssl's default (rfc_822): "Dec  1 20:56:30 2026 GMT"


@dataclass(frozen=True)
class Inspection:
    problem: str | None  # why the text is not a certificate with its key, or None
    not_before: datetime | None = None
    not_after: datetime | None = None


def openssl(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("openssl")
    if binary is None:
        raise FileNotFoundError("openssl not found on PATH (Debian package openssl)")
    return subprocess.run(
        [binary, *args], input=stdin, capture_output=True, text=True, timeout=30, check=False
    )


def parse_dates(output: str) -> tuple[datetime, datetime]:
    """notBefore and notAfter (UTC) from ``openssl x509 -dates``; ValueError without them."""
    found: dict[str, datetime] = {}
    for line in output.splitlines():
        key, sep, value = line.partition("=")
        if sep and key in ("notBefore", "notAfter"):
            found[key] = datetime.strptime(value.strip(), _DATE_FORMAT).replace(tzinfo=UTC)
    if len(found) != 2:
        raise ValueError(f"no notBefore and notAfter in {output[-200:]!r}")
    return found["notBefore"], found["notAfter"]


def public_key(output: str) -> str:
    """The PEM public key block of an openssl answer (which may hold other lines too)."""
    lines = output.splitlines()
    begin, end = lines.index("-----BEGIN PUBLIC KEY-----"), lines.index("-----END PUBLIC KEY-----")
    return "\n".join(lines[begin : end + 1])


def inspect(text: str) -> Inspection:
    """What openssl says of ``text``: its problem, or the certificate's dates."""
    if "-----BEGIN CERTIFICATE-----" not in text or "PRIVATE KEY-----" not in text:
        return Inspection("needs a certificate and its private key in one PEM file")
    cert = openssl("x509", "-noout", "-pubkey", "-dates", stdin=text)
    if cert.returncode != 0:
        return Inspection(f"certificate unreadable: {cert.stderr.strip()[-200:]}")
    key = openssl("pkey", "-pubout", stdin=text)
    if key.returncode != 0:
        return Inspection(f"private key unreadable: {key.stderr.strip()[-200:]}")
    try:
        not_before, not_after = parse_dates(cert.stdout)
        if public_key(cert.stdout) != public_key(key.stdout):
            return Inspection("the private key does not belong to the certificate")
    except ValueError as err:  # (an openssl that prints something else)
        return Inspection(f"cannot read openssl's answer: {err}")
    return Inspection(None, not_before, not_after)


def validity_problem(not_before: datetime, not_after: datetime, now: datetime) -> str | None:
    """Why a certificate with these dates must not be served at ``now``, or None."""
    if now > not_after:
        return f"the certificate expired on {not_after:%Y-%m-%d %H:%M:%S} UTC"
    if now < not_before:
        return f"the certificate is not valid before {not_before:%Y-%m-%d %H:%M:%S} UTC"
    return None


def _verdict(found: Inspection, now: datetime | None) -> str | None:
    if found.problem is not None or found.not_before is None or found.not_after is None:
        return found.problem
    return validity_problem(found.not_before, found.not_after, now or datetime.now(UTC))


def pem_problem(text: str, now: datetime | None = None) -> str | None:
    """Why ``text`` is not a usable PEM (certificate plus its private key, valid at
    ``now``: default the clock), or None."""
    return _verdict(inspect(text), now)


_CHECKED: dict[str, Inspection] = {}  # PEM sha256 -> what openssl said of it
_CHECKED_MAX = 4096
# Threads check PEMs at once (the watcher's pre-check outside the store's lock, a reload's
# scan, a stopped watcher's check still running beside its successor's): one openssl run
# per content, the others wait for it (a watcher restarted mid-renewal ran 1,114 checks
# for 301 PEMs instead of 602, review s33), and the cache changes under a lock (a clear()
# between another thread's insert and read was a KeyError that ended the watcher).
_LOCK = threading.Lock()
_RUNNING: dict[str, threading.Event] = {}


def checked_problem(text: str, now: datetime | None = None) -> str | None:
    """``pem_problem``, asking openssl once per content."""
    return _verdict(_checked(hashlib.sha256(text.encode()).hexdigest(), text), now)


def _checked(digest: str, text: str) -> Inspection:
    while True:
        with _LOCK:
            found = _CHECKED.get(digest)
            if found is not None:
                return found
            running = _RUNNING.get(digest)
            mine = running is None
            if running is None:
                running = _RUNNING[digest] = threading.Event()
        if not mine:
            running.wait()  # (its result is cached; if it raised, this one tries)
            continue
        try:
            found = inspect(text)
            with _LOCK:
                if len(_CHECKED) >= _CHECKED_MAX:
                    _CHECKED.clear()
                _CHECKED[digest] = found
            return found
        finally:
            with _LOCK:
                _RUNNING.pop(digest, None)
            running.set()


def is_checked(text: str) -> bool:
    """Whether openssl already said what it says of ``text`` (no process to start)."""
    return hashlib.sha256(text.encode()).hexdigest() in _CHECKED
