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
    import threading
    import prometheus_client
    # probes answer as the whole package's would, without running it: an optional
    # submodule whose library is absent, a dunder
    import importlib.util
    twisted = importlib.util.find_spec("twisted") is not None
    probes = [hasattr(prometheus_client, "twisted") == twisted,
              hasattr(prometheus_client, "__wrapped__")]
    probes.append("prometheus_client.exposition" in sys.modules)
    # two threads asking for names only __init__ gives: it runs once, both get theirs
    barrier, got = threading.Barrier(2), {}
    def ask(name):
        barrier.wait()
        got[name] = callable(getattr(prometheus_client, name))
    threads = [threading.Thread(target=ask, args=(n,)) for n in ("generate_latest",
                                                                 "start_http_server")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    whole = prometheus_client.REGISTRY is not None and "__getattr__" not in vars(prometheus_client)
    print(json.dumps({"installed": installed, "lean": lean, "body": body, "whole": whole,
                      "again": prometheus_lean.install(), "probes": probes, "got": got}))
    """
)


def test_the_daemons_load_without_the_exposition_module_and_every_name_answers() -> None:
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                          timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["installed"] and out["lean"] == [], out
    assert "hits_total 1.0" in out["body"]
    assert out["probes"] == [True, False, False], out["probes"]
    assert out["got"] == {"generate_latest": True, "start_http_server": True}, out["got"]
    assert out["whole"] and out["again"] is False  # __init__ ran whole then
