"""Which files beside a PEM of ``cert_dir`` go with its copy (issue 13): the ones HAProxy
2.6 loads and uses, never one that would make it refuse the config.

- ``<file>.ocsp`` goes when ``openssl ocsp`` finds a status for the certificate in it, with
  the issuer HAProxy would take: a certificate of the PEM's chain, else ``<file>.issuer``.
  HAProxy refuses the whole config (and fails a runtime commit) for a response whose
  issuer it cannot find, and ignores with a warning one that it cannot read or that is for
  another certificate (no staple): such a response is refused by name instead.
- ``<file>.issuer`` goes with the response it is the issuer for, when the chain lacks
  that issuer (HAProxy 2.6 reads it for nothing else, and only then).
- ``<file>.sctl`` never goes: with one loaded, HAProxy 2.6.12 corrupts its heap (``haproxy
  -c`` aborts after "Configuration file is valid", and so does a stopping HAProxy), which
  would fail every config check. Certificates carry their SCTs themselves nowadays.

What openssl says is kept per content: the watcher asks every second.
"""

from __future__ import annotations

import hashlib
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from synapse.haproxy.certfiles import ISSUER, OCSP, SCTL, Cert, read_extras
from synapse.haproxy.pemcheck import openssl

_CERT_BLOCK = re.compile(r"-----BEGIN CERTIFICATE-----\n.*?-----END CERTIFICATE-----\n", re.S)
SCTL_WHY = (
    "not carried: HAProxy 2.6 corrupts its memory with a .sctl loaded (haproxy -c aborts); "
    "SCTs inside the certificate still reach clients"
)


@dataclass(frozen=True)
class Verdict:
    cert: Cert  # the PEM with the extra files that go with it
    refused: dict[str, str]  # suffix -> why it does not go (HAProxy would not use it)
    ignored: dict[str, str]  # suffix -> why it is not carried (.sctl)


def ocsp_complaint(leaf: str, issuer: str, response: bytes) -> str | None:
    """None when ``response`` holds a status for ``leaf`` issued by ``issuer`` (both PEM),
    else what ``openssl ocsp`` says."""
    with tempfile.TemporaryDirectory() as tmp:
        leaf_file, issuer_file, response_file = (
            Path(tmp) / name for name in ("leaf.pem", "issuer.pem", "response.der")
        )
        leaf_file.write_text(leaf)
        issuer_file.write_text(issuer)
        response_file.write_bytes(response)
        done = openssl("ocsp", "-respin", str(response_file), "-noverify",
                       "-issuer", str(issuer_file), "-cert", str(leaf_file))  # fmt: skip
    if done.returncode == 0:
        return None
    said = [line.strip() for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    if any("Error reading OCSP response" in line for line in said):
        return "not an OCSP response openssl can read"
    if any("No Status found" in line for line in said):
        return "no status for this certificate in it (a response for another certificate)"
    return f"openssl ocsp: {' '.join(said)[-200:] or done.returncode}"


def issuer_of_response(pem: str, response: bytes, issuer: bytes) -> tuple[bytes, str | None]:
    """(the ``.issuer`` content to carry with ``response``: b"" when the chain has the
    issuer, the reason when no issuer HAProxy would take matches the response)."""
    blocks = _CERT_BLOCK.findall(pem)
    if not blocks:
        return b"", "the PEM holds no certificate openssl ocsp can take"
    leaf, *chain = blocks
    complaint = "no issuer to use it with: the PEM's chain does not hold it and there is no .issuer"
    for candidate in chain:
        complaint = ocsp_complaint(leaf, candidate, response) or ""
        if not complaint:
            return b"", None
    if issuer:
        given = _CERT_BLOCK.findall(issuer.decode("utf-8", errors="replace").replace("\r", ""))
        if not given:
            return b"", "no issuer to use it with: the .issuer holds no PEM certificate"
        complaint = ocsp_complaint(leaf, given[0], response) or ""
        if not complaint:
            return issuer, None
    return b"", complaint


_CHECKED: dict[str, tuple[bytes, str | None]] = {}  # sha256 of pem, response, issuer
_CHECKED_MAX = 1024


def verdict(pem: str, found: Mapping[str, bytes | None]) -> Verdict:
    """The certificate ``pem`` (normalised, already accepted) with the extra files of
    ``found`` (suffix -> content; None: unreadable) that go with it."""
    ignored = {SCTL: SCTL_WHY} if SCTL in found else {}
    if OCSP not in found:
        return Verdict(Cert(pem), {}, ignored)
    response, issuer = found[OCSP], found.get(ISSUER) or b""
    if not response:
        why = "unreadable" if response is None else "empty"
        return Verdict(Cert(pem), {OCSP: why}, ignored)
    key = hashlib.sha256(b"\0".join([pem.encode(), response, issuer])).hexdigest()
    if key not in _CHECKED:
        if len(_CHECKED) >= _CHECKED_MAX:
            _CHECKED.clear()
        _CHECKED[key] = issuer_of_response(pem, response, issuer)
    carried, problem = _CHECKED[key]
    if problem is not None:
        return Verdict(Cert(pem), {OCSP: problem}, ignored)
    return Verdict(Cert(pem, issuer=carried, ocsp=response), {}, ignored)


def checked(source: Path, pem: str) -> Verdict:
    """``verdict`` for the files beside ``source``, a PEM of ``cert_dir``."""
    return verdict(pem, read_extras(source))
