"""issue 11 (pure): HAProxy 1.x-era titles and directives (synapse/haproxy/legacy.py)."""

from __future__ import annotations

import pytest

from synapse.haproxy.legacy import modernize_line, modernize_lines, modernize_title


@pytest.mark.parametrize(
    ("title", "expected"),
    [
        ("listen stats :3212", ("listen stats", "bind :3212")),
        ("frontend www 0.0.0.0:80,:8080", ("frontend www", "bind 0.0.0.0:80,:8080")),
        ("listen stats", ("listen stats", None)),
        ("backend web 10.0.0.1:80", ("backend web 10.0.0.1:80", None)),
    ],
)
def test_titles(title: str, expected: tuple[str, str | None]) -> None:
    assert modernize_title(title) == expected


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (r"reqadd X-Forwarded-Proto:\ https if { ssl_fc }",
         "http-request add-header X-Forwarded-Proto https if { ssl_fc }"),
        (r"rspadd X-Rate:\ 100%", "http-response add-header X-Rate 100%%"),
        (r"rspadd Via:\ 1.1\ edge", 'http-response add-header Via "1.1 edge"'),
        ("reqidel ^X-Forwarded-For:.*", "http-request del-header X-Forwarded-For"),
        ("rspidel ^Server:", "http-response del-header Server"),
        ("option forceclose", "option httpclose"),
        ("block if { src 10.0.0.0/8 }", "http-request deny if { src 10.0.0.0/8 }"),
        ("redispatch", "option redispatch"),
        ("srvtimeout 30s", "timeout server 30s"),
        ("contimeout 5s", "timeout connect 5s"),
    ],
)  # fmt: skip
def test_one_to_one_rewrites(old: str, new: str) -> None:
    assert modernize_line(old) == (new, None, None)


@pytest.mark.parametrize(
    ("line", "removed", "hint_part"),
    [
        (r"reqrep ^Host:\ old new", "reqrep", "replace-header"),
        ("reqidel ^X-.*-Debug", "reqidel", "del-header"),  # not a plain header name
        ("reqtarpit ^User-Agent:.*bot", "reqtarpit", "http-request tarpit"),
        ("option http-tunnel", "option http-tunnel", "remove it"),
        ("monitor-net 10.0.0.0/8", "monitor-net", "http-request return status 200"),
        ("nbproc 4", "nbproc", "nbthread"),
    ],
)
def test_removed_without_one_to_one_form(line: str, removed: str, hint_part: str) -> None:
    kept, what, hint = modernize_line(line)
    assert kept == line and what == removed and hint is not None and hint_part in hint


def test_lines_report_place_and_keep_modern_lines() -> None:
    out = modernize_lines(
        ["mode http", "option forceclose", "nbproc 1", "reqrep ^a b"],
        "/etc/synapse.json: services.web.haproxy.listen",
    )
    assert out.lines == ["mode http", "option httpclose", "reqrep ^a b"]
    assert out.warnings[0].startswith("/etc/synapse.json: services.web.haproxy.listen[1]: ")
    assert "dropped" in out.warnings[1]
    (error,) = out.errors
    assert error.startswith("/etc/synapse.json: services.web.haproxy.listen[3]: 'reqrep ^a b'")
    assert "HAProxy 2.x removed 'reqrep'" in error
