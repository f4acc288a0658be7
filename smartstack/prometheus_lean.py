"""prometheus_client without its exposition module's imports, and the text format from it.

``import prometheus_client`` runs the package's ``__init__``, which imports its exposition
module, and that imports ``http.server``, ``urllib.request``, ``wsgiref`` (with ``email``,
``html``, ``mimetypes``, ``socketserver``, ``gzip``...): ~4 MB of RSS in every daemon, a
sidecar synapse's largest part after the interpreter and OpenSSL (session 51: 4.0 of
35.7 MB), for an HTTP server and push clients the daemons never use (their admin server is
``smartstack.httpserver``). ``install()`` (a daemon's start, before anything imports
prometheus_client) puts the package in ``sys.modules`` without running ``__init__``: its
submodules import as usual, and a name asked of the package comes from the submodule that
defines it (a submodule: imported), or, for any other name, from the whole ``__init__``
run then (nothing is missing, only late).

``text(registry)``: the Prometheus text format, byte for byte what
``prometheus_client.generate_latest`` writes (checked against it in
tests/unit/foundation/test_prometheus_lean.py), from the same escaping functions.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import threading
from typing import Any

PACKAGE = "prometheus_client"
CONTENT_TYPE = "text/plain; version=1.0.0; charset=utf-8"  # CONTENT_TYPE_LATEST (0.26)
# The names the daemons take from the package, and the submodule that defines each.
WHERE = {
    "CollectorRegistry": "registry",
    "Counter": "metrics",
    "Gauge": "metrics",
    "Histogram": "metrics",
    "Summary": "metrics",
    "Info": "metrics",
    "Enum": "metrics",
    "Metric": "metrics_core",
    "disable_created_metrics": "metrics",
    "enable_created_metrics": "metrics",
    "ProcessCollector": "process_collector",
    "PlatformCollector": "platform_collector",
    "GCCollector": "gc_collector",
}


def install() -> bool:
    """The package without its ``__init__`` run, unless it is imported already (or cannot
    be found): whether it was installed so."""
    if PACKAGE in sys.modules:
        return False
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or spec.loader is None or spec.submodule_search_locations is None:
        return False
    package = importlib.util.module_from_spec(spec)
    whole = threading.RLock()  # (two threads asking for other names: __init__ runs once)
    ran: list[bool] = []  # __init__ run (or running: a name it asks for itself is not there)

    def __getattr__(name: str) -> Any:  # (PEP 562: only for names the module lacks)
        if name in WHERE:
            value = getattr(importlib.import_module(f"{PACKAGE}.{WHERE[name]}"), name)
        elif name.startswith("__") and name != "__all__":
            raise AttributeError(name)  # (a probe of a module's dunders: nothing to run)
        elif importlib.util.find_spec(f"{PACKAGE}.{name}") is not None:
            try:  # (``from . import values``)
                value = importlib.import_module(f"{PACKAGE}.{name}")
            except ImportError as exc:  # (an optional one's library absent: hasattr says no)
                raise AttributeError(name) from exc
        else:  # anything else: the package as it is, whole
            with whole:  # (another thread asking meanwhile waits for the whole package)
                if not ran:
                    ran.append(True)
                    try:
                        spec.loader.exec_module(package)  # type: ignore[union-attr]
                    except BaseException:
                        ran.clear()  # (tried again at the next name asked)
                        raise
                    package.__dict__.pop("__getattr__", None)
            if name not in package.__dict__:
                raise AttributeError(f"module {PACKAGE!r} has no attribute {name!r}")
            return package.__dict__[name]
        setattr(package, name, value)
        return value

    package.__dict__["__getattr__"] = __getattr__
    sys.modules[PACKAGE] = package
    return True


def text(registry: Any) -> bytes:
    """``registry``'s samples in the Prometheus text format (``generate_latest``'s)."""
    from prometheus_client.openmetrics import exposition as om
    from prometheus_client.utils import floatToGoString

    def name_of(name: str) -> str:
        return om.escape_metric_name(name, om.UNDERSCORES)

    def help_line(name: str, documentation: str) -> str:
        escaped = documentation.replace("\\", "\\\\").replace("\n", "\\n")
        return f"# HELP {name_of(name)} {escaped}\n"

    def sample_line(sample: Any) -> str:
        labels = ",".join(
            f'{om.escape_label_name(k, om.UNDERSCORES)}="{om._escape(v, om.ALLOWUTF8, False)}"'
            for k, v in sorted(sample.labels.items())
        )
        stamp = "" if sample.timestamp is None else f" {int(float(sample.timestamp) * 1000):d}"
        labels = f"{{{labels}}}" if labels else ""
        return f"{name_of(sample.name)}{labels} {floatToGoString(sample.value)}{stamp}\n"

    output: list[str] = []
    for metric in registry.collect():
        name, kind = metric.name, metric.type
        name, kind = {
            "counter": (name + "_total", kind),
            "info": (name + "_info", "gauge"),
            "stateset": (name, "gauge"),
            "gaugehistogram": (name, "histogram"),
            "unknown": (name, "untyped"),
        }.get(kind, (name, kind))
        output.append(help_line(name, metric.documentation))
        output.append(f"# TYPE {name_of(name)} {kind}\n")
        openmetrics_only: dict[str, list[str]] = {}
        for sample in metric.samples:
            suffix = next((s for s in ("_created", "_gsum", "_gcount")
                           if sample.name == metric.name + s), None)  # fmt: skip
            if suffix is None:
                output.append(sample_line(sample))
            else:  # (as generate_latest: a gauge of its own after the metric)
                openmetrics_only.setdefault(suffix, []).append(sample_line(sample))
        for suffix, lines in sorted(openmetrics_only.items()):
            output.append(help_line(metric.name + suffix, metric.documentation))
            output.append(f"# TYPE {name_of(metric.name + suffix)} gauge\n")
            output.extend(lines)
    return "".join(output).encode("utf-8")
