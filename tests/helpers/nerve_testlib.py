"""Helpers for nerve's tests: configs, an in-process daemon, nerve subprocesses, polling.

(A module with a unique name: test directories are not packages.)

Real servers come from tests/conftest.py (`zk`, `zk_ensemble`, `etcd`, `etcd_cluster`,
`http_backend_factory`). Test configs use short session timeouts / lease TTLs so the
suite stays fast; every wait polls a condition with a generous deadline.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import signal
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any, TypeVar

from kazoo.client import KazooClient
from kazoo.exceptions import ConnectionLoss, NoNodeError

from nerve.config import NerveConfig
from nerve.daemon import NerveDaemon
from testbed.process import ManagedProcess, wait_until

T = TypeVar("T")
TIMEOUT = 20.0  # generous: 2 shared cores; never a speed assertion
NERVE_BIN = Path(sys.executable).parent / "nerve"
ZK_SESSION = 2.0  # seconds; ZooKeeper's minimum here is 1 s (minSessionTimeout)
LEASE_TTL = 2  # seconds; nerve's minimum


# --------------------------------------------------------------------------- polling


async def until(
    predicate: Callable[[], T | Awaitable[T]],
    timeout: float = TIMEOUT,
    what: str = "condition",
    interval: float = 0.02,
) -> T:
    """Poll a sync or async predicate until it returns something truthy; return that."""
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while True:
        try:
            value = predicate()
            if inspect.isawaitable(value):
                value = await value
            if value:
                return value  # type: ignore[return-value]
        except Exception as exc:  # registries answer with errors while starting
            last = exc
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")
        await asyncio.sleep(interval)


def unique_path(prefix: str = "/nerve-test") -> str:
    return f"{prefix}/{uuid.uuid4().hex[:12]}"


# --------------------------------------------------------------------------- configs


def _service(port: int, registry: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """A service block: HTTP check on /health every 0.2 s, then ``registry`` and ``extra``."""
    return {
        "host": "127.0.0.1",
        "port": port,
        "check_interval": 0.2,
        "checks": [{"type": "http", "uri": "/health", "timeout": 1.0}],
        **registry,
        **extra,
    }


def zk_service(zk_hosts: str, zk_path: str, port: int, **extra: Any) -> dict[str, Any]:
    zk = {"zk_hosts": zk_hosts.split(","), "zk_path": zk_path, "zk_session_timeout": ZK_SESSION}
    return _service(port, zk, extra)


def etcd_service(endpoints: list[str], etcd_path: str, port: int, **extra: Any) -> dict[str, Any]:
    etcd = {
        "reporter_type": "etcd",
        "etcd_endpoints": endpoints,
        "etcd_path": etcd_path,
        "etcd_lease_ttl": LEASE_TTL,
    }
    return _service(port, etcd, extra)


def nerve_config(services: dict[str, Any], instance_id: str = "i-test", **top: Any) -> dict:
    config: dict[str, Any] = {"instance_id": instance_id, "services": services}
    config.setdefault("admin", {"port": None})
    config.update(top)
    return config


def write_config(path: Path, config: dict[str, Any]) -> Path:
    """Written as config management does (a temp file renamed over): a file rewritten in
    place and reloaded at once waits ~2 s for it to be still (smartstack/reload_settle.py)."""
    temp = path.with_name(f".{path.name}.tmp")
    temp.write_text(json.dumps(config, indent=2))
    os.replace(temp, path)
    return path


# --------------------------------------------------------------------------- in-process daemon


@asynccontextmanager
async def running_nerve(
    config: dict[str, Any], config_path: Path | None = None
) -> AsyncIterator[NerveDaemon]:
    daemon = NerveDaemon(NerveConfig.model_validate(config), config_path)
    await daemon.start()
    try:
        yield daemon
    finally:
        await daemon.stop()


# --------------------------------------------------------------------------- ZooKeeper / etcd


def children(client: KazooClient, path: str) -> list[str]:
    """Sorted children of ``path`` ([] if it does not exist). A connection loss of the
    observer itself (its member was killed) is retried: it says nothing about the node."""
    deadline = time.monotonic() + TIMEOUT
    while True:
        try:
            return sorted(client.get_children(path))
        except NoNodeError:
            return []
        except ConnectionLoss:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


@contextmanager
def children_seen(kz: KazooClient, path: str) -> Iterator[list[list[str]]]:
    """Every children list a ChildrenWatch on ``path`` delivers (what synapse sees)."""
    kz.ensure_path(path)
    seen: list[list[str]] = []
    lock = threading.Lock()
    stopped = False

    def watch(nodes: list[str]) -> bool:
        if stopped:
            return False  # ends the watch
        with lock:
            seen.append(sorted(nodes))
        return True

    kz.ChildrenWatch(path, watch)
    try:
        yield seen
    finally:
        stopped = True


# --------------------------------------------------------------------------- subprocesses


class NerveProcess:
    """`.venv/bin/nerve -c CONFIG` as a real child process (own process group, log file)."""

    def __init__(self, config_path: Path, workdir: Path, name: str = "nerve") -> None:
        self.config_path = config_path
        self.process = ManagedProcess(
            [str(NERVE_BIN), "-c", str(config_path)], workdir, name=name, env=dict(os.environ)
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def start(self) -> NerveProcess:
        self.process.start()
        return self

    def signal(self, signum: signal.Signals) -> None:
        os.kill(self.process.pid, signum)

    def wait(self, timeout: float) -> int:
        return self.process.wait(timeout)

    def log(self) -> str:
        return self.process.log_path.read_text(errors="replace")

    def wait_for_log(self, text: str, timeout: float = TIMEOUT, after: int = 0) -> None:
        wait_until(
            lambda: text in self.log()[after:] or self.process.check_alive(),
            timeout,
            what=f"{text!r} in the nerve log",
        )


def admin_get(port: int, path: str) -> Any:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
        body = response.read()
        return json.loads(body) if path != "/metrics" else body.decode()


def admin_ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def site_probe(tmp_path: Path, monkeypatch: Any, code: str, out_variable: str) -> Path:
    """``code`` as the ``sitecustomize`` of every Python process started from now on (a
    nerve's atexit probe); ``out_variable`` set in the environment (``monkeypatch``: a
    pytest MonkeyPatch) to the directory it writes to, returned."""
    site, out = tmp_path / "site", tmp_path / "probe"
    site.mkdir()
    out.mkdir()
    (site / "sitecustomize.py").write_text(code)
    paths = [str(site), *filter(None, [os.environ.get("PYTHONPATH")])]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(paths))
    monkeypatch.setenv(out_variable, str(out))
    return out


def zk_nerve_registered(
    nerve_process: Callable[[Path], NerveProcess], zk_hosts: str, kz: KazooClient,
    port: int, tmp_path: Path, **extra: Any,
) -> NerveProcess:  # fmt: skip
    """A nerve process registering one service (``port``; ``extra``: its block's keys) in
    ZooKeeper, once its registration is there."""
    path = unique_path()
    config = nerve_config({"web": zk_service(zk_hosts, path, port, **extra)})
    nerve = nerve_process(write_config(tmp_path / "nerve.json", config))
    wait_until(lambda: children(kz, path), TIMEOUT, what="the registration in ZooKeeper")
    return nerve
