"""Ruby synapse's default servers are whole backends: their ``haproxy_server_options`` and
(with ``use_nerve_weights``) ``weight`` reach their server lines (haproxy.rb
generate_backend_stanza), e.g. a sorry server kept beside the discovered ones as ``backup``."""

from __future__ import annotations

from typing import Any

import pytest

from smartstack.record import Registration
from synapse.config import ServiceConfig
from synapse.model import Found
from synapse.selection import select_servers

SORRY = {"name": "sorry", "host": "127.0.0.9", "port": 9000, "haproxy_server_options": "backup"}


def service(**extra: Any) -> ServiceConfig:
    doc: dict[str, Any] = {"discovery": {"method": "zookeeper", "hosts": ["h:1"], "path": "/s"}}
    doc.update(extra)
    return ServiceConfig.model_validate(doc)


def app() -> Found:
    return Found(Registration(host="10.0.0.1", port=80, name="a"), "zk:/s/a_1")


def test_a_kept_default_server_keeps_its_haproxy_server_options() -> None:
    cfg = service(default_servers=[SORRY], keep_default_servers=True)
    sel = select_servers(cfg, [app()], None)
    options = {s.name: s.registry_options for s in sel.servers}
    assert options == {"a_10.0.0.1:80": "", "sorry_127.0.0.9:9000": "backup"}


def test_default_servers_alone_keep_their_options_and_nerve_weights() -> None:
    entry = {**SORRY, "haproxy_server_options": "maxconn 10", "weight": 5}
    weighted = service(default_servers=[entry], haproxy={"use_nerve_weights": True})
    [server] = select_servers(weighted, [], None).servers
    assert (server.registry_options, server.weight) == ("maxconn 10", 5)
    [server] = select_servers(service(default_servers=[entry]), [], None).servers
    assert server.weight is None  # (without use_nerve_weights, as Ruby)


@pytest.mark.parametrize("options", ["backup\nlisten evil", "backup # x"])
def test_default_server_options_that_cannot_be_one_line_are_refused(options: str) -> None:
    with pytest.raises(ValueError, match=r"default_servers.0.haproxy_server_options\n.*a control"):
        service(default_servers=[{**SORRY, "haproxy_server_options": options}])


@pytest.mark.parametrize(
    "weight, used", [(500, 256), (256, 256), (0, 0), (True, None), ("7", None), (-1, None)]
)
def test_a_default_server_weight_is_taken_as_a_records_not_a_refused_file(
    weight: Any, used: int | None
) -> None:
    # Ruby synapse ignores a default server's weight without use_nerve_weights (and any that
    # is not an Integer): `weight: 500` loaded there, and here before 6777ca7 (unknown key).
    # Refusing it refused the whole file (review cr36-airbnb); a record's 500 is served as 256.
    entry = {**SORRY, "weight": weight}
    weighted = service(default_servers=[entry], haproxy={"use_nerve_weights": True})
    [server] = select_servers(weighted, [], None).servers
    assert server.weight == used
