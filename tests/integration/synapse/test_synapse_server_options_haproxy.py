"""Whatever the server-option filter lets through, `haproxy -c` accepts."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from server_option_cases import ALL, OUT_OF_RANGE, SMUGGLING

from synapse.server_options import filter_server_options


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
