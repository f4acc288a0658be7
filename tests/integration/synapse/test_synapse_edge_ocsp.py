"""OCSP stapling through a real synapse and its managed HAProxy: the ``<pem>.ocsp`` and
``<pem>.issuer`` beside a PEM of cert_dir go with synapse's copy (HAProxy loads them from
beside the file the crt-list names), a renewed or removed response changes at runtime, and
a response HAProxy would not staple (or would refuse the config for) is refused by name
while its certificate keeps serving."""

from __future__ import annotations

import signal
from pathlib import Path

from synapse_e2e import wait
from test_synapse_edge_tls import copy_of, edge_synapse, routed, served_dir, serves_within
from tls_peer import served_cert, stapled, subject_cn

from testbed.process import free_port
from testbed.tls import make_ocsp_response


def staples(port: int, name: str, wanted: str | None, what: str) -> None:
    wait(lambda: stapled(port, f"{name}.example.test") == wanted, 5, what)


def refusals(log: str, file: Path) -> list[str]:
    return [x for x in log.splitlines() if "certificate_refused" in x and str(file) in x]


def test_ocsp_responses_are_stapled_renewed_and_removed_at_runtime(tmp_path, http_backend_factory):
    pki, certs = served_dir(tmp_path, "a")  # the PEM's chain does not hold the CA
    make_ocsp_response(pki, "a", certs / "a.pem.ocsp")
    (certs / "a.pem.issuer").write_text((pki / "ca.pem").read_text())
    tls_port = free_port()
    with edge_synapse(certs, {"a": http_backend_factory("a").port}, tls_port) as syn:
        first = stapled(tls_port, "a.example.test")
        assert first is not None and first.startswith("good"), syn.log()
        for suffix in ("", ".ocsp", ".issuer"):  # beside the copy the crt-list names
            copy = copy_of(syn, "a").with_name(f"a.pem{suffix}")
            assert copy.read_bytes() == (certs / f"a.pem{suffix}").read_bytes()
            assert copy.stat().st_mode & 0o777 == 0o600
        workers, reloads = syn.workers(), syn.status()["haproxy"]["reloads"]

        # the OCSP updater's next response (written beside, renamed into place)
        make_ocsp_response(pki, "a", certs / "a.ocsp.tmp", minutes=60)
        (certs / "a.ocsp.tmp").rename(certs / "a.pem.ocsp")
        wait(lambda: stapled(tls_port, "a.example.test") not in (first, None), 5, "renewed")
        renewed = (certs / "a.pem.ocsp").read_bytes()  # ... and beside the copy right after
        wait(lambda: copy_of(syn, "a").with_name("a.pem.ocsp").read_bytes() == renewed, 2)

        # stapling stopped: the response goes at runtime and from beside the copy
        (certs / "a.pem.ocsp").unlink()
        staples(tls_port, "a", None, "the staple gone")
        assert subject_cn(served_cert(tls_port, "a.example.test", tmp_path)) == "a.example.test"
        copies = copy_of(syn, "a").parent
        wait(lambda: sorted(p.name for p in copies.iterdir()) == ["a.pem"], 2, "copy's files")
        assert syn.workers() == workers
        assert syn.status()["haproxy"]["reloads"] == reloads


def test_a_response_haproxy_would_not_use_never_takes_its_certificate_down(
    tmp_path, http_backend_factory
):
    pki, certs = served_dir(tmp_path, "abc")
    make_ocsp_response(pki, "a", certs / "a.pem.ocsp")
    (certs / "a.pem.issuer").write_text((pki / "ca.pem").read_text())
    # no issuer anywhere: HAProxy refuses a config whose crt has this beside it
    make_ocsp_response(pki, "b", certs / "b.pem.ocsp")
    (certs / "c.pem.sctl").write_bytes(b"\x00\x05\x00\x03abc")  # HAProxy 2.6 aborts on exit
    ports = {name: http_backend_factory(name).port for name in "abcd"}
    tls_port = free_port()
    with edge_synapse(certs, {n: ports[n] for n in "abc"}, tls_port) as syn:
        good = stapled(tls_port, "a.example.test")
        assert good is not None, syn.log()
        for name in "bc":  # served, without what would not load
            serves_within(tls_port, f"{name}.example.test", f"{name}.example.test", tmp_path, 5)
            assert stapled(tls_port, f"{name}.example.test") is None
        [line] = refusals(syn.log(300), certs / "b.pem.ocsp")
        assert "no issuer" in line and "the certificate without it" in line
        ignored = [x for x in syn.log(300).splitlines() if "certificate_file_ignored" in x]
        assert len(ignored) == 1 and str(certs / "c.pem.sctl") in ignored[0]
        names = sorted(p.name for p in copy_of(syn, "a").parent.iterdir())
        assert names == ["a.pem", "a.pem.issuer", "a.pem.ocsp", "b.pem", "c.pem"]

        # b's response put beside a (the wrong certificate): refused, a keeps its last good
        (certs / "a.pem.ocsp").write_bytes((certs / "b.pem.ocsp").read_bytes())
        wait(lambda: refusals(syn.log(300), certs / "a.pem.ocsp"), 10, f"refusal\n{syn.log()}")
        [line] = refusals(syn.log(300), certs / "a.pem.ocsp")
        assert "for another certificate" in line and "the last good copy" in line
        # a reload for another reason reads the copies: HAProxy takes them (a .sctl or b's
        # .ocsp beside a copy would fail its check), and a keeps its last good staple
        workers = syn.workers()
        syn.config["services"]["d"] = routed("d", ports["d"])
        syn.write_config()
        syn.signal(signal.SIGHUP)
        wait(lambda: syn.workers() != workers, 20, f"the reload\n{syn.log()}")
        assert stapled(tls_port, "a.example.test") == good
        assert stapled(tls_port, "b.example.test") is None
