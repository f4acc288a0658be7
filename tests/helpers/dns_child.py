"""Run in ``private_dns``'s namespaces by test_dns_named_servers.py: synapse's managed
HAProxy (its controller) with DNS-named servers; prints one JSON object of figures.

``silent``: ``web`` (IP) serves; ``api`` comes with a server named ``db.silent.example``
(the resolver never answers), then ``new`` (IP only): how long each apply took and when
``new`` served. ``moved``: ``api``'s one server is ``mv.test.example`` in /etc/hosts, which
is rewritten (in place) to another address: when HAProxy's server took it."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from haproxy_helpers import managed_config, server, service, web
from private_dns import silent_dns
from prometheus_client import CollectorRegistry

from synapse.haproxy.controller import HAProxyController
from testbed.httpbackend import HttpBackend
from testbed.process import free_port


def serves(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1) as answer:
            return answer.status == 200
    except OSError:
        return False


def address(directory: Path, backend: str) -> str:
    """The first server's address in HAProxy (``show servers state``)."""
    cmd = f"echo 'show servers state {backend}' | socat - UNIX:{directory}/haproxy.sock"
    lines = subprocess.run(cmd, shell=True, capture_output=True, text=True).stdout.splitlines()
    return lines[2].split()[4] if len(lines) > 2 else ""


async def silent(controller: HAProxyController, ports: dict[str, int], b: list) -> dict:
    figures: dict = {}
    w = web(ports["web"], b[:1])
    api = service("api", [server("127.0.0.1", b[1].port, "b2"),
                          server("db.silent.example", 80, "db")], port=ports["api"])  # fmt: skip
    new = service("new", [server("127.0.0.1", b[2].port, "b3")], port=ports["new"])
    for name, desired in (("api", [w, api]), ("new", [w, api, new])):
        began = time.monotonic()
        result = await controller.apply(desired, name)
        figures[name] = {"outcome": result.reload.value, "s": time.monotonic() - began}
    began = time.monotonic()
    while not serves(ports["new"]) and time.monotonic() - began < 8:
        await asyncio.sleep(0.2)
    figures["new_served_s"] = time.monotonic() - began if serves(ports["new"]) else None
    figures["web_serves"] = serves(ports["web"])
    return figures


async def moved(controller: HAProxyController, ports: dict[str, int], b: list) -> dict:
    try:
        from synapse.haproxy.dns_addresses import ADDRESSES

        ADDRESSES.refresh_seconds = 1.0  # (30 s in production)
    except ImportError:  # (the code before: to see the test fail)
        pass
    w = web(ports["web"], b[:1])
    api = service("api", [server("mv.test.example", b[1].port, "mv")], port=ports["api"])
    await controller.apply([w, api], "start")
    d = Path(controller.config.config_file_path).parent
    figures: dict = {"before": address(d, "api")}
    with open("/etc/hosts", "w") as hosts:  # (in place: the bind mount keeps the inode)
        hosts.write("127.0.0.1 localhost\n127.0.0.9 mv.test.example\n")
    began = time.monotonic()
    while address(d, "api") != "127.0.0.9" and time.monotonic() - began < 8:
        await asyncio.sleep(0.2)
    await controller.apply([w, api], "again")  # (a reload for another cause: not needed)
    figures["after"] = address(d, "api")
    figures["moved_s"] = time.monotonic() - began
    return figures


async def main(mode: str) -> None:
    silent_dns()
    backends = [HttpBackend(f"b{i}").start() for i in (1, 2, 3)]
    ports = {name: free_port() for name in ("web", "api", "new")}
    directory = Path(tempfile.mkdtemp(prefix="dns-"))
    config = managed_config(directory, restart_interval=0.0, reload_timeout=4.0)
    controller = HAProxyController(config, CollectorRegistry())
    await controller.start()
    try:
        figures = await (silent if mode == "silent" else moved)(controller, ports, backends)
    finally:
        await controller.stop()
        for backend in backends:
            backend.stop()
    print(json.dumps(figures))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
