"""etcd TLS files and auth answers, the parts without etcd: which TLS files are refused
before gRPC sees them (and why), which answers make a connection authenticate again, and a watch
probe whose TLS context cannot be made (real etcd: tests/integration/foundation/
test_etcd_tls_files.py, test_etcd_auth_enable.py)."""

from __future__ import annotations

import asyncio
import re
import ssl
from pathlib import Path

import pytest

from smartstack import etcd_json_probe
from smartstack.etcd_http import Target
from smartstack.etcd_json import refusal
from smartstack.etcd_json_probe import WatchProbe
from smartstack.registry_auth import (
    AUTH_NOT_ENABLED,
    EtcdTLS,
    TLSFileError,
    read_pem,
    token_refused,
)

CERT = b"-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIU\n-----END CERTIFICATE-----\n"
KEY = b"-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49\n-----END PRIVATE KEY-----\n"


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"", "is empty"),
        (b" \r\n\n\t", "is empty"),
        (b"garbage\n", "holds no -----BEGIN line"),
        (CERT[:20], "is incomplete: its last -----BEGIN line is cut"),
        (CERT[:-5], "is incomplete: -----BEGIN CERTIFICATE----- without its END line"),
        (CERT + CERT[:40], "is incomplete: -----BEGIN CERTIFICATE----- without its END line"),
        (CERT[:40] + CERT, "is incomplete: -----BEGIN CERTIFICATE----- without its END line"),
    ],
    ids=["empty", "blanks", "no begin", "begin cut", "end cut", "second cut", "first cut"],
)
def test_the_refusal_says_why(tmp_path: Path, data: bytes, why: str) -> None:
    path = tmp_path / "host.pem"
    path.write_bytes(data)
    message = f"etcd_tls: cert_cert {path} {why} ({len(data)} bytes)"
    with pytest.raises(TLSFileError, match=f"^{re.escape(message)}$"):
        read_pem("cert_cert", str(path))


def test_complete_files_are_read_and_a_missing_one_refused(tmp_path: Path) -> None:
    ca, cert, key = tmp_path / "ca.pem", tmp_path / "host.pem", tmp_path / "host.key"
    ca.write_bytes(b"Bag Attributes: text before a block\n" + CERT + CERT.replace(b"\n", b"\r\n"))
    cert.write_bytes(CERT)
    key.write_bytes(KEY)
    tls = EtcdTLS(ca_cert=str(ca), cert_cert=str(cert), cert_key=str(key))
    assert tls.read() == (ca.read_bytes(), KEY, CERT)
    key.unlink()  # a renewal deleting, then writing it
    with pytest.raises(TLSFileError, match=r"cert_key .*: No such file or directory"):
        tls.read()
    assert isinstance(TLSFileError("x"), ConnectionError)  # a failed connect: rotate, retry


def test_an_empty_client_file_is_refused_by_read(tmp_path: Path) -> None:
    """EtcdTLS.read() feeds grpc.ssl_channel_credentials, which aborts on b"" (t1 repro)."""
    cert, key = tmp_path / "host.pem", tmp_path / "host.key"
    cert.write_bytes(CERT)
    key.write_bytes(KEY)
    tls = EtcdTLS(cert_cert=str(cert), cert_key=str(key))
    assert tls.read() == (None, KEY, CERT)
    key.write_bytes(b"")
    with pytest.raises(TLSFileError, match="cert_key"):
        tls.read()


def test_answers_that_ask_for_a_new_token() -> None:
    for message in ("etcdserver: user name is empty", "etcdserver: invalid auth token",
                    "etcdserver: revision of auth store is old"):  # fmt: skip
        assert token_refused(message)
        assert token_refused(f"rpc error: code = InvalidArgument desc = {message}")
    wrong_password = "etcdserver: authentication failed, invalid user ID or password"
    for message in ("etcdserver: permission denied", wrong_password, AUTH_NOT_ENABLED):
        assert not token_refused(message)


def test_a_watch_refused_without_a_token_asks_for_one() -> None:
    """etcd 3.4 cancels a token-less watch once auth is on, saying so in words only."""
    reason = "rpc error: code = InvalidArgument desc = etcdserver: user name is empty"
    error = refusal({"canceled": True, "cancel_reason": reason})
    assert getattr(error, "code", None) == 16  # Unauthenticated: the connection authenticates


class Unloadable:
    """A connection whose TLS context cannot be made (a key file being renewed)."""

    def __init__(self, ticks: int) -> None:
        self.asked, self.ticks, self.silent = 0, ticks, []

    def where(self) -> tuple[Target, object]:
        self.asked += 1
        raise ssl.SSLError(9, "[SSL] PEM lib (_ssl.c:3917)")

    async def on_silent(self, reason: str, turn: object) -> None:
        self.silent.append(reason)

    def watching(self) -> bool:
        return self.asked < self.ticks


async def test_a_probe_tick_without_a_tls_context_is_skipped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Neither a failover (the member's health is unknown, not bad) nor the end of the probe
    task (it ended for good, and a member gone silent was never noticed again)."""
    monkeypatch.setattr(etcd_json_probe, "PROBE_INTERVAL", 0)
    conn = Unloadable(ticks=3)
    probe = WatchProbe(conn.where, conn.on_silent, conn.watching)
    probe.start()
    task = probe._task
    assert task is not None
    async with asyncio.timeout(5):
        await task  # raised the SSLError after the first tick before
    assert conn.asked == 3 and conn.silent == []
    await probe.close()
