"""TLS termination through a real synapse process and its managed HAProxy: an empty cert_dir
starts on the placeholder, a certificate dropped into cert_dir is served by SNI within 5 s
without a reload, and a broken PEM is refused by name while the old one keeps serving:
also across a reload and an HAProxy crash, since HAProxy reads synapse's copies."""

from __future__ import annotations

import os
import signal
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


def copy_of(syn: Synapse, name: str) -> Path:
    """synapse's copy of cert_dir's ``<name>.pem``: what the crt-list names."""
    return syn.dir / "haproxy.certs" / f"{name}.pem"


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
        assert crt_list == [str(syn.dir / "haproxy.placeholder.pem"), str(copy_of(syn, "a"))]


def edge_synapse(certs: Path, backends: dict[str, int], tls_port: int) -> Synapse:
    """A synapse routing ``<name>.example.test`` to each backend (name -> port), HTTPS on
    ``tls_port`` from ``certs``."""
    services = {name: routed(name, port) for name, port in backends.items()}
    haproxy = {
        "shared_frontend": [f"bind 127.0.0.1:{free_port()}"],
        "tls": {"cert_dir": str(certs), "port": tls_port, "bind_address": "127.0.0.1"},
    }
    return Synapse(services, haproxy=haproxy)


def served_dir(tmp_path: Path, names: str) -> tuple[Path, Path]:
    """(pki, cert_dir) with ``<name>.pem`` for ``<name>.example.test`` for each name."""
    pki, certs = tmp_path / "pki", tmp_path / "certs"
    make_test_pki(pki)
    certs.mkdir()
    for name in names:
        (certs / f"{name}.pem").write_text(make_server_pem(pki, name, [f"{name}.example.test"]))
    return pki, certs


def routed(name: str, port: int) -> dict:
    return {
        "discovery": {"method": "base"},
        "default_servers": [{"host": "127.0.0.1", "port": port, "name": name}],
        "haproxy": {"routes": {"hosts": [f"{name}.example.test"]}},
    }


def serial(port: int, name: str, scratch: Path) -> str:
    return served_cert(port, f"{name}.example.test", scratch)["serialNumber"]


def broken_pair(pki: Path) -> str:
    """A renewed certificate for a.example.test with the key of another one."""
    cert = make_server_pem(pki, "a-renewed", ["a.example.test"])
    other = make_server_pem(pki, "x", ["x.example.test"])
    return (
        cert[: cert.index("-----BEGIN PRIVATE KEY")]
        + other[other.index("-----BEGIN PRIVATE KEY") :]
    )


def test_a_reload_keeps_the_last_good_certificate_of_a_broken_file(tmp_path, http_backend_factory):
    pki, certs = served_dir(tmp_path, "ab")
    good = (certs / "a.pem").read_text()
    ports = {name: http_backend_factory(name).port for name in "abc"}
    tls_port = free_port()
    with edge_synapse(certs, {"a": ports["a"], "b": ports["b"]}, tls_port) as syn:
        serves_within(tls_port, "a.example.test", "a.example.test", tmp_path, 5)
        served = serial(tls_port, "a", tmp_path)
        (certs / "a.pem").write_text(broken_pair(pki))
        wait(lambda: "certificate_refused" in syn.log(300), 10, f"the refusal\n{syn.log()}")
        # an unrelated change reloads HAProxy: it reads the crt-list and the copies again
        workers = syn.workers()
        syn.config["services"]["c"] = routed("c", ports["c"])
        syn.write_config()
        syn.signal(signal.SIGHUP)
        wait(lambda: syn.workers() != workers, 20, f"the reload\n{syn.log()}")
        assert serial(tls_port, "a", tmp_path) == served  # not the placeholder
        assert subject_cn(served_cert(tls_port, "b.example.test", tmp_path)) == "b.example.test"
        crt_list = (syn.dir / "haproxy.crt-list").read_text().split()
        assert crt_list[1:] == [str(copy_of(syn, "a")), str(copy_of(syn, "b"))]
        assert copy_of(syn, "a").read_text() == good
        assert copy_of(syn, "a").stat().st_mode & 0o777 == 0o600


