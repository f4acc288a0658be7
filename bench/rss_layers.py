"""`python -m bench.rss_layers [zookeeper|etcd|etcd-grpc] [--pydantic]`: a sidecar synapse's RSS
by layer (``etcd``: the JSON gateway a few services use; ``etcd-grpc``: gRPC, beyond 8).

Where the 1-service synapse's memory goes (issue 15's ≤ 35 MB goal): one fresh
interpreter imports, in order, what a started synapse holds, and VmRSS is read after each
layer. Later layers only pay for what the earlier ones did not load (the stdlib modules
prometheus_client and pydantic share, e.g. ``email``, count where they first come).
The daemon holds its config as plain objects (smartstack.modelbase: a child process
validates it with pydantic), so its layers are the config modules on the plain base, then
the daemon. ``--pydantic`` measures the layers of a process that validates in-process
(``synapse -k``, or the daemon before the plain base): pydantic, its first model, the
config modules on it. The scale benchmark's baseline row (a started synapse serving one
server) is above the last line by ~0.2 MB with ZooKeeper (its first records, buffers) and
~4 MB with etcd over gRPC (the first channel and its threads).
"""

from __future__ import annotations

import argparse
import subprocess
import sys

COMMON = [
    ("the interpreter", ""),
    (
        "asyncio, ssl, socket, subprocess, logging",
        "import asyncio, ssl, socket, subprocess, logging",
    ),
]
# A process that parses the config loads yaml; the daemon on plain models does not (its
# child parses), nor the statsd client unless the config has a statsd block.
# A daemon's start loads prometheus_client without its exposition module's HTTP servers and
# clients (smartstack.prometheus_lean, session 51: ~4 MB).
LEAN = "from smartstack import prometheus_lean\nprometheus_lean.install()\n"
METRICS = {
    True: ("prometheus_client, yaml, statsd", "import prometheus_client, yaml, statsd"),
    False: (
        "prometheus_client's metrics (smartstack.prometheus_lean)",
        LEAN + "import prometheus_client.metrics, prometheus_client.registry",
    ),
}
CLIENT = {
    "zookeeper": ("kazoo", "import kazoo.client"),
    # A sidecar's few etcd services: etcd's JSON gateway (etcd_transport auto), no gRPC.
    "etcd": ("h11 + the JSON gateway client", "import smartstack.etcd_json"),
    "etcd-grpc": ("grpc + aetcd (protobufs)", "import grpc, aetcd"),
}
PYDANTIC = [
    ("pydantic: BaseModel, fields (pydantic_core's .so)", "import pydantic.main, pydantic.fields"),
    (
        "pydantic: the first model built (plugin loader, schema machinery)",
        "from pydantic import BaseModel\nclass M(BaseModel):\n    a: int = 1",
    ),
    ("synapse.config: its modules and models", "import synapse.config"),
]
PLAIN = [("synapse.config on the plain base (no pydantic)", "import synapse.config")]
# The daemon picks the plain base first thing: some client modules (etcd's record reader)
# import config models, which would otherwise be built on pydantic.
SELECT_PLAIN = "from smartstack import modelbase\nmodelbase.select_plain()\n"
WATCHER = {
    "zookeeper": "synapse.watchers.zookeeper",
    "etcd": "synapse.watchers.etcd",
    "etcd-grpc": "synapse.watchers.etcd",
}


def layers(kind: str, pydantic: bool = False) -> list[tuple[str, str]]:
    """(label, code) in import order for a ``kind`` sidecar (``pydantic``: validating
    in-process, as before the plain base)."""
    rest = "import synapse.daemon, synapse.haproxy.controller, synapse.admin_routes, "
    client_label, client_code = CLIENT[kind]
    return [
        *COMMON,
        METRICS[pydantic],
        (client_label, client_code if pydantic else SELECT_PLAIN + client_code),
        *(PYDANTIC if pydantic else PLAIN),
        ("the daemon, the HAProxy side, the admin API, the watcher", rest + WATCHER[kind]),
    ]


_PROBE = """
def _rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
print(_rss(), flush=True)
"""


def measure(kind: str, pydantic: bool = False) -> list[tuple[str, float]]:
    """MB of VmRSS after each layer, in one fresh interpreter."""
    steps = layers(kind, pydantic)
    code = "\n".join(step + "\n" + _PROBE for _, step in steps)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    kib = [int(line) for line in out.stdout.split()]
    return [(label, value / 1024) for (label, _), value in zip(steps, kib, strict=True)]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("kind", nargs="?", default="zookeeper", choices=sorted(CLIENT))
    parser.add_argument("--pydantic", action="store_true", help="config validated in-process")
    args = parser.parse_args(argv)
    previous = 0.0
    for label, mb in measure(args.kind, args.pydantic):
        print(f"{label:66s} +{mb - previous:5.1f} = {mb:5.1f} MB")
        previous = mb


if __name__ == "__main__":
    main()
