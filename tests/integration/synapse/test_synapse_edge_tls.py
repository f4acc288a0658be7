"""TLS termination through a real synapse process and its managed HAProxy: an empty cert_dir
starts on the placeholder, a certificate dropped into cert_dir is served by SNI within 5 s
without a reload, and a broken PEM is refused by name while the old one keeps serving."""

from __future__ import annotations

import time
from pathlib import Path

from synapse_e2e import Synapse, wait
from tls_peer import served_cert, subject_cn

from testbed.process import free_port
from testbed.tls import make_server_pem, make_test_pki


def serves_within(port: int, sni: str, cn: str, scratch: Path, limit: float) -> float:
    """Seconds until ``sni`` gets the certificate named ``cn`` (at most ``limit``)."""
    began = time.monotonic()
    last = None
    while time.monotonic() < began + limit:
        last = subject_cn(served_cert(port, sni, scratch))
        if last == cn:
            return time.monotonic() - began
        time.sleep(0.1)
    raise AssertionError(f"{sni}: {last!r} served, not {cn!r}, after {limit}s")


def test_certificates_rotate_without_reload(tmp_path, http_backend_factory):
    pki, certs = tmp_path / "pki", tmp_path / "certs"
    make_test_pki(pki)
    certs.mkdir()
    shop = http_backend_factory("shop")
    port, tls_port = free_port(), free_port()
    services = {
        "shop": {
            "discovery": {"method": "base"},
            "default_servers": [{"host": "127.0.0.1", "port": shop.port, "name": "shop"}],
            "haproxy": {"routes": {"hosts": ["a.example.test"]}},
        }
    }
    haproxy = {
        "shared_frontend": [f"bind 127.0.0.1:{port}"],
        "tls": {"cert_dir": str(certs), "port": tls_port, "bind_address": "127.0.0.1"},
    }
    with Synapse(services, haproxy=haproxy) as syn:
        # An empty directory: HAProxy started on the generated placeholder.
        serves_within(tls_port, "a.example.test", "synapse-placeholder", tmp_path, 5)
        workers = syn.workers()
        reloads = syn.status()["haproxy"]["reloads"]

        pem = make_server_pem(pki, "a", ["a.example.test"])
        (certs / "a.pem").write_text(pem)
        assert serves_within(tls_port, "a.example.test", "a.example.test", tmp_path, 5) <= 5
        assert subject_cn(served_cert(tls_port, "other.test", tmp_path)) == "synapse-placeholder"

        # Half-written: refused by name, the old certificate keeps serving.
        (certs / "a.pem").write_text(pem[: len(pem) // 2])
        wait(lambda: "certificate_refused" in syn.log(300), 10, f"the refusal\n{syn.log()}")
        line = next(x for x in syn.log(300).splitlines() if "certificate_refused" in x)
        assert str(certs / "a.pem") in line
        assert subject_cn(served_cert(tls_port, "a.example.test", tmp_path)) == "a.example.test"
        assert syn.workers() == workers
        assert syn.status()["haproxy"]["reloads"] == reloads
        crt_list = (syn.dir / "haproxy.crt-list").read_text().split()
        assert crt_list == [str(syn.dir / "haproxy.placeholder.pem"), str(certs / "a.pem")]
