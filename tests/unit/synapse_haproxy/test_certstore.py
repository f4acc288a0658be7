"""The edge's certificates (pure parts): runtime payloads, which copies stay listed, the
certificate dates, which files a scan takes; the store and the watcher with openssl and
HAProxy stood in for."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from pathlib import Path

import pytest

from synapse.edge_config import HAProxyTLS
from synapse.haproxy import tls
from synapse.haproxy.certstore import CertStore, plan
from synapse.haproxy.certwatch import CertWatcher
from synapse.haproxy.pemcheck import parse_dates, validity_problem

PATHS = tls.tls_paths(Path("/run/edge/haproxy.cfg"))
A, B, C = (PATHS.copies / f"{n}.pem" for n in "abc")


def test_runtime_payloads_carry_no_empty_line():
    # `cat cert.pem; echo; cat key.pem`, CRLF, a line of spaces: HAProxy ends a `<<`
    # payload at the first empty line, so none may be inside it.
    pem = "CERT\r\n\r\nKEY\r\n   \n"
    commands = tls.runtime_commands({}, {A: tls.Cert(pem)}, PATHS)
    assert commands[1] == f"set ssl cert {A} <<\nCERT\nKEY\n"
    assert [c for c in commands if "\n\n" in c] == []
    # the same PEM with other blank lines is no change
    assert tls.runtime_commands({A: tls.Cert("CERT\nKEY\n")}, {A: tls.Cert(pem)}, PATHS) == []


def test_normalised_pems_have_no_empty_lines():
    assert tls.normalised("A\n\nB  \r\n\n") == "A\nB\n"
    assert tls.normalised("") == ""


def test_a_refused_file_keeps_its_last_good_copy():
    got = plan({A: "A2"}, refused={B}, kept={A: "A1", B: "B1"}, absent_since={}, now=10.0)
    assert got.wanted == {A: "A2", B: "B1"} and got.absent == {} and not got.empty
    # refused and never listed: not listed now either
    assert plan({A: "A2"}, {C}, {A: "A1"}, {}, 10.0).wanted == {A: "A2"}


def test_a_missing_file_is_removed_only_once_missing_for_the_grace():
    kept = {A: "A1", B: "B1"}
    first = plan({A: "A1"}, set(), kept, {}, now=10.0, grace=0.9)
    assert first.wanted == kept and first.absent == {B: 10.0}
    # the reload's second scan (install after the check) right after: still kept
    again = plan({A: "A1"}, set(), kept, first.absent, now=10.05, grace=0.9)
    assert again.wanted == kept and again.absent == {B: 10.0}
    gone = plan({A: "A1"}, set(), kept, again.absent, now=11.0, grace=0.9)
    assert gone.wanted == {A: "A1"} and gone.absent == {}
    # back before the grace: the count starts again
    back = plan({A: "A1", B: "B1"}, set(), kept, first.absent, now=10.5, grace=0.9)
    assert back.wanted == kept and back.absent == {}


def test_an_empty_or_missing_directory_removes_nothing():
    kept = {A: "A1", B: "B1"}
    empty = plan({}, set(), kept, {B: 10.0}, now=99.0)
    assert empty.wanted == kept and empty.empty and empty.absent == {B: 10.0}
    # nothing served: an empty directory is just empty (the placeholder answers)
    assert not plan({}, set(), {}, {}, 99.0).empty
    # a directory holding only refused files is not empty: the rule per file applies
    assert plan({}, {A}, kept, {}, 99.0).wanted == kept


def test_certificate_dates():
    before, after = parse_dates(
        "-----BEGIN PUBLIC KEY-----\nxx\n-----END PUBLIC KEY-----\n"
        "notBefore=Dec  1 20:56:30 2026 GMT\nnotAfter=Jan 31 00:00:00 2027 GMT\n"
    )
    assert before == datetime(2026, 12, 1, 20, 56, 30, tzinfo=UTC)
    assert after == datetime(2027, 1, 31, tzinfo=UTC)
    assert validity_problem(before, after, datetime(2027, 1, 1, tzinfo=UTC)) is None
    expired = validity_problem(before, after, datetime(2027, 2, 1, tzinfo=UTC))
    assert expired == "the certificate expired on 2027-01-31 00:00:00 UTC"
    early = validity_problem(before, after, datetime(2026, 12, 1, tzinfo=UTC))
    assert early == "the certificate is not valid before 2026-12-01 20:56:30 UTC"
    with pytest.raises(ValueError):
        parse_dates("notBefore=Dec  1 20:56:30 2026 GMT\n")


def test_the_scan_takes_visible_pem_files_only(tmp_path):
    for name in ("a.pem", ".ansible_tmp12ab.pem", ".a.pem.swp", "a.pem~", "b.crt", "c.pem"):
        (tmp_path / name).write_text("x")
    (tmp_path / "d.pem").mkdir()
    (tmp_path / "e.pem").symlink_to(tmp_path / "c.pem")  # a link to a file is a file
    (tmp_path / "f.pem").symlink_to(tmp_path / "missing")
    assert [p.name for p in tls.candidates(tmp_path)] == ["a.pem", "c.pem", "e.pem"]
    assert tls.candidates(tmp_path / "gone") == []


# --- the store and the watcher, openssl and HAProxy stood in for -------------------------


def pem(tag: str) -> str:
    return f"-----BEGIN CERTIFICATE-----\nGOOD {tag}\n-----END CERTIFICATE-----\n"


@pytest.fixture
def edge(tmp_path, monkeypatch):
    """(cert_dir, store) on tmp_path: a PEM is good when it says GOOD."""
    monkeypatch.setattr(
        tls, "checked_problem", lambda text, now=None: None if "GOOD" in text else "broken"
    )
    monkeypatch.setattr(tls, "is_checked", lambda text: True)  # (the stand-in is instant)
    monkeypatch.setattr(tls, "make_placeholder", lambda path: path.write_text(pem("placeholder")))
    certs = tmp_path / "certs"
    certs.mkdir()
    paths = tls.tls_paths(tmp_path / "run" / "haproxy.cfg")
    (tmp_path / "run").mkdir()
    return certs, CertStore(HAProxyTLS(cert_dir=str(certs)), paths)


class FakeHAProxy:
    def __init__(self, refuse: str = "\x00") -> None:
        self.refuse = refuse  # a payload holding this is refused
        self.commands: list[str] = []

    async def send(self, command: str) -> str:
        self.commands.append(command)
        return "error: unsupported" if self.refuse in command else "ok"


def listed(store: CertStore) -> list[str]:
    return [Path(p).name for p in store.paths.crt_list.read_text().split()]


def test_the_reload_path_keeps_the_last_good_copy(edge):
    certs, store = edge
    (certs / "a.pem").write_text(pem("a1"))
    (certs / "b.pem").write_text(pem("b1"))
    store.refresh()
    assert listed(store) == ["haproxy.placeholder.pem", "a.pem", "b.pem"]
    (certs / "a.pem").write_text("-----BEGIN CERTIFICATE-----\nhalf")  # broken now
    store.refresh()  # a reload for another reason
    assert listed(store) == ["haproxy.placeholder.pem", "a.pem", "b.pem"]
    assert (store.paths.copies / "a.pem").read_text() == pem("a1")
    # a restarted synapse: a new store starts from the copies the crt-list names
    again = CertStore(store.config, store.paths)
    again.refresh()
    assert (store.paths.copies / "a.pem").read_text() == pem("a1")
    # gone from cert_dir: its copy goes after the grace
    (certs / "a.pem").unlink()
    again.clock = lambda: 100.0
    again.refresh()
    assert (store.paths.copies / "a.pem").exists()
    again.clock = lambda: 101.0
    again.refresh()
    assert listed(again) == ["haproxy.placeholder.pem", "b.pem"]
    assert sorted(p.name for p in store.paths.copies.iterdir()) == ["b.pem"]


async def test_a_certificate_haproxy_refuses_is_never_listed(edge, caplog):
    certs, store = edge
    (certs / "a.pem").write_text(pem("a1"))
    store.refresh()
    haproxy = FakeHAProxy(refuse="GOOD a2")
    watcher = CertWatcher(store, haproxy.send, dict(store.kept))
    (certs / "a.pem").write_text(pem("a2"))
    with caplog.at_level(logging.ERROR):
        assert await watcher.check_once() == []
    assert haproxy.commands[-1] == f"abort ssl cert {store.paths.copies / 'a.pem'}"
    refusal = [r for r in caplog.records if r.getMessage() == "certificate_refused"][-1]
    assert refusal.smartstack_fields["serving"] == "the last good copy"  # type: ignore[attr-defined]
    assert watcher.served == {store.paths.copies / "a.pem": tls.Cert(pem("a1"))}
    # the next reload does not list it either (HAProxy would refuse the whole config)
    store.refresh()
    assert (store.paths.copies / "a.pem").read_text() == pem("a1")
    # a new renewal is tried again
    (certs / "a.pem").write_text(pem("a3"))
    assert await watcher.check_once() == [store.paths.copies / "a.pem"]
    assert (store.paths.copies / "a.pem").read_text() == pem("a3")


async def test_an_emptied_directory_is_logged_once_per_streak(edge, caplog, tmp_path):
    certs, store = edge
    (certs / "a.pem").write_text(pem("a1"))
    store.refresh()
    haproxy = FakeHAProxy()
    watcher = CertWatcher(store, haproxy.send, dict(store.kept))
    (certs / "a.pem").unlink()
    with caplog.at_level(logging.WARNING):
        for _ in range(3):
            assert await watcher.check_once() == []
        certs.rename(tmp_path / "old")  # missing altogether: the same
        assert await watcher.check_once() == []
        certs.mkdir()
        (certs / "a.pem").write_text(pem("a2"))
        assert await watcher.check_once() == [store.paths.copies / "a.pem"]
        (certs / "a.pem").unlink()
        await watcher.check_once()
    empties = [r for r in caplog.records if r.getMessage() == "cert_dir_empty"]
    assert len(empties) == 2 and empties[0].smartstack_fields["kept"] == 1  # type: ignore[attr-defined]
    assert [c for c in haproxy.commands if c.startswith("del")] == []
    assert listed(store) == ["haproxy.placeholder.pem", "a.pem"]


async def test_adopted_certificates_are_replaced_new_first(edge, tmp_path):
    # An edge adopted from an older synapse serves cert_dir's own paths; the copies that
    # replace them are added before any old path is removed, wherever the paths sort
    # (removals first left every domain on the placeholder for ~10 ms per certificate).
    certs, store = edge
    for name in "ab":
        (certs / f"{name}.pem").write_text(pem(name))
    old = {tmp_path / "a-old" / f"{n}.pem": tls.Cert(pem(n)) for n in "ab"}  # sorts first
    haproxy = FakeHAProxy()
    watcher = CertWatcher(store, haproxy.send, old)
    assert sorted(await watcher.check_once()) == sorted([*old, *store.kept])
    verbs = [" ".join(c.split()[:2]) for c in haproxy.commands]
    assert "del ssl" in verbs and verbs.index("del ssl") > max(
        i for i, verb in enumerate(verbs) if verb in ("add ssl", "commit ssl")
    )
    assert watcher.served == store.kept


async def test_a_reload_does_not_wait_for_a_whole_renewal_batch(edge):
    # A wildcard renewal of 300 PEMs took the watcher 14-28 s of runtime commands, all
    # under the store's lock: a SIGHUP adding a service waited for all of them. The batch
    # now yields between certificates; the reload loads the rest from the copies.
    certs, store = edge
    names = [f"h{i:02}" for i in range(30)]
    for name in names:
        (certs / f"{name}.pem").write_text(pem(f"{name}-1"))
    store.refresh()
    haproxy = FakeHAProxy()

    async def slow_send(command: str) -> str:
        await asyncio.sleep(0.005)
        return await haproxy.send(command)

    watcher = CertWatcher(store, slow_send, dict(store.kept))
    for name in names:
        (certs / f"{name}.pem").write_text(pem(f"{name}-2"))
    batch = asyncio.create_task(watcher.check_once())
    while not haproxy.commands:
        await asyncio.sleep(0.001)
    await store.refresh_for_reload()
    commits = sum(c.startswith("commit") for c in haproxy.commands)
    assert commits < 5, f"the reload waited for {commits} of 30 certificates"
    assert (store.paths.copies / "h29.pem").read_text() == pem("h29-2")  # what it loads
    assert len(await batch) == commits


async def test_a_transaction_answer_is_not_a_refusal(edge):
    # A reload between `set` and `commit`: the commit reaches the new HAProxy, which says
    # "No ongoing transaction". That refused the renewed certificate for good (never
    # listed for a reload, never sent again): it served the old one until it expired.
    certs, store = edge
    (certs / "a.pem").write_text(pem("a1"))
    (certs / "b.pem").write_text(pem("b1"))
    store.refresh()
    a, b = (store.paths.copies / f"{n}.pem" for n in "ab")
    answers = {
        f"commit ssl cert {a}": "No ongoing transaction! !\nCan't commit the certificate!\n",
        f"set ssl cert {b}": f"The ongoing transaction is about '{a}' but you are trying "
        f"to set '{b}'\nCan't update {b}!\n",
    }
    sent: list[str] = []

    async def send(command: str) -> str:
        sent.append(command)
        key = command.split(" <<")[0]
        return answers.pop(key, "ok")

    watcher = CertWatcher(store, send, dict(store.kept))
    (certs / "a.pem").write_text(pem("a2"))
    (certs / "b.pem").write_text(pem("b2"))
    assert await watcher.check_once() == []
    assert f"abort ssl cert {a}" in sent  # the one left open on another certificate
    assert await watcher.check_once() == [a, b]  # tried again: nothing was refused
    store.refresh()  # and a reload lists them
    assert a.read_text() == pem("a2") and b.read_text() == pem("b2")


def test_a_reload_leaves_renewals_openssl_has_not_checked_to_the_watcher(edge, monkeypatch, caplog):
    # openssl took 12-25 s for 300 renewed PEMs, all of it before the reload; a renewal
    # not checked yet keeps its last good copy through the reload, and the watcher
    # (which checks it outside the lock) sends it afterwards. A new domain is checked.
    certs, store = edge
    (certs / "a.pem").write_text(pem("a1"))
    store.refresh()
    checked: set[str] = set()
    monkeypatch.setattr(tls, "is_checked", lambda text: text in checked)
    (certs / "a.pem").write_text(pem("a2"))
    (certs / "b.pem").write_text(pem("b1"))
    with caplog.at_level(logging.ERROR):
        store.refresh(quick=True)
    assert listed(store) == ["haproxy.placeholder.pem", "a.pem", "b.pem"]
    assert (store.paths.copies / "a.pem").read_text() == pem("a1")
    assert [r for r in caplog.records if r.getMessage() == "certificate_refused"] == []
    checked.add(pem("a2"))  # the watcher's openssl check
    store.refresh(quick=True)
    assert (store.paths.copies / "a.pem").read_text() == pem("a2")
    checked.clear()
    (certs / "a.pem").write_text(pem("a3"))
    store.refresh()  # not a reload: checked now
    assert (store.paths.copies / "a.pem").read_text() == pem("a3")


async def test_the_watcher_restarts_from_what_the_reloaded_haproxy_read(edge, monkeypatch):
    # A renewed PEM openssl had not checked at the reload keeps its old copy in the files
    # the new HAProxy reads; the old watcher, still running during the reload, then sends
    # the new one to the OLD process and writes the new copy. Restarted from the copies on
    # disk, the new watcher thought the new one served: the new HAProxy kept the old
    # certificate until the file changed again (scen_e.py: 1 round in 8, no log line).
    from synapse.haproxy import certwatch, edge_sync

    certs, store = edge
    (certs / "a.pem").write_text(pem("a1"))
    store.refresh()
    a = store.paths.copies / "a.pem"
    monkeypatch.setattr(tls, "is_checked", lambda text: "a2" not in text)  # a2: not yet
    sync = object.__new__(edge_sync.EdgeSync)  # (only its certificate half)
    sync.routes = sync.zones = type(
        "Files", (), {"write_wanted": lambda s: None, "invalidate": lambda s: None}
    )()
    sync.certs, sync.runtime, sync.cert_interval = store, [object()], 1.0
    sync._watcher, sync._listed = None, None
    started: list[certwatch.CertWatcher] = []
    monkeypatch.setattr(
        edge_sync.EdgeSync,
        "_start_watcher",
        lambda self, served: started.append(CertWatcher(store, None, served)),
    )
    old = CertWatcher(store, FakeHAProxy().send, dict(store.kept))
    (certs / "a.pem").write_text(pem("a2"))
    await sync.before_read()
    assert a.read_text() == pem("a1")  # what the new HAProxy reads: the last good copy
    monkeypatch.setattr(tls, "is_checked", lambda text: True)
    assert await old.check_once() == [a]  # the old watcher, to the old process
    assert a.read_text() == pem("a2")
    await sync.started()
    assert started[0].served[a].pem == pem("a1")  # so the new watcher sends a2 again
