"""Registry haproxy_server_options: only whitelisted, well-formed keywords pass."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from synapse.server_options import KNOWN_KEYWORDS, filter_server_options, unknown_keywords

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


ALL = sorted(KNOWN_KEYWORDS)
# Values HAProxy 2.6 refuses (`haproxy -c`): a record carrying one of them would make every
# candidate config invalid, blocking every structural change while it is registered.
OUT_OF_RANGE = [
    "rise 0", "fall 00", "rise 2147483648", "inter 0", "fastinter 0ms", "downinter 0s",
    "inter 25d", "inter 2147483648", "slowstart 999999999d", "weight 257",
    "weight \u0661\u0660", "maxconn \u0665", "inter 1\u0661s",  # non-ASCII digits
]  # fmt: skip
# Shapes that try to smuggle a second directive or a comment through an allowed keyword.
SMUGGLING = [
    "cookie a#b", "cookie 'a b'", 'cookie "x', "cookie a;b", "cookie a\\", "weight 1#",
    "backup;server x 1.2.3.4:1", "cookie x\\ server", "inter 1s\\", "weight 5 # comment",
]  # fmt: skip


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


@pytest.mark.skipif(shutil.which("haproxy") is None, reason="needs haproxy")
def test_whatever_passes_is_accepted_by_haproxy(tmp_path: Path) -> None:
    """Every hostile input above, filtered, on a server line: `haproxy -c` accepts the lot."""
    lines = [f"    server s{i} 127.0.0.1:{1000 + i} {filter_server_options(o, ALL).text}"
             for i, o in enumerate(OUT_OF_RANGE + SMUGGLING)]  # fmt: skip
    config = tmp_path / "haproxy.cfg"
    config.write_text(
        "defaults\n    mode http\n    timeout connect 1s\n    timeout client 1s\n"
        "    timeout server 1s\nfrontend f\n    bind 127.0.0.1:1\n    default_backend b\n"
        "backend b\n    cookie SRV insert\n" + "\n".join(lines) + "\n"
    )
    checked = subprocess.run(["haproxy", "-c", "-f", str(config)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
