"""``not_here``: binds on an address this host does not have, found by a test bind
(EADDRNOTAVAIL) before HAProxy is asked, so their service is left out (``port_taken``) and
looked at again until the address is here (a VIP keepalived adds later). The test bind is
injected: no socket here."""

from __future__ import annotations

import errno
from typing import Any

from synapse.config import SynapseConfig
from synapse.haproxy import not_here
from synapse.haproxy.isolation import culprits
from synapse.haproxy.managed import PortsTaken
from synapse.haproxy.ports import NOT_HERE, TAKEN, Clash, clash_lines, waits

TEXT = """frontend web
    bind 192.0.2.1:80
frontend api
    bind 127.0.0.1:81
frontend free
    bind 192.0.2.2:82 transparent
    bind 192.0.2.3:83 namespace edge
    bind 192.0.2.4:89 interface vrf-blue
    bind :84
    bind [::]:85
    bind *:86
    bind unix@/run/x.sock
    bind abns@x
frontend both
    bind 192.0.2.1:87,127.0.0.1:88
"""


class Host:
    """The addresses "on this host": a bind to any other fails as the kernel's would."""

    def __init__(self, *here: str) -> None:
        self.here, self.tried = set(here), []

    def bind(self, ip: str) -> None:
        self.tried.append(ip)
        if ip not in self.here:
            raise OSError(errno.EADDRNOTAVAIL, "Cannot assign requested address")


def missing(host: Host, text: str = TEXT, nonlocal_bind: bool = False, listening=()) -> list:
    return not_here.missing(text, host.bind, lambda _v: nonlocal_bind, lambda: listening)


def test_a_bind_on_an_address_not_here_is_a_clash_and_no_longer_once_it_is_here() -> None:
    host = Host("127.0.0.1")
    found = missing(host)
    assert [(c.address, c.port, c.missing) for c in found] == [
        ("192.0.2.1:80", 80, "192.0.2.1"),
        ("192.0.2.1:87", 87, "192.0.2.1"),
    ]
    assert all(c.why == NOT_HERE and waits(f"x: {c.why}: {c}") for c in found)
    assert "192.0.2.1:80" in str(found[0]) and "192.0.2.1 is on an interface" in str(found[0])
    assert host.tried.count("192.0.2.1") == 1  # one test bind per address, not per line
    host.here.add("192.0.2.1")  # keepalived added the VIP: the recheck finds nothing
    assert missing(host) == []


def test_wildcards_transparent_other_namespaces_and_nonlocal_bind_are_never_flagged() -> None:
    """(review s31: a `namespace` bind's address is in that namespace, not ours: it was
    left out for ever, and in an extra section it kept HAProxy from starting)"""
    host = Host()
    found = {c.missing for c in missing(host)}
    assert found == {"192.0.2.1", "127.0.0.1"}
    assert sorted(host.tried) == ["127.0.0.1", "192.0.2.1"]  # (no test bind of the others)
    assert missing(Host(), nonlocal_bind=True) == []  # net.ipv4.ip_nonlocal_bind = 1


def test_other_bind_errors_are_left_to_haproxy() -> None:
    def refused(_ip: str) -> None:
        raise OSError(errno.EACCES, "Permission denied")

    assert not_here.missing(TEXT, refused, lambda _v: False, lambda: ()) == []


def test_an_address_our_haproxy_listens_on_already_is_not_flagged() -> None:
    """Removed since HAProxy bound it: a reload hands the socket over, nothing is bound."""
    found = missing(Host("127.0.0.1"), listening=[("192.0.2.1", 80, "1")])
    assert [c.port for c in found] == [87]


def test_the_clash_line_names_the_service_and_the_refusal_says_why() -> None:
    [web, both] = missing(Host("127.0.0.1"))
    [(number, _)] = clash_lines(TEXT, [web])
    error = f"[ALERT] : [/run/h.cfg.candidate:{number}] : {web.why}: {web}"
    assert culprits(error, "/run/h.cfg.candidate", TEXT, [_service("web")]) == {"web"}
    taken = Clash("127.0.0.1:81", 81, ("pid 7 (nginx)",), (7,))
    message = str(PortsTaken([web, taken, both]))
    assert message.startswith(f"{NOT_HERE}: 192.0.2.1:80 ")
    assert f"; {TAKEN}: port 81" in message and "192.0.2.1:87" in message


def _service(name: str) -> Any:
    from haproxy_helpers import server, service

    return service(name, [server("10.0.0.1", 80)])


def _config(**services: dict[str, Any]) -> SynapseConfig:
    return SynapseConfig.model_validate(
        {
            "services": {
                name: {"discovery": {"method": "base"}, "haproxy": block}
                for name, block in services.items()
            },
            "haproxy": {
                "config_file_path": "/tmp/x.cfg",
                "bind_address": "127.0.0.1",
                "managed": {"stats": {"bind": "192.0.2.9:9000"}},
            },
            "admin": {"port": None},
        }
    )


def test_check_notes_name_the_key_and_what_a_start_does() -> None:
    config = _config(
        web={"port": 8080, "bind_address": "192.0.2.1"},
        api={"port": 8081},  # the top-level bind_address: here
        vip={"port": 8082, "bind_address": "192.0.2.5", "bind_options": "transparent"},
        side={"listen": ["bind 192.0.2.7:9001", "mode http"]},
    )
    notes = not_here.config_notes(config, Host("127.0.0.1").bind, lambda _v: False)
    by_key = {note.partition(":")[0]: note for note in notes}
    assert set(by_key) == {
        "services.web.haproxy.bind_address",
        "services.side.haproxy.listen",
        "haproxy.managed.stats.bind",
    }
    web = by_key["services.web.haproxy.bind_address"]
    assert "192.0.2.1 is not an address on this host" in web
    assert "leaves service web out of HAProxy" in web and "no SIGHUP needed" in web
    assert "does not start HAProxy" in by_key["haproxy.managed.stats.bind"]
    assert not_here.config_notes(config, Host().bind, lambda _v: True) == []


def test_a_name_with_one_address_here_is_not_flagged(monkeypatch) -> None:
    """HAProxy binds one address of a name (localhost: 127.0.0.1 or ::1)."""
    real = not_here.ports.resolve
    names = {"lb": {"::1", "127.0.0.1"}, "vip": {"192.0.2.1", "2001:db8::1"}}
    monkeypatch.setattr(not_here.ports, "resolve", lambda host: names.get(host) or real(host))
    text = "frontend a\n    bind lb:80\nfrontend b\n    bind vip:81\n"
    assert [c.missing for c in missing(Host("127.0.0.1"), text)] == ["192.0.2.1"]
