"""One edge certificate as HAProxy loads it: the PEM and the files beside it (issue 13).

HAProxy 2.6 loads with each ``crt`` the files next to it (``ssl-load-extra-files``, default
``all``): ``<crt>.ocsp``, the OCSP response it staples; ``<crt>.issuer``, the certificate
that issued it, needed for that response when the PEM's chain lacks it; ``<crt>.sctl``;
and ``<crt>.key`` for a PEM without its key. synapse's copy of a PEM carries ``.ocsp`` and
``.issuer`` beside it (``synapse.haproxy.extracheck`` decides which); ``.key`` is never
read (an accepted PEM holds its key) and ``.sctl`` is not carried.

A ``Cert`` is what synapse compares, writes and sends, so a renewed ``.ocsp`` is a changed
certificate. At runtime, ``set ssl cert <crt>`` with a PEM starts the transaction from
that PEM alone (HAProxy 2.6 drops the certificate's old extra files), so every change
sends the PEM and then each extra file: one that went away goes away at runtime too.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from pathlib import Path

from synapse.atomic import read_bytes, read_text, write_atomic

ISSUER, OCSP, SCTL = ".issuer", ".ocsp", ".sctl"
LOOKED_FOR = (ISSUER, OCSP, SCTL)  # the files beside a PEM of cert_dir that the scan reads


def normalised(text: str) -> str:
    """The PEM without empty lines (a runtime ``<<`` payload ends at the first one: ``cat
    cert.pem; echo; cat key.pem`` could never be sent) nor trailing spaces or CRs."""
    lines = (line.rstrip() for line in text.splitlines())
    return "".join(f"{line}\n" for line in lines if line)


@dataclass(frozen=True)
class Cert:
    pem: str  # chain and key, normalised; "" when not known (an adopted HAProxy's)
    issuer: bytes = b""  # <copy>.issuer (PEM); b"": none
    ocsp: bytes = b""  # <copy>.ocsp (DER); b"": none

    def __post_init__(self) -> None:
        object.__setattr__(self, "pem", normalised(self.pem))

    def extras(self) -> dict[str, bytes]:
        """The extra files carried (suffix -> content), the issuer before the response that
        needs it: the order they are written and sent in."""
        return {suffix: data for suffix, data in ((ISSUER, self.issuer), (OCSP, self.ocsp)) if data}

    def bare(self) -> Cert:
        return Cert(self.pem)


def extra_path(path: Path, suffix: str) -> Path:
    """``<path><suffix>``: where HAProxy looks for that extra file of ``path``."""
    return path.with_name(path.name + suffix)


def read_extras(source: Path) -> dict[str, bytes | None]:
    """The extra files beside ``source`` (suffix -> content; None: there but unreadable)."""
    found: dict[str, bytes | None] = {}
    for suffix in LOOKED_FOR:
        path = extra_path(source, suffix)
        if path.is_file():
            found[suffix] = read_bytes(path)
    return found


def read_copy(copy: Path) -> Cert | None:
    """The certificate a copy on disk holds with its extra files (None: no copy)."""
    text = read_text(copy)
    if text is None:
        return None
    issuer, ocsp = (read_bytes(extra_path(copy, suffix)) or b"" for suffix in (ISSUER, OCSP))
    return Cert(text, issuer, ocsp)


def files_of(copy: Path, cert: Cert) -> set[Path]:
    """The files a listed copy consists of."""
    return {copy, *(extra_path(copy, suffix) for suffix in cert.extras())}


def write_copy(copy: Path, cert: Cert) -> None:
    """Write the copy and its extra files (atomic, mode 0600); remove those it no longer
    carries. Every state in between loads (a crashed HAProxy restarts from the files at
    any moment): when the PEM or the issuer changes, the old ``.ocsp`` goes first and the
    new one comes last, so a response never sits beside an issuer it was not checked with
    (HAProxy refuses the whole config for an ``.ocsp`` whose issuer it cannot find); a
    renewed response alone replaces the old one in place."""
    on_disk = read_copy(copy)
    if on_disk == cert:
        return
    if on_disk is not None and (on_disk.pem, on_disk.issuer) != (cert.pem, cert.issuer):
        extra_path(copy, OCSP).unlink(missing_ok=True)
    if on_disk is None or on_disk.pem != cert.pem:
        write_atomic(copy, cert.pem, mode=0o600)
    for suffix, data in ((ISSUER, cert.issuer), (OCSP, cert.ocsp)):
        path = extra_path(copy, suffix)
        if not data:
            path.unlink(missing_ok=True)
        elif read_bytes(path) != data:
            write_atomic(path, data, mode=0o600)


def set_commands(name: Path, cert: Cert) -> list[str]:
    """The ``set ssl cert`` payloads of one transaction for ``name``: the PEM, then each
    extra file (``.issuer`` as PEM, ``.ocsp`` in base64, as HAProxy 2.6 takes them), all
    without an empty line (a payload ends at the first one)."""
    commands = [f"set ssl cert {name} <<\n{cert.pem.rstrip()}\n"]
    for suffix, data in cert.extras().items():
        if suffix == OCSP:
            text = base64.encodebytes(data).decode().rstrip()  # lines of 76
        else:
            text = normalised(data.decode("utf-8", errors="replace")).rstrip()
        commands.append(f"set ssl cert {extra_path(name, suffix)} <<\n{text}\n")
    return commands
