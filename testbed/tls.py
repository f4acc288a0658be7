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


def _openssl(*args: str | Path, cwd: Path) -> str:
    binary = shutil.which(OPENSSL)
    if binary is None:
        raise FileNotFoundError("openssl not found on PATH (Debian package openssl)")
    done = subprocess.run(
        [binary, *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=30
    )
    if done.returncode != 0:
        raise RuntimeError(f"openssl {args[0]} failed: {done.stderr.strip()[-500:]}")
    return done.stdout


def _key_and_request(directory: Path, name: str, subject: str, extensions: str) -> None:
    """``<name>.key``, a signing request for it and the extensions file, in ``directory``."""
    _openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-subj", subject, "-keyout", f"{name}.key", "-out", f"{name}.csr",
             cwd=directory)  # fmt: skip
    (directory / f"{name}.ext").write_text(extensions)


def _signed(directory: Path, name: str, subject: str, extensions: str) -> None:
    """A key and a certificate for it, signed by the CA in ``directory``."""
    _key_and_request(directory, name, subject, extensions)
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


# `openssl ca` (the only 3.0 command that sets both dates) wants a config and a database.
_CA_CONFIG = """[ca]
default_ca = dated
[dated]
database = dated-index.txt
new_certs_dir = .
serial = dated-serial.txt
default_md = sha256
policy = any
unique_subject = no
[any]
commonName = supplied
"""


def _signed_dated(
    directory: Path, name: str, subject: str, extensions: str, dates: tuple[str, str]
) -> None:
    """As ``_signed``, valid from ``dates[0]`` to ``dates[1]`` (``YYYYMMDDHHMMSSZ``, UTC)."""
    _key_and_request(directory, name, subject, extensions)
    (directory / "dated-ca.cnf").write_text(_CA_CONFIG)
    (directory / "dated-index.txt").touch()
    if not (directory / "dated-serial.txt").exists():
        (directory / "dated-serial.txt").write_text("1000\n")
    _openssl("ca", "-batch", "-notext", "-config", "dated-ca.cnf", "-cert", "ca.pem",
             "-keyfile", "ca.key", "-in", f"{name}.csr", "-out", f"{name}.pem",
             "-extfile", f"{name}.ext", "-startdate", dates[0], "-enddate", dates[1],
             cwd=directory)  # fmt: skip


def make_server_pem(
    directory: Path, name: str, dns_names: list[str], dates: tuple[str, str] | None = None
) -> str:
    """Certificate + key (one PEM text, as HAProxy loads it) for ``dns_names``, signed by the
    CA that make_test_pki made in ``directory``; ``dates``: (notBefore, notAfter) as
    ``YYYYMMDDHHMMSSZ`` (an expired or not yet valid certificate), default now + 2 days."""
    subject = f"/CN={dns_names[0]}"
    sans = ",".join(f"DNS:{dns}" for dns in dns_names)
    extensions = f"subjectAltName={sans}\nextendedKeyUsage=serverAuth\n"
    if dates is None:
        _signed(directory, name, subject, extensions)
    else:
        _signed_dated(directory, name, subject, extensions, dates)
    return (directory / f"{name}.pem").read_text() + (directory / f"{name}.key").read_text()


def make_ocsp_response(directory: Path, name: str, out: Path, minutes: int = 1440) -> bytes:
    """A DER OCSP response saying "good" for ``<name>.pem`` (made by make_server_pem in
    ``directory``), signed by the CA itself and valid ``minutes`` (a different value makes
    a different response); written to ``out`` and returned."""
    serial = _openssl("x509", "-in", f"{name}.pem", "-noout", "-serial", cwd=directory)
    # `openssl ocsp -index` looks the serial up in a CA database (status V: valid)
    index = f"V\t991231235959Z\t\t{serial.strip().split('=', 1)[1]}\tunknown\t/CN={name}\n"
    (directory / "ocsp-index.txt").write_text(index)
    _openssl("ocsp", "-index", "ocsp-index.txt", "-rsigner", "ca.pem", "-rkey", "ca.key",
             "-CA", "ca.pem", "-issuer", "ca.pem", "-cert", f"{name}.pem", "-respout", out,
             "-nmin", str(minutes), cwd=directory)  # fmt: skip
    return out.read_bytes()
