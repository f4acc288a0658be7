"""A throw-away certificate authority for TLS tests, made with the ``openssl`` CLI.

One CA, a server certificate for 127.0.0.1 (an IP SAN: gRPC verifies the address it dials)
and a client certificate for mutual TLS. Keys are P-256 (fast to make); everything lives
in the given directory and is valid for two days.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

OPENSSL = "openssl"


@dataclass(frozen=True)
class LocalPKI:
    ca_cert: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _openssl(*args: str | Path, cwd: Path) -> None:
    binary = shutil.which(OPENSSL)
    if binary is None:
        raise FileNotFoundError("openssl not found on PATH (Debian package openssl)")
    done = subprocess.run(
        [binary, *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=30
    )
    if done.returncode != 0:
        raise RuntimeError(f"openssl {args[0]} failed: {done.stderr.strip()[-500:]}")


def _signed(directory: Path, name: str, subject: str, extensions: str) -> None:
    """A key and a certificate for it, signed by the CA in ``directory``."""
    _openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-subj", subject, "-keyout", f"{name}.key", "-out", f"{name}.csr",
             cwd=directory)  # fmt: skip
    (directory / f"{name}.ext").write_text(extensions)
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
             "-CAcreateserial", "-days", "2", "-extfile", f"{name}.ext", "-out", f"{name}.pem",
             cwd=directory)  # fmt: skip


def make_test_pki(directory: Path, server_usage: str = "serverAuth") -> LocalPKI:
    """A CA, a server certificate for 127.0.0.1 (``server_usage``: its extendedKeyUsage;
    etcd's JSON gateway under --client-cert-auth needs "serverAuth,clientAuth") and a
    client certificate, in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-subj", "/CN=smartstack test CA", "-days", "2",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign",
             "-keyout", "ca.key", "-out", "ca.pem", cwd=directory)  # fmt: skip
    _signed(directory, "server", "/CN=127.0.0.1",
            f"subjectAltName=IP:127.0.0.1\nextendedKeyUsage={server_usage}\n")  # fmt: skip
    _signed(directory, "client", "/CN=smartstack-client", "extendedKeyUsage=clientAuth\n")
    return LocalPKI(
        ca_cert=directory / "ca.pem",
        server_cert=directory / "server.pem",
        server_key=directory / "server.key",
        client_cert=directory / "client.pem",
        client_key=directory / "client.key",
    )


def make_server_pem(directory: Path, name: str, dns_names: list[str]) -> str:
    """Certificate + key (one PEM text, as HAProxy loads it) for ``dns_names``, signed by the
    CA that make_test_pki made in ``directory``."""
    subject = f"/CN={dns_names[0]}"
    sans = ",".join(f"DNS:{dns}" for dns in dns_names)
    _signed(directory, name, subject, f"subjectAltName={sans}\nextendedKeyUsage=serverAuth\n")
    return (directory / f"{name}.pem").read_text() + (directory / f"{name}.key").read_text()
