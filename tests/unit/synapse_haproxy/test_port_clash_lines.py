"""``clash_lines``: which ``bind`` lines (numbered as isolation numbers a candidate) hold a
port another process listens on, so that the services whose sections hold them are left
out (``port_taken``) and not the whole config."""

from __future__ import annotations

from haproxy_helpers import server, service

from synapse.haproxy.isolation import culprits
from synapse.haproxy.ports import TAKEN, Clash, clash_lines

TEXT = """global
    maxconn 10
frontend web
    bind localhost:8080
frontend api
    bind 127.0.0.2:80,ipv4@127.0.0.3:81 accept-proxy
listen stats
    bind :9000
"""


def test_each_bind_line_holding_a_clash_is_numbered() -> None:
    api = Clash("ipv4@127.0.0.3:81", 81, ("pid 7 (nginx)",), (7,))
    stats = Clash(":9000", 9000, ("pid 8 (x)",), (8,))
    assert clash_lines(TEXT, [api, stats]) == [(6, api), (8, stats)]
    assert clash_lines(TEXT, [Clash("127.0.0.9:80", 80, ())]) == []


def test_a_clash_line_names_the_service_whose_section_holds_it() -> None:
    clash = Clash("localhost:8080", 8080, ("pid 7 (nginx)",), (7,))
    [(number, _)] = clash_lines(TEXT, [clash])
    error = f"[ALERT] : [/run/h.cfg.candidate:{number}] : {TAKEN}: {clash}"
    services = [service("web", [server("10.0.0.1", 80)]), service("api", [])]
    assert culprits(error, "/run/h.cfg.candidate", TEXT, services) == {"web"}
