"""review s34 (pure): a pasted no-break space in a raw HAProxy line is written as the space
meant (synapse/haproxy/plain_spaces.py). Before, ``option httpchk GET<NBSP>/health``
loaded and passed ``synapse -k``; HAProxy checked the URI ``GET<NBSP>/health``, every
server answered 400 and was down (50 of 50 requests 503)."""

from __future__ import annotations

from pathlib import Path

import pytest

from synapse.config import load_synapse_config
from synapse.haproxy.plain_spaces import plain_spaces

NBSP = "\u00a0"


@pytest.mark.parametrize(
    ("line", "expected", "names"),
    [
        (f"option httpchk GET{NBSP}/health", "option httpchk GET /health",
         ["U+00A0 NO-BREAK SPACE"]),
        ("timeout\u2009connect\u3000 5s", "timeout connect  5s",
         ["U+2009 THIN SPACE", "U+3000 IDEOGRAPHIC SPACE"]),
        ("\ufefftimeout server\u200b 5s", "timeout server 5s",
         ["U+FEFF ZERO WIDTH NO-BREAK SPACE", "U+200B ZERO WIDTH SPACE"]),
        # Quoted text is HAProxy's literal text: kept.
        (f'http-request set-header X-A "a{NBSP}b"{NBSP}if TRUE',
         'http-request set-header X-A "a\u00a0b" if TRUE', ["U+00A0 NO-BREAK SPACE"]),
        (f"errorfile 503 '/x{NBSP}y'", f"errorfile 503 '/x{NBSP}y'", []),
        (f'acl a path "\\"{NBSP}"', f'acl a path "\\"{NBSP}"', []),  # an escaped quote
        ("http-request set-header X-City Zürich", "http-request set-header X-City Zürich", []),
        ("mode http", "mode http", []),
    ],
)  # fmt: skip
def test_plain_spaces(line: str, expected: str, names: list[str]) -> None:
    assert plain_spaces(line) == (expected, names)


def test_config_lines_and_options_written_with_plain_spaces(tmp_path: Path) -> None:
    path = tmp_path / "synapse.yaml"
    path.write_text(
        f"""haproxy:
  do_writes: false
  do_reloads: false
  do_socket: false
  defaults: ["timeout{NBSP}connect 5s"]
  extra_sections: {{"listen{NBSP}stats": ["bind :3212"]}}
services:
  web:
    discovery: {{method: zookeeper, hosts: ["127.0.0.1:2181"], path: /nerve/web}}
    haproxy:
      port: 3301
      server_options: "check{NBSP}inter 2s"
      listen: ["option httpchk GET{NBSP}/health"]
""",
        encoding="utf-8",
    )
    config, warnings = load_synapse_config(path)
    haproxy, web = config.haproxy, config.services["web"].haproxy
    assert haproxy is not None and web is not None
    assert haproxy.defaults == ["timeout connect 5s"]
    assert list(haproxy.extra_sections) == ["listen stats"]
    assert web.server_options == "check inter 2s"
    assert web.listen == ["option httpchk GET /health"]
    spaces = [w for w in warnings if "NO-BREAK SPACE" in w]
    assert len(spaces) == 4
    assert f"{path}: services.web.haproxy.listen[0]: 'option httpchk GET\\xa0/health' has " in (
        "\n".join(spaces)
    )


def test_a_pattern_or_value_keeps_its_unicode_space(tmp_path: Path) -> None:
    # Before: `-m str Jean<NBSP>Dupont` became `-m str Jean Dupont`: with a real HAProxy 2.6,
    # 'Jean<NBSP>Dupont' 0 of 10 denied (was 10 of 10), 'Jean' 10 of 10 denied (was 0).
    deny = f"http-request deny if {{ req.hdr(x-user) -m str Jean{NBSP}Dupont }}"
    word = "http-response set-header X-Word \u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645"
    path = tmp_path / "synapse.yaml"
    path.write_text(
        f"""haproxy: {{do_writes: false, do_reloads: false, do_socket: false}}
services:
  web:
    discovery: {{method: zookeeper, hosts: ["127.0.0.1:2181"], path: /nerve/web}}
    haproxy:
      port: 3301
      frontend: ["{deny}", "{word}", "timeout{NBSP}client 5s"]
""",
        encoding="utf-8",
    )
    config, warnings = load_synapse_config(path)
    web = config.services["web"].haproxy
    assert web is not None and web.frontend == [deny, word, "timeout client 5s"]
    (kept,) = [w for w in warnings if "kept as written" in w]
    assert kept.startswith(f"{path}: services.web.haproxy.frontend[0]: ")
    assert len([w for w in warnings if "NO-BREAK SPACE" in w]) == 2
