"""The default layout written without jinja2 (synapse/haproxy/default_layout.py) is the
packaged template (templates/haproxy.cfg.j2) rendered with jinja2, byte for byte: every
config below is rendered both ways and compared, text, pieces and parsed blocks. A change
to either side alone fails here."""

from __future__ import annotations

from pathlib import Path

import pytest
from haproxy_helpers import haproxy_config, server, service

from synapse.config import HAProxyConfig, ServiceConfig
from synapse.haproxy import default_layout
from synapse.haproxy.configtext import parse_blocks, parse_config
from synapse.haproxy.render import Renderer
from synapse.haproxy.specs import ServerSpec, ServerTraits
from synapse.haproxy.template_file import load_template
from synapse.model import DesiredService

A = server("10.0.0.1", 8080, "a")
B = server("10.0.0.2", 8080, "b", weight=3, registry_options="maxconn 10")
C = server("2001:db8::3", 80, None)
D = server("db.example.com", 5432, "d")
MANY = [server(f"10.1.{i // 250}.{i % 250}", 8000 + i % 7, f"m{i}") for i in range(200)]
ODD = [  # lines the parser normalises: the default layout must then parse, as jinja's does
    "http-request set-header X-A  two  spaces",
    "acl trailing path /x  ",
    "\tacl tabbed path /t",
    "http-request deny if { path /#frag }  # a comment",
    "",
    "acl nbsp\xa0path /n",
]


def zoned() -> DesiredService:
    config = ServiceConfig.model_validate(
        {
            "discovery": {"method": "base"},
            "haproxy": {"port": 3010, "frontend": ["mode http"], "backend": ["mode http"]},
            "zone_routing": {
                "zones": ["az1", "az2"],
                "sticky": "SRVZONE",
                "header": "X-Zone",
                "zone_of_address": {"127.0.0.2": "az2"},
            },
        }
    )
    return DesiredService("zoned", config, [A, B], zones=("az1", "az2"))


def cases(tmp: Path) -> dict[str, tuple[HAProxyConfig, list[DesiredService]]]:
    shared = ["bind 127.0.0.1:8080", "mode http"]
    return {
        "frontend, backend-only, no port": (
            haproxy_config(),
            [
                service("web", [A, B], server_options="check inter 2s"),
                service("api", [C], backend_only=True, backend=["balance leastconn"]),
                service("noport", [A], port=None, bind_options="accept-proxy"),
            ],
        ),
        "no services": (haproxy_config(), []),
        "no servers, many servers, disabled": (
            haproxy_config(bind_address="0.0.0.0"),
            [
                service("empty", []),
                service("many", MANY, backend_order="asc", listen=["mode http", "option httpchk"]),
                service("off", [A], disabled=True),
                service(
                    "dns",
                    [D],
                    backend_name="dns_backend",
                    cookie_value_method="hash",
                    listen=["mode http", "cookie SRV insert"],
                ),
            ],
        ),
        "extra sections and the stats page": (
            haproxy_config(
                extra_sections={
                    "listen extra": ["bind 127.0.0.1:9001", "mode http"],
                    "userlist admins": [],
                },
                managed={"stats": {}},
                config_file_path=str(tmp / "h.cfg"),
                reload_command=None,
            ),
            [service("web", [A])],
        ),
        "shared frontend, edge routes": (
            haproxy_config(shared_frontend=shared),
            [
                service(
                    "web",
                    [A],
                    backend_only=True,
                    routes={"hosts": ["a.example"]},
                    listen=["mode http"],
                ),
                service("api", [B], port=None, shared_frontend=["acl is_api path_beg /api"]),
            ],
        ),
        "shared frontend set empty": (haproxy_config(shared_frontend=[]), [service("w", [A])]),
        "zones": (haproxy_config(), [zoned()]),
        "odd option strings": (
            haproxy_config(**{"global": ["maxconn  256 ", "log stdout\tformat raw"]}),
            [
                service(
                    "odd", [A, B], frontend=ODD, backend=ODD, server_options="check  inter 2s  "
                ),
                service("static", [A], backend=["server fixed 10.9.9.9:80 check", "server"]),
            ],
        ),
    }


CASES = list(cases(Path("/nowhere")))  # (only the names: built again per test)


@pytest.mark.parametrize("case", CASES)
def test_the_default_layout_is_the_packaged_template(case: str, tmp_path: Path) -> None:
    config, services = cases(tmp_path)[case]
    emitted = Renderer(config)
    templated = Renderer(config, template_text=load_template(config))
    assert emitted.composable and templated.composable
    ours, theirs = emitted.render(services), templated.render(services)
    assert ours.parts == theirs.parts  # head, each service, tail: the same text
    assert ours.text == theirs.text
    assert ours.parsed == theirs.parsed == parse_config(ours.text)
    assert ours.backends == theirs.backends and ours.warnings == theirs.warnings
    assert ours.text.startswith(default_layout.HEADER)


def _spec(tail: str) -> ServerSpec:
    return ServerSpec(
        "b", "s1", "10.0.0.1", 80, 7, None, tail, ServerTraits("", 1, True, False, None, ("", ""))
    )


def _context(**fields: object) -> dict[str, object]:
    spec = _spec("check")
    base = {"name": "web", "frontend": ["mode http"], "bind": "127.0.0.1:1",
            "backend_name": "b", "backend": ["balance roundrobin"], "servers": [spec]}  # fmt: skip
    return base | fields


@pytest.mark.parametrize(
    ("fields", "built"),
    [
        ({}, True),
        ({"frontend": None, "servers": []}, True),
        ({"backend": ["acl a  b"]}, False),  # two spaces: parsed
        ({"backend": ["acl a # c"]}, False),
        ({"frontend": ["mode\thttp"]}, False),
        ({"backend": [""]}, False),
        ({"backend": ["server x 1.1.1.1:1"]}, False),  # a static server line
        ({"backend_name": "b c"}, False),
        ({"name": "a\u2028b"}, False),  # a line separator splitlines() breaks on
        ({"servers": [_spec(" check")]}, False),
        ({"backend": [" acl leading"]}, False),
        ({"frontend": ["mode http "]}, False),
        ({"backend": ["acl a\nlisten x"]}, False),  # a newline inside: another header
        ({"backend": ["acl a\n    server x 1.1.1.1:1"]}, False),  # ... or a server line
        ({"backend": ["acl \x1f unit separator"]}, False),
        ({"servers": [_spec("check ")]}, True),  # (the line is stripped: canonical)
        ({"servers": [_spec("cookie c check")]}, False),  # (the parser reads a cookie)
        ({"servers": [_spec("id 9 check")]}, True),  # (after `id 7`: options, not the id)
    ],
)
def test_blocks_are_built_only_from_canonical_text_and_equal_the_parse(
    fields: dict[str, object], built: bool
) -> None:
    text, blocks = default_layout.service(_context(**fields))
    assert (blocks is not None) == built
    assert default_layout.service_blocks(_context(**fields)) == (text, tuple(parse_blocks(text)))


def test_a_broken_operator_template_raises_what_the_controller_catches(tmp_path: Path) -> None:
    """The controller and the bridge catch ``Renderer.errors``: jinja2's errors only with a
    template (so that without one jinja2 is never imported)."""
    template = tmp_path / "t.j2"
    template.write_text("global\n    maxconn {{ nope }}\n")
    renderer = Renderer(haproxy_config(template=str(template)))
    with pytest.raises(renderer.errors) as caught:
        renderer.render([service("web", [A])])
    assert type(caught.value).__module__.startswith("jinja2") and "nope" in str(caught.value)
    assert Renderer(haproxy_config()).errors == (OSError,)
