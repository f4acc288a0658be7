"""read_pem on real certificates and keys (a throw-away PKI, ``openssl``): every variant
OpenSSL loads is handed on as it is (the SSLContext load in each case proves it valid).
What it refuses: tests/unit/foundation/test_etcd_tls_auth_parts.py."""

from __future__ import annotations

import ssl
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from smartstack.registry_auth import read_pem
from testbed.tls import LocalPKI, make_test_pki


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> LocalPKI:
    return make_test_pki(tmp_path_factory.mktemp("pki"), "serverAuth,clientAuth")


def openssl(*args: str | Path) -> bytes:
    return subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=30).stdout


def trailing_blanks(pem: bytes) -> bytes:
    """A blank after each BEGIN/END line (a Windows editor, a paste from a web UI)."""
    lines = pem.split(b"\n")
    return b"\n".join(line + b" " if line.startswith(b"-----") else line for line in lines)


Variant = Callable[[LocalPKI], tuple[bytes, bytes]]


def files(pki: LocalPKI) -> tuple[bytes, bytes, bytes]:
    return (Path(pki.client_cert).read_bytes(), Path(pki.client_key).read_bytes(),
            Path(pki.ca_cert).read_bytes())  # fmt: skip


VARIANTS: dict[str, Variant] = {
    "as made": lambda p: files(p)[:2],
    "crlf": lambda p: (files(p)[0].replace(b"\n", b"\r\n"), files(p)[1].replace(b"\n", b"\r\n")),
    "comments, chain, trailing text": lambda p: (
        b"# leaf\n\n" + files(p)[0] + b"\n# issuer\n" + files(p)[2] + b"trailing text\n",
        files(p)[1],
    ),
    "no final newline": lambda p: (files(p)[0].rstrip(b"\n"), files(p)[1].rstrip(b"\n")),
    "trailing blanks on cert lines": lambda p: (trailing_blanks(files(p)[0]), files(p)[1]),
    "trailing blanks on key lines": lambda p: (files(p)[0], trailing_blanks(files(p)[1])),
    # `openssl ecparam -genkey`'s layout: EC PARAMETERS, then a traditional EC key.
    "ec key with ec parameters": lambda p: (
        files(p)[0],
        openssl("ecparam", "-name", "prime256v1")
        + openssl("pkey", "-in", p.client_key, "-traditional"),
    ),
    "pkcs8 key": lambda p: (
        files(p)[0],
        openssl("pkcs8", "-topk8", "-nocrypt", "-in", p.client_key),
    ),
}


@pytest.mark.parametrize("name", VARIANTS)
def test_what_openssl_loads_is_read(tmp_path: Path, pki: LocalPKI, name: str) -> None:
    cert_pem, key_pem = VARIANTS[name](pki)
    cert, key = tmp_path / "client.pem", tmp_path / "client.key"
    cert.write_bytes(cert_pem)
    key.write_bytes(key_pem)
    context = ssl.create_default_context(cafile=str(pki.ca_cert))
    context.load_cert_chain(str(cert), str(key))  # valid: OpenSSL takes them
    assert read_pem("cert_cert", str(cert)) == cert_pem
    assert read_pem("cert_key", str(key)) == key_pem
