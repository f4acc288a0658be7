"""smartstack.prometheus_lean.install in a fresh interpreter (this one imported
prometheus_client long ago): the daemons' modules load without prometheus_client's
exposition module and what it imports, every name still answers, and a name the daemons
do not use runs the package's whole ``__init__`` (nothing missing, only late)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import json, sys
    from smartstack import modelbase, prometheus_lean
    installed = prometheus_lean.install()
    modelbase.select_plain()
    import synapse.daemon, synapse.admin_routes, nerve.daemon  # noqa: F401
    from prometheus_client import CollectorRegistry, Counter
    registry = CollectorRegistry()
    Counter("hits", "h", registry=registry).inc()
    lean = sorted(m for m in ("prometheus_client.exposition", "http.server", "wsgiref",
                              "urllib.request") if m in sys.modules)
    body = prometheus_lean.text(registry).decode()
    import prometheus_client
    whole = prometheus_client.REGISTRY is not None and "generate_latest" in dir(prometheus_client)
    print(json.dumps({"installed": installed, "lean": lean, "body": body, "whole": whole,
                      "again": prometheus_lean.install()}))
    """
)


def test_the_daemons_load_without_the_exposition_module_and_every_name_answers() -> None:
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                          timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["installed"] and out["lean"] == [], out
    assert "hits_total 1.0" in out["body"]
    assert out["whole"] and out["again"] is False  # REGISTRY: __init__ ran whole then
