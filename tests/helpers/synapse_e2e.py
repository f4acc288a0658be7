"""Running the real ``synapse`` binary (managed HAProxy) in end-to-end tests."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from testbed.haproxy import parse_show_proc
from testbed.process import (
    ManagedProcess,
    free_port,
    process_gone,
    wait_processes_gone,
    wait_until,
)

SYNAPSE = Path(sys.executable).with_name("synapse")
HTTP_DEFAULTS = [
    "mode http",
    "timeout connect 1s",
    "timeout client 5s",
    "timeout server 5s",
    "balance roundrobin",
    "option http-server-close",
]


def http_get(port: int, host: str | None = None, timeout: float = 3.0) -> tuple[int, str]:
    """GET / through HAProxy; (status, body). The body of our backends is their name."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}/")
    if host:
        request.add_header("Host", host)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, ""


def refused(port: int) -> bool:
    """A connection to 127.0.0.1:``port`` is refused: nothing listens (HAProxy stopped or
    killed). Accepted: False (HAProxy had not stopped listening yet, or a backlog took it)."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
    except ConnectionRefusedError:
        return True
    return False


def ask_until(
    port: int, began: float, window: float, each: Callable[[], object] = lambda: None
) -> tuple[list[int], list[tuple[float, float]]]:
    """A new connection to ``port`` every 0.05 s until ``window`` s after ``began``
    (time.monotonic): the statuses, and (asked, ended) of each that failed (a stall of the
    test process may hold one past a soft stop: tests/helpers/stall_witness.py tells)."""
    answers: list[int] = []
    failed: list[tuple[float, float]] = []
    while (asked := time.monotonic()) < began + window:
        try:
            answers.append(http_get(port, timeout=2)[0])
        except OSError:
            failed.append((asked, time.monotonic()))
        each()
        time.sleep(0.05)
    return answers, failed


def spread(port: int, requests: int = 12, host: str | None = None) -> Counter[str]:
    """Which backends answered ``requests`` requests (failures count as 'error')."""
    seen: Counter[str] = Counter()
    for _ in range(requests):
        try:
            status, body = http_get(port, host)
        except OSError:
            seen["error"] += 1
            continue
        seen[body if status == 200 else f"http-{status}"] += 1
    return seen


def wait_serving(port: int, names: set[str], host: str | None = None, timeout: float = 20.0):
    """Until traffic through ``port`` reaches exactly the backends ``names``."""

    def exact() -> bool:
        seen = spread(port, max(6, 3 * len(names)), host)
        if set(seen) != names:  # (named in the timeout: what was served instead)
            raise AssertionError(f"served {dict(seen)}")
        return True

    return wait_until(exact, timeout, interval=0.05, what=f"traffic to exactly {sorted(names)}")


def processes_using(directory: Path) -> list[int]:
    """PIDs of live processes whose command line names a path inside ``directory``."""
    needle = f"{directory}/".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            if needle in (entry / "cmdline").read_bytes() and not process_gone(int(entry.name)):
                found.append(int(entry.name))
    return found


class Load:
    """Requests through ``port`` from a thread, one after another, until ``stop()``; bounded
    in count and time. ``failures``: requests that did not get a 200."""

    def __init__(
        self, port: int, limit: int = 20000, seconds: float = 60.0, rate: float | None = None
    ) -> None:
        self.port, self.limit, self.seconds, self.rate = port, limit, seconds, rate
        self.ok = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        start = time.monotonic()
        deadline = start + self.seconds
        while not self._stop.is_set() and self.ok + len(self.failures) < self.limit:
            if time.monotonic() > deadline:
                break
            if self.rate:  # (paced: the n-th request at n / rate s)
                time.sleep(max(0.0, start + (self.ok + len(self.failures)) / self.rate
                               - time.monotonic()))  # fmt: skip
            try:
                status, _ = http_get(self.port, timeout=5)
            except OSError as err:
                self.failures.append(f"{type(err).__name__}: {err}")
                continue
            if status == 200:
                self.ok += 1
            else:
                self.failures.append(f"HTTP {status}")


CREATED: list[Synapse] = []  # every instance, cleaned up again by the conftest teardown


class Synapse:
    """A synapse subprocess with its own short work dir (unix socket paths are short)."""

    def __init__(
        self, services: dict[str, Any], config_name: str = "synapse.yaml", **top: Any
    ) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="syn-"))
        CREATED.append(self)
        self.admin_port = free_port()
        self.config_path = self.dir / config_name  # (a .json one: written as JSON)
        self.master_socket = self.dir / "master.sock"
        self.stats_port = free_port()  # HAProxy's stats page and Prometheus exporter
        haproxy = {
            "managed": {
                "master_socket_path": str(self.master_socket),
                "stats": {"bind": f"127.0.0.1:{self.stats_port}"},
                "stop_on_exit": True,  # nothing outlives a test
            },
            "config_file_path": str(self.dir / "haproxy.cfg"),
            "global": ["maxconn 256"],
            "defaults": HTTP_DEFAULTS,
            "restart_interval": 0.5,
            "coalesce_ms": 10,
        }
        haproxy.update(top.pop("haproxy", {}))
        self.config: dict[str, Any] = {
            "services": services,
            "haproxy": haproxy,
            "admin": {"port": self.admin_port},
            "startup_wait": 2,
            **top,
        }
        self.write_config()
        self.process = ManagedProcess(
            [str(SYNAPSE), "-c", str(self.config_path), "--log-level", "debug"],
            self.dir,
            name="synapse",
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )

    def write_config(self) -> None:
        """A temp file renamed over, as config management writes: rewritten in place and
        reloaded at once, it would wait ~2 s to be still (smartstack/reload_settle.py)."""
        temp = self.config_path.with_name(f".{self.config_path.name}.tmp")
        temp.write_text(self.config_text())
        os.replace(temp, self.config_path)

    def config_text(self) -> str:
        if self.config_path.suffix == ".json":
            return json.dumps(self.config, indent=1)
        return yaml.safe_dump(self.config)

    def start(self, timeout: float = 30.0) -> Synapse:
        self.process.start()
        wait_until(self._applied, timeout, what=f"synapse to configure HAProxy\n{self.log()}")
        return self

    def _applied(self) -> bool:
        self.process.check_alive()
        return bool(self.status()["reconciler"]["applies"])

    def status(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.admin_port}/status", timeout=3) as r:
            return json.loads(r.read())

    def admin(self, path: str) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.admin_port}{path}", timeout=3) as r:
            return r.read().decode()

    def metric(self, name: str, **labels: str) -> float:
        """Sum of the samples of ``name`` whose labels include ``labels``."""
        total = 0.0
        for line in self.admin("/metrics").splitlines():
            if line.startswith("#") or not line.startswith(name):
                continue
            key, _, value = line.rpartition(" ")
            metric, _, label_text = key.partition("{")
            if metric != name:
                continue
            if all(f'{k}="{v}"' in label_text for k, v in labels.items()):
                total += float(value)
        return total

    def workers(self) -> list[int]:
        """Current HAProxy worker PIDs from the master socket (a reload changes them)."""
        return self._show_proc()["workers"]

    def _show_proc(self) -> dict[str, list[int]]:
        return parse_show_proc(self.master_command("show proc"))

    def master_command(self, command: str) -> str:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(3)
            sock.connect(str(self.master_socket))
            sock.sendall(command.encode() + b"\n")
            sock.shutdown(socket.SHUT_WR)
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        return data.decode()

    def master_reloads(self) -> int:
        """HAProxy's own count of reloads of its master (`show proc`, the master's line)."""
        for line in self.master_command("show proc").splitlines():
            fields = line.split()
            if len(fields) > 2 and fields[1] == "master":
                return int(fields[2])
        raise AssertionError("no master line in `show proc`")

    def haproxy_pids(self) -> list[int]:
        """The master and its workers (for tests that stop a left-running HAProxy)."""
        proc = self._show_proc()
        return proc["master"] + proc["workers"] + proc["old_workers"]

    def haproxy_config(self) -> str:
        return (self.dir / "haproxy.cfg").read_text()

    def signal(self, sig: signal.Signals) -> None:
        os.kill(self.process.pid, sig)

    def log(self, lines: int = 40) -> str:
        return self.process.log_tail(lines)

    def cleanup(self) -> None:
        """Stop synapse (it stops its HAProxy), then kill whatever still uses our directory.

        HAProxy runs in its own session, so a synapse that was killed, or that did not stop
        in time, leaves it running; the master socket may not answer (mid-reload, or never
        created), so the processes are found by the directory in their command line.
        Idempotent: the module's teardown calls it again for every instance.
        """
        if self.process.alive:
            self.process.stop(timeout=15)
        leftovers = processes_using(self.dir)
        for pid in leftovers:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        wait_processes_gone(leftovers)
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Synapse:
        try:
            return self.start()
        except BaseException:  # __exit__ is not called when __enter__ fails
            self.cleanup()
            raise

    def __exit__(self, *exc: object) -> None:
        self.cleanup()


def wait(predicate, timeout: float = 20.0, what: str = "condition"):
    return wait_until(predicate, timeout, interval=0.05, what=what)


def etcd_put(cluster: Any, key: str, value: bytes | None) -> None:
    """Write (or with None delete) one etcd key, as nerve would, on its own connection."""
    import aetcd  # only the etcd tests need it

    async def put() -> None:
        client = aetcd.Client(host=cluster.host, port=cluster.port,
                              options={"grpc.use_local_subchannel_pool": 1})  # fmt: skip
        try:
            if value is None:
                await client.delete(key.encode())
            else:
                await client.put(key.encode(), value)
        finally:
            await client.close()

    asyncio.run(put())


def zk_putter(writer: Any, path: str) -> Callable[[str, bytes | None], None]:
    """``put(name, record)`` for the children of ``path`` (None: delete), as nerve would."""
    writer.ensure_path(path)

    def put(name: str, data: bytes | None) -> None:
        node = f"{path}/{name}"
        if data is None:
            writer.delete(node)
        else:
            writer.create(node, data)

    return put


def nerve_record(backend, name: str | None = None, **extra: Any) -> bytes:
    return json.dumps(
        {"host": "127.0.0.1", "port": backend.port, "name": name or backend.name, **extra}
    ).encode()


def zoned_service(hosts: str, path: str, port: int, **zone_routing: Any) -> dict[str, Any]:
    """A service on ZooKeeper ``path`` with ``zone_routing``, HAProxy on 127.0.0.1:``port``."""
    return {
        "discovery": {"method": "zookeeper", "hosts": [hosts], "path": path},
        "haproxy": {"port": port, "bind_address": "127.0.0.1"},
        "zone_routing": zone_routing,
    }


def register(writer: Any, path: str, backend, **extra: Any) -> str:
    """``backend``'s nerve record as a sequential child of ``path`` (made if missing)."""
    return writer.create(f"{path}/{backend.name}_", nerve_record(backend, **extra),
                         sequence=True, makepath=True)  # fmt: skip


def zk_service(zk: Any, path: str, port: int, **haproxy: Any) -> dict[str, Any]:
    """A service on ZooKeeper ``path`` of the server ``zk``, HAProxy on 127.0.0.1:``port``."""
    return {
        "discovery": {"method": "zookeeper", "hosts": [zk.hosts], "path": path},
        "haproxy": {"port": port, "bind_address": "127.0.0.1", **haproxy},
    }
