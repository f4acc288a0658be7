"""Registry haproxy_server_options: only whitelisted, well-formed keywords pass."""

from __future__ import annotations

import pytest
from server_option_cases import ALL, OUT_OF_RANGE, SMUGGLING

from synapse.server_options import filter_server_options, unknown_keywords

DEFAULT = ["backup", "weight", "maxconn", "slowstart", "disabled"]


@pytest.mark.parametrize(
    ("options", "kept"),
    [
        ("backup", "backup"),
        ("weight 10 maxconn 50", "weight 10 maxconn 50"),
        ("slowstart 30s", "slowstart 30s"),
        ("  backup   weight 7 ", "backup weight 7"),
        ("", ""),
        (None, ""),
    ],
)
def test_whitelisted_keywords_pass(options: str | None, kept: str) -> None:
    result = filter_server_options(options, DEFAULT)
    assert result.text == kept
    assert result.dropped == ()


@pytest.mark.parametrize(
    ("options", "kept"),
    [
        # Not whitelisted: dropped, the rest survives.
        ("backup track other/srv", "backup"),
        ("check inter 1s backup", "backup"),  # check/inter are known but not allowed here
        # Malformed arguments never pass (and are not re-read as keywords).
        ("weight 9999", ""),
        ("weight -1 backup", "backup"),
        ("maxconn lots", ""),
        ("slowstart 10parsecs backup", "backup"),
        ("weight", ""),
        # Injection attempts: another directive or a redirect to a foreign server.
        ("backup\nserver evil 1.2.3.4:80", "backup"),
        ("weight 10;use_backend x", ""),
        ("redir http://evil.example", ""),
    ],
)
def test_everything_else_is_dropped_and_reported(options: str, kept: str) -> None:
    result = filter_server_options(options, DEFAULT)
    assert result.text == kept
    assert result.dropped, "a refused part must be reported"
    assert "\n" not in result.text and "evil" not in result.text


def test_empty_whitelist_passes_nothing() -> None:
    assert filter_server_options("backup weight 1", []).text == ""


def test_operator_can_widen_the_whitelist_with_known_keywords() -> None:
    result = filter_server_options("check inter 2s rise 3 backup", ["check", "inter", "rise"])
    assert result.text == "check inter 2s rise 3"
    assert len(result.dropped) == 1


def test_unknown_whitelisted_keywords_are_reported() -> None:
    assert unknown_keywords(["backup", "track", "redir"]) == ["redir", "track"]


@pytest.mark.parametrize("options", OUT_OF_RANGE + SMUGGLING)
def test_values_haproxy_refuses_never_pass(options: str) -> None:
    result = filter_server_options(options, ALL)
    assert result.dropped
    assert not set(result.text) & set("#'\";\\")
    assert result.text in ("", "backup", "weight 5"), result.text


@pytest.mark.parametrize("options", ["rise 1", "inter 1us", "inter 24d", "slowstart 0",
                                     "weight 0", "weight 256", "maxconn 9999999"])  # fmt: skip
def test_boundary_values_haproxy_accepts_pass(options: str) -> None:
    assert filter_server_options(options, ALL).text == options
