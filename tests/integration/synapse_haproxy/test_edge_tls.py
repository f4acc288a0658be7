"""TLS termination on a real HAProxy: SNI from a crt-list of synapse's copies, a placeholder
for an empty directory, certificates added and replaced through the runtime API without a
reload, a broken PEM refused."""

from __future__ import annotations

import asyncio
import http.client
import logging
import socket
import ssl
import time
from pathlib import Path

from haproxy_helpers import haproxy_config, server, service
from tls_peer import served_cert, subject_cn

from synapse.haproxy import tls
from synapse.haproxy.certstore import CertStore
from synapse.haproxy.certwatch import CertWatcher, payload_sender
from synapse.haproxy.pemcheck import pem_problem
from synapse.haproxy.render import Renderer
from synapse.haproxy.routes import map_paths, routes_of, write_map_files
from testbed.haproxy import check_config
from testbed.process import free_port
from testbed.tls import make_server_pem, make_test_pki


def https_get(port: int, host: str, ca: Path, path: str = "/") -> tuple[int, str, str | None]:
    context = ssl.create_default_context(cafile=str(ca))
    conn = http.client.HTTPSConnection(host, port, timeout=5, context=context)
    conn.sock = context.wrap_socket(
        socket.create_connection(("127.0.0.1", port), timeout=5), server_hostname=host
    )
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        hsts = response.getheader("Strict-Transport-Security")
        return response.status, response.read().decode(), hsts
    finally:
        conn.close()


def test_certificates_by_sni_rotated_at_runtime(
    haproxy_factory, sockdir, tmp_path, http_backend_factory
):
    pki = tmp_path / "pki"
    make_test_pki(pki)
    certs = tmp_path / "certs"
    certs.mkdir()
    port, tls_port = free_port(), free_port()
    config = haproxy_config(
        config_file_path=str(sockdir / "haproxy.cfg"),
        bind_address="127.0.0.1",
        shared_frontend=[f"bind 127.0.0.1:{port}"],
        tls={"cert_dir": str(certs), "port": tls_port, "hsts": 600, "redirect_http": True},
        **{"global": [f"stats socket {sockdir}/admin.sock mode 600 level admin"]},
    )
    backend = http_backend_factory("shop")
    services = [
        service("shop", [server("127.0.0.1", backend.port, "shop")], backend_only=True,
                routes={"hosts": ["a.example.test", "b.example.test"]})
    ]  # fmt: skip
    path = Path(config.config_file_path)
    path.write_text(Renderer(config).render(services).text)
    write_map_files(routes_of(services), map_paths(path))
    paths = tls.tls_paths(path)
    assert config.tls is not None
    served, refused = tls.write_tls_files(config.tls, paths)
    assert served == {} and refused == {}
    check_config(path)
    proc = haproxy_factory(config_path=path, workdir=sockdir)
    worker = proc.worker_pids()

    # empty directory: the placeholder answers
    assert subject_cn(served_cert(tls_port, "a.example.test", tmp_path)) == "synapse-placeholder"

    def copies() -> dict[Path, tls.Cert]:  # what synapse lists: copies of the usable PEMs
        return {paths.copy_of(p): tls.Cert(t) for p, t in tls.scan(certs)[0].items()}

    # a certificate appears: new ssl cert / set / commit / add ssl crt-list, no reload
    (certs / "a.pem").write_text(make_server_pem(pki, "a1", ["a.example.test"]))
    (certs / "b.pem").write_text("-----BEGIN CERTIFICATE-----\nhalf-writ")  # broken
    usable, refused = tls.scan(certs)
    assert list(usable) == [certs / "a.pem"] and list(refused) == [certs / "b.pem"]
    new = copies()
    for command in tls.runtime_commands(served, new, paths):
        answer = proc.runtime(command)
        assert "rror" not in answer and "Can't" not in answer, (command, answer)
    served = new
    assert subject_cn(served_cert(tls_port, "a.example.test", tmp_path)) == "a.example.test"
    assert https_get(tls_port, "a.example.test", pki / "ca.pem") == (200, "shop", "max-age=600")

    # replaced in place: set ssl cert / commit ssl cert
    before = served_cert(tls_port, "a.example.test", tmp_path)["serialNumber"]
    (certs / "a.pem").write_text(make_server_pem(pki, "a2", ["a.example.test"]))
    (certs / "b.pem").write_text(make_server_pem(pki, "b", ["b.example.test"]))
    assert tls.scan(certs)[1] == {}
    new = copies()
    for command in tls.runtime_commands(served, new, paths):
        answer = proc.runtime(command)
        assert "rror" not in answer and "Can't" not in answer, (command, answer)
    served = new
    assert served_cert(tls_port, "a.example.test", tmp_path)["serialNumber"] != before
    assert subject_cn(served_cert(tls_port, "b.example.test", tmp_path)) == "b.example.test"
    assert https_get(tls_port, "b.example.test", pki / "ca.pem") == (200, "shop", "max-age=600")

    # removed: del ssl crt-list / del ssl cert; the placeholder answers that name again
    (certs / "b.pem").unlink()
    new = copies()
    commands = tls.runtime_commands(served, new, paths)
    assert [c.split()[0:3] for c in commands] == [
        ["del", "ssl", "crt-list"],
        ["del", "ssl", "cert"],
    ]
    for command in commands:
        answer = proc.runtime(command)
        assert "rror" not in answer and "Can't" not in answer, (command, answer)
    assert subject_cn(served_cert(tls_port, "b.example.test", tmp_path)) == "synapse-placeholder"
    assert proc.worker_pids() == worker
    # ... and the crt-list on disk follows, for the next reload: copies, mode 0600
    tls.write_tls_files(config.tls, paths)
    copy = paths.copies / "a.pem"
    assert paths.crt_list.read_text().splitlines() == [str(paths.placeholder), str(copy)]
    assert sorted(paths.copies.iterdir()) == [copy] and copy.stat().st_mode & 0o777 == 0o600
    assert copy.read_text() == tls.normalised((certs / "a.pem").read_text())

    # plain HTTP is redirected, HTTPS answers carry HSTS
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    conn.request("GET", "/x", headers={"Host": "a.example.test"})
    response = conn.getresponse()
    assert response.status == 301
    assert response.getheader("Location") == "https://a.example.test/x"
    conn.close()