def test_an_haproxy_crash_while_a_pem_is_broken_restarts_from_the_copies(
    tmp_path, http_backend_factory
):
    _, certs = served_dir(tmp_path, "ab")
    ports = {name: http_backend_factory(name).port for name in "ab"}
    tls_port = free_port()
    with edge_synapse(certs, ports, tls_port) as syn:
        serves_within(tls_port, "b.example.test", "b.example.test", tmp_path, 5)
        served = serial(tls_port, "a", tmp_path)
        good = (certs / "a.pem").read_text()
        (certs / "a.pem").write_text(good[: len(good) // 2])  # caught half-written
        wait(lambda: "certificate_refused" in syn.log(300), 10, f"the refusal\n{syn.log()}")
        pids = syn.haproxy_pids()
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        wait(lambda: syn.haproxy_pids() and set(syn.haproxy_pids()).isdisjoint(pids), 20,
             f"a new HAProxy\n{syn.log()}")  # fmt: skip
        serves_within(tls_port, "b.example.test", "b.example.test", tmp_path, 10)
        assert serial(tls_port, "a", tmp_path) == served
        # started from the files at once: HAProxy did not refuse them
        assert "haproxy_start_failed" not in syn.log(400)
        assert "restarted after it exited" in syn.log(400)


def test_an_emptied_or_swapped_cert_dir_removes_nothing(tmp_path, http_backend_factory):
    pki, certs = served_dir(tmp_path, "ab")
    ports = {name: http_backend_factory(name).port for name in "ab"}
    tls_port = free_port()

    def served_for(seconds: float) -> set[str]:
        """Every certificate name a and b got over ``seconds`` (two watcher scans or more)."""
        seen: set[str] = set()
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            seen |= {subject_cn(served_cert(tls_port, f"{n}.example.test", tmp_path)) for n in "ab"}
            time.sleep(0.1)
        return seen

    with edge_synapse(certs, ports, tls_port) as syn:
        serves_within(tls_port, "b.example.test", "b.example.test", tmp_path, 5)
        # a deploy that swaps the directory: missing in between
        certs.rename(tmp_path / "certs.old")
        assert served_for(2.5) == {"a.example.test", "b.example.test"}
        renewed = tmp_path / "certs.new"
        renewed.mkdir()
        (renewed / "a.pem").write_text(make_server_pem(pki, "a2", ["a.example.test"]))
        (renewed / "b.pem").write_text((tmp_path / "certs.old" / "b.pem").read_text())
        before = serial(tls_port, "a", tmp_path)
        renewed.rename(certs)
        wait(lambda: serial(tls_port, "a", tmp_path) != before, 5, "the renewed certificate")
        # `rm *.pem; cp new/*`: empty in between
        for pem in certs.glob("*.pem"):
            pem.unlink()
        assert served_for(2.5) == {"a.example.test", "b.example.test"}
        warnings = [x for x in syn.log(400).splitlines() if "cert_dir_empty" in x]
        assert len(warnings) == 2, warnings  # once per streak
        # one file removed (another stays): its name gets the placeholder
        (certs / "a.pem").write_text(make_server_pem(pki, "a3", ["a.example.test"]))
        serves_within(tls_port, "b.example.test", "synapse-placeholder", tmp_path, 5)
        assert not copy_of(syn, "b").exists()


def test_a_pem_with_an_empty_line_rotates_at_runtime(tmp_path, http_backend_factory):
    pki, certs = served_dir(tmp_path, "")

    def spaced(name: str, cn: str) -> str:  # `cat cert.pem; echo; cat key.pem`
        pem = make_server_pem(pki, name, [cn])
        key = pem.index("-----BEGIN PRIVATE KEY")
        return pem[:key] + "\n" + pem[key:]

    (certs / "a.pem").write_text(spaced("a1", "a.example.test"))
    ports = {name: http_backend_factory(name).port for name in "ab"}
    tls_port = free_port()
    with edge_synapse(certs, ports, tls_port):
        serves_within(tls_port, "a.example.test", "a.example.test", tmp_path, 5)
        before = serial(tls_port, "a", tmp_path)
        (certs / "a.pem.tmp").write_text(spaced("a2", "a.example.test"))
        (certs / "a.pem.tmp").rename(certs / "a.pem")
        (certs / "b.pem").write_text(spaced("b1", "b.example.test"))
        assert serves_within(tls_port, "b.example.test", "b.example.test", tmp_path, 5) <= 5
        wait(lambda: serial(tls_port, "a", tmp_path) != before, 5, "a rotated")


def test_expired_and_hidden_pems_are_not_served(tmp_path, http_backend_factory):
    pki, certs = served_dir(tmp_path, "a")
    ports = {name: http_backend_factory(name).port for name in "abc"}
    tls_port = free_port()
    with edge_synapse(certs, ports, tls_port) as syn:
        serves_within(tls_port, "a.example.test", "a.example.test", tmp_path, 5)
        served = serial(tls_port, "a", tmp_path)
        expired = ("20200101000000Z", "20200201000000Z")
        (certs / "a.pem").write_text(make_server_pem(pki, "a-old", ["a.example.test"], expired))
        future = ("20990101000000Z", "20990201000000Z")
        (certs / "b.pem").write_text(make_server_pem(pki, "b-new", ["b.example.test"], future))
        # an Ansible temp file (renamed to c.pem once written): not a certificate yet
        (certs / ".ansible_tmp4f2a.pem").write_text(make_server_pem(pki, "c", ["c.example.test"]))
        wait(lambda: "not valid before" in syn.log(300), 10, f"the refusals\n{syn.log()}")
        refusals = [x for x in syn.log(300).splitlines() if "certificate_refused" in x]
        assert any(str(certs / "a.pem") in x and "expired on 2020-02-01" in x for x in refusals)
        assert any(str(certs / "b.pem") in x and "2099-01-01" in x for x in refusals)
        time.sleep(1.5)  # one more scan
        assert serial(tls_port, "a", tmp_path) == served
        for name in "bc":
            assert subject_cn(served_cert(tls_port, f"{name}.example.test", tmp_path)) == (
                "synapse-placeholder"
            )
        assert [Path(p).name for p in (syn.dir / "haproxy.crt-list").read_text().split()] == [
            "haproxy.placeholder.pem",
            "a.pem",
        ]
