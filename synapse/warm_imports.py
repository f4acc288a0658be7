"""What the daemon will import next, guessed from the config file's raw text.

At a start the daemon waits for the forked child that validates the config with pydantic
(``synapse.config_load``): at 1,000 services that is ~0.3 s in which this process has
nothing to do. Before, the HAProxy side (~65 ms of CPU), the admin routes and a registry's
client (etcd: gRPC and aetcd, ~65 ms) were imported after it, in threads beside the
watchers' first reads, where each import's CPU was taken from the event loop that handles
the registry's answers (~0.3 s of wall time at 1,000 x 20). Imported in that wait, they are
done when the config arrives.

Only a guess from words in the file: a wrong guess costs a module's memory (imported for
nothing) or its time (imported later, as before), never a behaviour. The config is not
parsed here (that is the child's job, with its errors).
"""

from __future__ import annotations

import contextlib
import importlib
import re
from collections.abc import Callable
from pathlib import Path

# word in the file -> what a daemon whose config has it imports next
BY_WORD: tuple[tuple[bytes, tuple[str, ...]], ...] = (
    (b"haproxy", ("synapse.haproxy.controller",)),
    (b"zookeeper", ("synapse.watchers.zookeeper",)),
    (b"etcd", ("synapse.watchers.etcd",)),
)
# etcd's client: gRPC when the file names more etcd services than the JSON gateway serves
# (synapse.discovery_config.etcd_transport), or names gRPC; the gateway's client else.
ETCD_METHOD = re.compile(rb"""method['"]?\s*[:=]\s*['"]?etcd\b""")
ETCD_GRPC = re.compile(rb"""etcd_transport['"]?\s*[:=]\s*['"]?grpc\b""")
ETCD_JSON = re.compile(rb"""etcd_transport['"]?\s*[:=]\s*['"]?json\b""")
ETCD_JSON_MAX_SERVICES = 8  # synapse.discovery_config's (not imported: it loads the models)
ALWAYS = ("synapse.admin_routes", "smartstack.admin")  # the admin port is on by default
MAX_READ = 32 * 1024 * 1024  # a larger file is not read twice: no guess


def guess(path: str | Path) -> list[str]:
    """The modules a daemon running the config at ``path`` imports after loading it."""
    try:
        with open(path, "rb") as handle:
            raw = handle.read(MAX_READ + 1)
    except OSError:
        return []  # the child reports an unreadable file
    if len(raw) > MAX_READ:
        return []
    raw = raw.lower()
    modules = [m for word, names in BY_WORD if word in raw for m in names]
    if b"etcd" in raw:
        many = len(ETCD_METHOD.findall(raw)) > ETCD_JSON_MAX_SERVICES and not ETCD_JSON.search(raw)
        many = many or ETCD_GRPC.search(raw)
        modules.append("smartstack.etcd" if many else "smartstack.etcd_json")
    return [*modules, *ALWAYS]


def warm(path: str | Path, done: Callable[[], bool] = lambda: False) -> None:
    """Import what ``guess`` names until ``done()`` (the child has answered: what is left is
    imported when needed, as before, not before the config is used). An import that fails
    is left to the daemon (it says why when, and only if, it needs the module)."""
    for module in guess(path):
        if done():
            return
        with contextlib.suppress(Exception):  # (a guess: the daemon's own import says why)
            importlib.import_module(module)