async def test_watched_directory_serves_new_certificates_within_5s(
    haproxy_factory, sockdir, tmp_path, caplog
):
    pki = tmp_path / "pki"
    await asyncio.to_thread(make_test_pki, pki)
    certs = tmp_path / "certs"
    certs.mkdir()
    tls_port = free_port()
    config = haproxy_config(
        config_file_path=str(sockdir / "haproxy.cfg"),
        shared_frontend=["http-request return status 200 content-type text/plain string ok"],
        tls={"cert_dir": str(certs), "port": tls_port, "bind_address": "127.0.0.1"},
        **{"global": [f"stats socket {sockdir}/admin.sock mode 600 level admin"]},
    )
    assert config.tls is not None
    path = Path(config.config_file_path)
    path.write_text(Renderer(config).render([]).text)
    paths = tls.tls_paths(path)
    served, _ = tls.write_tls_files(config.tls, paths)
    proc = haproxy_factory(config_path=path, workdir=sockdir)
    worker = proc.worker_pids()
    send = payload_sender(str(sockdir / "admin.sock"))
    watcher = CertWatcher(CertStore(config.tls, paths), send, served, interval=0.2)
    watcher.start()

    async def serves(sni: str, cn: str) -> None:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            got = await asyncio.to_thread(served_cert, tls_port, sni, tmp_path)
            if subject_cn(got) == cn:
                return
            await asyncio.sleep(0.1)
        raise AssertionError(f"{sni} not served with {cn} within 5 s")

    try:
        pem = await asyncio.to_thread(make_server_pem, pki, "a", ["a.example.test"])
        (certs / "a.pem").write_text(pem)
        await serves("a.example.test", "a.example.test")
        # a half-written replacement is refused by name; the old certificate keeps serving
        with caplog.at_level(logging.ERROR, logger="synapse.haproxy.certwatch"):
            (certs / "a.pem").write_text(pem[: len(pem) // 2])
            deadline = time.monotonic() + 5
            while "certificate_refused" not in caplog.text and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
        refusals = [r for r in caplog.records if r.getMessage() == "certificate_refused"]
        fields = refusals[0].smartstack_fields  # type: ignore[attr-defined]
        assert fields["file"] == str(certs / "a.pem") and "private key" in fields["reason"]
        assert fields["serving"] == "the last good copy"
        await serves("a.example.test", "a.example.test")
        assert watcher.served[paths.copies / "a.pem"] == tls.Cert(pem)
        # removed (another PEM stays: an emptied cert_dir removes nothing): the placeholder
        # answers that name again; the crt-list file and the copies follow
        other = await asyncio.to_thread(make_server_pem, pki, "b", ["b.example.test"])
        (certs / "b.pem").write_text(other)
        (certs / "a.pem").unlink()
        await serves("a.example.test", "synapse-placeholder")
        await serves("b.example.test", "b.example.test")
        copy = paths.copies / "b.pem"
        assert paths.crt_list.read_text().splitlines() == [str(paths.placeholder), str(copy)]
        assert sorted(paths.copies.iterdir()) == [copy]
        assert proc.worker_pids() == worker
    finally:
        await watcher.stop()


# pem_problem asks the openssl tool: a process, so it lives in this tier.
def test_pem_problems_are_named(tmp_path):
    make_test_pki(tmp_path)
    good = make_server_pem(tmp_path, "a", ["a.example.test"])
    other = make_server_pem(tmp_path, "b", ["b.example.test"])
    assert pem_problem(good) is None
    cert_a = good[: good.index("-----BEGIN PRIVATE KEY")]
    key_b = other[other.index("-----BEGIN PRIVATE KEY") :]
    assert pem_problem(cert_a + key_b) == "the private key does not belong to the certificate"
    assert "needs a certificate and its private key" in (pem_problem(cert_a) or "")
    assert "unreadable" in (pem_problem(good[:200] + "\n" + key_b) or "")
    expired = make_server_pem(
        tmp_path, "old", ["a.example.test"], ("20200101000000Z", "20200201000000Z")
    )
    assert pem_problem(expired) == "the certificate expired on 2020-02-01 00:00:00 UTC"
    early = make_server_pem(
        tmp_path, "new", ["a.example.test"], ("20990101000000Z", "20990201000000Z")
    )
    assert pem_problem(early) == "the certificate is not valid before 2099-01-01 00:00:00 UTC"
