"""``bind_addresses`` reads only the lines that mention ``bind`` (a config of 20,000
server lines is not split line by line); what it finds is what a full scan finds."""

from __future__ import annotations

from synapse.haproxy.ports import _dual_stack, bind_addresses


def test_bind_lines_are_found_among_other_lines_and_line_breaks() -> None:
    text = (
        "frontend a\n  bind 1.2.3.4:80,:81\r\n\tbind\x0b[::1]:82\x0cbind :83\n"
        "bind\n bind\n  binder :1\n  # bind :5\nbindx\n bind :90-91 ssl\n"
        "backend b\n  server bind-1 10.0.0.1:9 check\n bind [::1]:7 \n bind *:8"
    )
    assert bind_addresses(text) == [
        ("1.2.3.4:80", "1.2.3.4", 80),
        (":81", "0.0.0.0", 81),
        (":83", "0.0.0.0", 83),  # after a form feed: a line of its own, as splitlines() has it
        (":90-91", "0.0.0.0", 90),
        (":90-91", "0.0.0.0", 91),
        ("[::1]:7", "::1", 7),
        ("*:8", "0.0.0.0", 8),
    ]


def test_a_thousand_frontends_on_one_address() -> None:
    text = "".join(
        f"frontend f{i}\n    bind 127.0.0.1:{10000 + i}\n    default_backend b{i}\n"
        f"backend b{i}\n    server s 127.0.0.1:{20000 + i}\n"
        for i in range(1000)
    )
    assert bind_addresses(text) == [
        (f"127.0.0.1:{10000 + i}", "127.0.0.1", 10000 + i) for i in range(1000)
    ]


def test_a_v6_wildcard_is_dual_stack_unless_v6only() -> None:
    """HAProxy's `bind :::3009` takes IPv4's 3009 too (Linux's bindv6only=0): a foreign
    listener on 127.0.0.1:3009 made it fail and was not isolated (all of HAProxy down)."""
    text = "frontend a\n  bind :::3009\n  bind [::]:3010 v6only\n"
    assert bind_addresses(text) == [
        (":::3009", "::", 3009),
        (":::3009", "0.0.0.0", 3009),
        ("[::]:3010", "::", 3010),
    ]


def test_v4v6_and_v6only_say_it_whatever_the_host_s_default() -> None:
    assert _dual_stack(["v4v6"]) and not _dual_stack(["v6only"])
    assert _dual_stack(["ssl", "crt", "x.pem", "v4v6"])
