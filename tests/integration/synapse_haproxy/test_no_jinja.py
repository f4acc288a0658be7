"""A synapse without ``haproxy.template`` never imports jinja2 (~2 MB of RSS per host), nor
ctypes (~0.3 MB: only taking a replaced master's listeners needs it, synapse.haproxy.taken).

In a fresh interpreter (the test process has imported jinja2 long ago): the daemon's
modules, then a managed controller that starts a real HAProxy and applies a service, the
default layout's render path end to end. The same with a template (the packaged one)
does import it, which shows the check can fail.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

HELPERS = Path(__file__).resolve().parents[2] / "helpers"
TEMPLATE = Path(__file__).resolve().parents[3] / "templates" / "haproxy.cfg.j2"
SCRIPT = textwrap.dedent(
    """
    import asyncio, sys
    from pathlib import Path

    import synapse.cli, synapse.daemon, synapse.watchers.zookeeper  # noqa: F401
    from haproxy_helpers import managed_config, server, service
    from prometheus_client import CollectorRegistry
    from synapse.haproxy.controller import HAProxyController

    async def main(directory: Path, template: str) -> None:
        overrides = {"template": template} if template else {}
        controller = HAProxyController(managed_config(directory, **overrides),
                                       CollectorRegistry())
        try:
            result = await controller.apply([service("web", [server("10.0.0.1", 80)])], "test")
            assert result.error is None, result
            assert "backend web" in (directory / "haproxy.cfg").read_text()
        finally:
            await controller.stop()

    asyncio.run(main(Path(sys.argv[1]), sys.argv[2]))
    print(sorted(m for m in sys.modules if m.split(".")[0] in ("jinja2", "markupsafe", "ctypes")))
    """
)


@pytest.fixture
def sockdir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="shj-"))  # short: unix socket paths
    yield path
    shutil.rmtree(path, ignore_errors=True)


def loaded(directory: Path, template: str = "") -> str:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(directory), template],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(HELPERS)},
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


@pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy is not installed")
def test_the_default_layout_runs_without_jinja2(sockdir: Path) -> None:
    assert loaded(sockdir) == "[]"


@pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy is not installed")
def test_an_operator_template_loads_jinja2(sockdir: Path) -> None:
    assert "jinja2" in loaded(sockdir, str(TEMPLATE))  # the packaged one, as an operator's
