"""What certificate (and OCSP response) a TLS server presents for a name (SNI), for the edge's
TLS tests."""

from __future__ import annotations

import socket
import ssl
import subprocess
from pathlib import Path


def served_cert(port: int, sni: str, scratch: Path) -> dict:
    """The certificate HAProxy presents for ``sni`` (not verified: the placeholder is not)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    raw = socket.create_connection(("127.0.0.1", port), timeout=5)
    with context.wrap_socket(raw, server_hostname=sni) as conn:
        der = conn.getpeercert(binary_form=True)
    assert der is not None
    path = scratch / "peer.pem"
    path.write_text(ssl.DER_cert_to_PEM_cert(der))
    # the stdlib's own PEM decoder (what getpeercert() uses on verified connections)
    return ssl._ssl._test_decode_cert(str(path))  # type: ignore[attr-defined]


def subject_cn(cert: dict) -> str:
    return dict(pair[0] for pair in cert["subject"])["commonName"]


def stapled(port: int, sni: str) -> str | None:
    """The OCSP response HAProxy staples for ``sni`` ("good, next update <date>"), or None
    when it sends none (``openssl s_client -status``)."""
    done = subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername", sni, "-status"],
        input="", capture_output=True, text=True, timeout=10, check=False,
    )  # fmt: skip
    lines = [line.strip() for line in done.stdout.splitlines()]
    if "OCSP Response Status: successful (0x0)" not in lines:
        assert "OCSP response: no response sent" in lines, done.stdout[-2000:] + done.stderr
        return None
    status = next(line for line in lines if line.startswith("Cert Status:"))
    update = next(line for line in lines if line.startswith("Next Update:"))
    return f"{status.split(':', 1)[1].strip()}, next update {update.split(':', 1)[1].strip()}"
