"""etcd TLS files changing under a running connection (real etcd 3.4 with mutual TLS): a
file empty at a reconnect (a renewal that truncates then writes) fails the call, not the
process, and is read again at the next connect; a renewal that keeps the file's mtime is
picked up all the same."""

from __future__ import annotations

import asyncio
import os
import shutil
import ssl
import subprocess
import sys
from pathlib import Path

import pytest

from smartstack.etcd_json import EtcdJsonConnection
from smartstack.registry_auth import EtcdTLS
from testbed.etcd import EtcdCluster
from testbed.tls import LocalPKI, make_test_pki

# Run in a child: gRPC aborted the process (SIGABRT in its C core, "Check failed:
# cert_chain != nullptr") on an empty certificate or key, which would end pytest too.
CHILD = """
import asyncio, logging, sys
from pathlib import Path
from smartstack.etcd import EtcdConnection
from smartstack.registry_auth import EtcdTLS

class Print(logging.Handler):
    def emit(self, record):
        print("event", record.getMessage(), flush=True)

async def main(endpoint, ca, cert, key, emptied):
    logging.getLogger().addHandler(Print())
    logging.getLogger().setLevel(logging.INFO)
    tls = EtcdTLS(ca_cert=ca, cert_cert=cert, cert_key=key)
    conn = EtcdConnection([endpoint], tls=tls, timeout=3)
    await conn.with_client(lambda c: c.put(b"/tls-files", b"v"))
    good = Path(emptied).read_bytes()
    Path(emptied).write_bytes(b"")  # truncated by the renewal; the new bytes not there yet
    await conn.rotate("a reconnect (an etcd restart, a failover)")
    try:
        await conn.with_client(lambda c: c.get(b"/tls-files"))
    except ConnectionError as exc:
        print("refused", exc, flush=True)
    Path(emptied).write_bytes(good)  # the renewal is done
    kv = await conn.with_client(lambda c: c.get(b"/tls-files"))
    print("renewed", kv.value.decode(), flush=True)
    await conn.close()

asyncio.run(main(*sys.argv[1:]))
"""


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> LocalPKI:
    # A server certificate that allows clientAuth: the JSON gateway under --client-cert-auth.
    return make_test_pki(tmp_path_factory.mktemp("pki"), "serverAuth,clientAuth")


@pytest.fixture(scope="module")
def tls_etcd(pki: LocalPKI, tmp_path_factory: pytest.TempPathFactory):
    cluster = EtcdCluster(size=1, workdir=tmp_path_factory.mktemp("etcd"), tls=pki).start()
    yield cluster
    cluster.stop()


@pytest.mark.parametrize("emptied", ["cert_cert", "cert_key"])
def test_grpc_an_empty_client_file_at_a_reconnect_fails_the_call_not_the_process(
    tls_etcd: EtcdCluster, pki: LocalPKI, tmp_path: Path, emptied: str
) -> None:
    files = {"ca_cert": pki.ca_cert, "cert_cert": pki.client_cert, "cert_key": pki.client_key}
    copies = {key: shutil.copy(path, tmp_path / key) for key, path in files.items()}
    argv = [f"https://{tls_etcd.endpoints[0]}", *map(str, copies.values()), str(copies[emptied])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    done = subprocess.run([sys.executable, "-c", CHILD, *argv], capture_output=True,
                          text=True, timeout=60, env=env)  # fmt: skip
    assert done.returncode == 0, (done.returncode, done.stderr[-600:])
    lines = done.stdout.splitlines()
    assert f"refused etcd_tls: {emptied} {copies[emptied]} is empty (0 bytes)" in lines
    assert "event etcd_tls_failed" in lines
    assert lines[-1] == "renewed v"  # the file written again: used at the next connect


async def test_json_a_renewal_that_keeps_the_mtime_is_picked_up(
    tls_etcd: EtcdCluster, pki: LocalPKI, tmp_path: Path
) -> None:
    """A CA file renamed over the old one with the old one's mtime (a file written earlier,
    ``cp -p``, an unpacked archive): the SSL context is made again all the same."""
    other = make_test_pki(tmp_path / "other")
    ca = Path(shutil.copy(other.ca_cert, tmp_path / "ca.pem"))  # not etcd's CA: refused
    tls = EtcdTLS(ca_cert=str(ca), cert_cert=str(pki.client_cert), cert_key=str(pki.client_key))
    conn = EtcdJsonConnection([f"https://{e}" for e in tls_etcd.endpoints], tls=tls, timeout=3)
    try:
        with pytest.raises(ssl.SSLError, match="CERTIFICATE_VERIFY_FAILED"):
            await conn.list_prefix(b"/tls-files/", 5)
        renewed = Path(shutil.copy(pki.ca_cert, tmp_path / "ca.new"))
        old = ca.stat()
        os.utime(renewed, ns=(old.st_atime_ns, old.st_mtime_ns))
        os.replace(renewed, ca)
        assert ca.stat().st_mtime_ns == old.st_mtime_ns
        assert (await conn.list_prefix(b"/tls-files/", 5)).kvs == []
    finally:
        await conn.close()
        await asyncio.sleep(0)
