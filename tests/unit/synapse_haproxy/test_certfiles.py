"""The files HAProxy loads beside a certificate (``.ocsp``, ``.issuer``): which go with
synapse's copy, how the copy and they are written and cleaned up, the runtime payloads, and
the store keeping a certificate up when one of them is refused (openssl and HAProxy stood
in for)."""

from __future__ import annotations

import base64
import logging
from pathlib import Path

import pytest

from synapse.haproxy import certfiles, extracheck, tls
from synapse.haproxy.certfiles import Cert
from synapse.haproxy.certstore import CertStore
from synapse.haproxy.certwatch import CertWatcher

import test_certstore  # isort: skip
from test_certstore import PATHS, FakeHAProxy, pem  # isort: skip

edge = test_certstore.edge  # the fixture: cert_dir and a store, a PEM is good when it says GOOD

A = PATHS.copies / "a.pem"
LEAF, CA = pem("leaf"), pem("ca")
RESPONSE = b"\x30\x82 DER for leaf"


def names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


# --- which files go ----------------------------------------------------------------------


@pytest.fixture
def openssl_ocsp(monkeypatch):
    """``openssl ocsp`` stood in for: RESPONSE has a status for LEAF issued by CA only."""
    asked: list[str] = []

    def complaint(leaf: str, issuer: str, response: bytes) -> str | None:
        asked.append(issuer)
        if leaf == LEAF and issuer == CA and response == RESPONSE:
            return None
        return "no status for this certificate in it (a response for another certificate)"

    monkeypatch.setattr(extracheck, "ocsp_complaint", complaint)
    extracheck._CHECKED.clear()
    return asked


def test_an_ocsp_response_goes_with_the_issuer_haproxy_would_take(openssl_ocsp):
    # the chain holds the issuer: HAProxy takes it from there, no .issuer goes
    chained = extracheck.verdict(LEAF + CA, {certfiles.OCSP: RESPONSE, certfiles.ISSUER: b"x"})
    assert chained.cert == Cert(LEAF + CA, ocsp=RESPONSE) and chained.refused == {}
    # only .issuer holds it: both go
    given = extracheck.verdict(LEAF, {certfiles.OCSP: RESPONSE, certfiles.ISSUER: CA.encode()})
    assert given.cert == Cert(LEAF, issuer=CA.encode(), ocsp=RESPONSE)
    # neither: HAProxy would refuse the whole config, so the response does not go
    alone = extracheck.verdict(LEAF, {certfiles.OCSP: RESPONSE})
    assert alone.cert == Cert(LEAF) and "no issuer" in alone.refused[certfiles.OCSP]
    # a response for another certificate (HAProxy would staple nothing)
    other = extracheck.verdict(LEAF + CA, {certfiles.OCSP: b"other"})
    assert other.cert == Cert(LEAF + CA) and "another" in other.refused[certfiles.OCSP]


def test_what_else_lies_beside_a_pem(openssl_ocsp):
    # .issuer without a response: HAProxy 2.6 reads it for nothing
    assert extracheck.verdict(LEAF, {certfiles.ISSUER: CA.encode()}).cert == Cert(LEAF)
    found = extracheck.verdict(LEAF, {certfiles.SCTL: b"\x00\x00", certfiles.OCSP: None})
    assert found.cert == Cert(LEAF)
    assert found.refused == {certfiles.OCSP: "unreadable"}
    assert found.ignored == {certfiles.SCTL: extracheck.SCTL_WHY}
    assert openssl_ocsp == []  # nothing to ask openssl


def test_openssl_is_asked_once_per_content(openssl_ocsp):
    for _ in range(3):
        extracheck.verdict(LEAF, {certfiles.OCSP: RESPONSE, certfiles.ISSUER: CA.encode()})
    assert openssl_ocsp == [CA]


def test_the_scan_reads_the_files_beside_a_pem(tmp_path):
    source = tmp_path / "a.pem"
    source.write_text(LEAF)
    (tmp_path / "a.pem.ocsp").write_bytes(RESPONSE)
    (tmp_path / "a.pem.sctl").write_bytes(b"\x00\x00")
    (tmp_path / "a.pem.key").write_text("KEY")  # never read: accepted PEMs hold their key
    (tmp_path / "a.pem.issuer").mkdir()  # not a file
    assert certfiles.read_extras(source) == {".ocsp": RESPONSE, ".sctl": b"\x00\x00"}


# --- the copy and its files ----------------------------------------------------------------


def test_a_copy_carries_its_files_and_drops_them(tmp_path):
    copy = tmp_path / "a.pem"
    full = Cert(LEAF, issuer=CA.encode(), ocsp=RESPONSE)
    certfiles.write_copy(copy, full)
    assert names(tmp_path) == ["a.pem", "a.pem.issuer", "a.pem.ocsp"]
    assert {p.stat().st_mode & 0o777 for p in tmp_path.iterdir()} == {0o600}
    assert certfiles.read_copy(copy) == full
    inode = (tmp_path / "a.pem.ocsp").stat().st_ino
    certfiles.write_copy(copy, full)  # the same: nothing written
    assert (tmp_path / "a.pem.ocsp").stat().st_ino == inode
    certfiles.write_copy(copy, Cert(LEAF))
    assert names(tmp_path) == ["a.pem"]


def test_an_old_response_never_meets_a_new_issuer(tmp_path, monkeypatch):
    copy = tmp_path / "a.pem"
    certfiles.write_copy(copy, Cert(LEAF, issuer=b"CA1", ocsp=b"R1"))
    seen: list[tuple[str, list[str]]] = []
    write = certfiles.write_atomic

    def watched(path: Path, data: str | bytes, mode: int = 0o644) -> None:
        seen.append((path.name, names(tmp_path)))
        write(path, data, mode)

    monkeypatch.setattr(certfiles, "write_atomic", watched)
    certfiles.write_copy(copy, Cert(pem("leaf2"), issuer=b"CA2", ocsp=b"R2"))
    assert seen == [
        ("a.pem", ["a.pem", "a.pem.issuer"]),  # R1 went first
        ("a.pem.issuer", ["a.pem", "a.pem.issuer"]),
        ("a.pem.ocsp", ["a.pem", "a.pem.issuer"]),  # R2 comes last
    ]
    # a renewed response alone replaces the old one in place (no moment without it)
    seen.clear()
    certfiles.write_copy(copy, Cert(pem("leaf2"), issuer=b"CA2", ocsp=b"R3"))
    assert seen == [("a.pem.ocsp", ["a.pem", "a.pem.issuer", "a.pem.ocsp"])]


def test_stale_copies_go_with_their_files(tmp_path, monkeypatch):
    monkeypatch.setattr(tls, "checked_problem", lambda text, now=None: None)
    paths = tls.tls_paths(tmp_path / "haproxy.cfg")
    paths.placeholder.write_text(pem("placeholder"))
    a, b = paths.copies / "a.pem", paths.copies / "b.pem"
    tls.write_listed(paths, {a: Cert(LEAF, ocsp=RESPONSE), b: Cert(LEAF, CA.encode(), b"R")})
    (paths.copies / ".b.pem.ocsp.x1.tmp").write_bytes(b"being written")
    tls.write_listed(paths, {a: Cert(LEAF)})
    assert names(paths.copies) == [".b.pem.ocsp.x1.tmp", "a.pem"]
    assert paths.crt_list.read_text().split() == [str(paths.placeholder), str(a)]


def test_a_changed_file_sends_the_whole_certificate():
    full = Cert(LEAF, issuer=CA.encode(), ocsp=RESPONSE)
    renewed = Cert(LEAF, issuer=CA.encode(), ocsp=RESPONSE * 40)
    commands = tls.runtime_commands({A: full}, {A: renewed}, PATHS)
    assert [c.split(" <<")[0] for c in commands] == [
        f"set ssl cert {A}",  # HAProxy starts again from the PEM alone
        f"set ssl cert {A}.issuer",
        f"set ssl cert {A}.ocsp",
        f"commit ssl cert {A}",
    ]
    ocsp = commands[2].split("<<\n", 1)[1]
    assert base64.b64decode(ocsp) == RESPONSE * 40 and "\n\n" not in ocsp
    # a response that went: the PEM alone, which drops it
    assert tls.runtime_commands({A: full}, {A: Cert(LEAF)}, PATHS) == [
        f"set ssl cert {A} <<\n{LEAF.rstrip()}\n",
        f"commit ssl cert {A}",
    ]
    same = Cert(LEAF + "\n", CA.encode(), RESPONSE)  # another blank line: no change
    assert tls.runtime_commands({A: full}, {A: same}, PATHS) == []


# --- the store: a refused response never takes its certificate down -----------------------


@pytest.fixture
def beside(edge, openssl_ocsp):
    """(cert_dir, store) where a.pem is LEAF with RESPONSE and CA beside it, listed."""
    certs, store = edge
    (certs / "a.pem").write_text(LEAF)
    (certs / "a.pem.ocsp").write_bytes(RESPONSE)
    (certs / "a.pem.issuer").write_text(CA)
    store.refresh()
    return certs, store


def test_a_refused_response_keeps_the_last_good_one(beside, caplog):
    certs, store = beside
    full = Cert(LEAF, CA.encode(), RESPONSE)
    assert store.kept == {store.paths.copies / "a.pem": full}
    (certs / "a.pem.ocsp").write_bytes(b"half")  # the updater caught mid-write
    with caplog.at_level(logging.ERROR):
        store.refresh()
    assert store.kept == {store.paths.copies / "a.pem": full}
    refusal = [r for r in caplog.records if r.getMessage() == "certificate_refused"][-1]
    fields = refusal.smartstack_fields  # type: ignore[attr-defined]
    assert fields["file"] == str(certs / "a.pem.ocsp") and fields["serving"] == "the last good copy"
    # a new PEM with it: served without it
    (certs / "a.pem").write_text(pem("leaf2"))
    store.refresh()
    assert store.kept == {store.paths.copies / "a.pem": Cert(pem("leaf2"))}
    # a restarted synapse reads the copy's files back
    (certs / "a.pem").write_text(LEAF)
    (certs / "a.pem.ocsp").write_bytes(RESPONSE)
    store.refresh()
    assert CertStore(store.config, store.paths).kept == {store.paths.copies / "a.pem": full}


async def test_a_response_haproxy_refuses_is_dropped_not_the_certificate(beside, monkeypatch):
    certs, store = beside
    copy = store.paths.copies / "a.pem"
    haproxy = FakeHAProxy(refuse=base64.encodebytes(b"renewed").decode().strip())
    watcher = CertWatcher(store, haproxy.send, dict(store.kept))
    (certs / "a.pem").write_text(pem("leaf2"))  # a renewal HAProxy takes only bare
    (certs / "a.pem.ocsp").write_bytes(b"renewed")
    (certs / "a.pem.issuer").write_text(CA)
    monkeypatch.setattr(extracheck, "ocsp_complaint", lambda *args: None)  # fit, for openssl
    assert await watcher.check_once() == []
    assert haproxy.commands[-1] == f"abort ssl cert {copy}"
    assert await watcher.check_once() == [copy]  # the next scan: the PEM alone
    assert watcher.served == {copy: Cert(pem("leaf2"))}
    assert names(store.paths.copies) == ["a.pem"]
