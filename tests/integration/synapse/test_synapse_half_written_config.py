"""A SIGHUP while the config file is being rewritten in place applies the whole file, not
the part written so far (real synapse, ZooKeeper, HAProxy).

Review s21 measured it: a writer truncated the file, wrote it up to ``  charlie:``, stalled
5 s and wrote the rest while SIGHUPs came every 100 ms; synapse applied the two services
written so far and reloaded HAProxy without charlie (472 requests failed over 6.15 s). The
read now waits for the writer (smartstack.config_read).
"""

from __future__ import annotations

import re
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from kazoo.client import KazooClient
from synapse_e2e import Synapse, http_get, register, wait_serving, zk_service

from testbed.process import free_port
from testbed.zookeeper import ZooKeeperServer

STALL = 3.0  # the writer's pause, with the file holding the first two services only


@contextmanager
def serving(
    zk: ZooKeeperServer, writer: KazooClient, backend: Callable, names: tuple[str, ...], at: str
) -> Iterator[tuple[Synapse, int]]:
    """synapse serving ``names`` (a ZooKeeper path under ``at`` and a backend each), and
    the port of the last one, charlie."""
    ports = {name: free_port() for name in names}
    for name in names:
        register(writer, f"{at}/{name}", backend(name))
    services = {n: zk_service(zk, f"{at}/{n}", ports[n]) for n in names}
    with Synapse(services) as syn:
        for name in names:
            wait_serving(ports[name], {name})
        yield syn, ports[names[-1]]


def call(port: int, failures: list[str]) -> None:
    try:
        status, _ = http_get(port, timeout=3)
        if status != 200:
            failures.append(f"HTTP {status}")
    except OSError as exc:
        failures.append(f"{type(exc).__name__}: {exc}")


def test_a_sighup_during_an_in_place_rewrite_keeps_every_service(
    zk: ZooKeeperServer, writer: KazooClient, http_backend_factory
) -> None:
    with serving(
        zk, writer, http_backend_factory, ("alpha", "bravo", "charlie"), "/halfwritten"
    ) as (syn, port):
        text = syn.config_path.read_text()
        cut = text.index("  charlie:")  # (yaml.safe_dump sorts: charlie comes last)
        stop = threading.Event()
        failures: list[str] = []

        def hup_and_call() -> None:
            while not stop.is_set():
                syn.signal(signal.SIGHUP)
                call(port, failures)
                time.sleep(0.1)

        thread = threading.Thread(target=hup_and_call)
        thread.start()
        try:
            with syn.config_path.open("w") as file:  # the same content, written slowly
                file.write(text[:cut])
                file.flush()
                time.sleep(STALL)
                file.write(text[cut:])
            time.sleep(2.0)  # (the reloads the last SIGHUPs started)
        finally:
            stop.set()
            thread.join()
        syn.signal(signal.SIGHUP)
        time.sleep(1.0)
        log = syn.process.log_path.read_text(errors="replace")
        reloaded = re.findall(r"event=config_reloaded .* services=(\d+)", log)
        assert reloaded and set(reloaded) == {"3"}, reloaded
        assert failures == [], failures[:5]


def gt_then_gtgt(syn: Synapse, port: int, text: str, cut: int) -> tuple[list[str], str]:
    """``>`` text[:cut], SIGHUP, 1.2 s, ``>>`` the rest; the failed requests to ``port``
    over the next 5 s and synapse's log."""
    syn.config_path.write_text(text[:cut])  # `>`
    syn.signal(signal.SIGHUP)
    time.sleep(1.2)
    with syn.config_path.open("a") as file:  # `>>`
        file.write(text[cut:])
    failures: list[str] = []
    deadline = time.monotonic() + 5.0  # (the held reload, ~2.5 s, and HAProxy's)
    while time.monotonic() < deadline:
        call(port, failures)
        time.sleep(0.1)
    return failures, syn.process.log_path.read_text(errors="replace")


def test_a_sighup_between_gt_and_gtgt_applies_the_complete_file(
    zk: ZooKeeperServer, writer: KazooClient, http_backend_factory
) -> None:
    """Review s32: ``>`` a first part that is valid YAML without the last service, SIGHUP,
    a pause of 1.0 s, ``>>`` the rest. No writer has the file open at the SIGHUP: synapse
    applied ``services=1`` and 496 of 562 requests to the service cut off failed, until
    the next SIGHUP. A reload of a file written in place a moment ago now waits for it to
    be still (smartstack.reload_settle)."""
    with serving(zk, writer, http_backend_factory, ("alpha", "charlie"), "/gtgt") as (syn, port):
        text = syn.config_path.read_text()
        cut = text.index("  charlie:")  # (yaml.safe_dump sorts: charlie comes last)
        failures, log = gt_then_gtgt(syn, port, text, cut)
        reloaded = re.findall(r"event=config_reloaded .* services=(\d+)", log)
        assert reloaded == ["2"], reloaded
        assert "event=config_reload_held" in log
        assert failures == [], failures[:5]


def test_a_gt_gtgt_prefix_without_a_frontends_port_line_is_not_applied(
    zk: ZooKeeperServer, writer: KazooClient, http_backend_factory
) -> None:
    """Review s32 (cr-f): a prefix cut before the last service's ``port`` line removes no
    service, so a hold on removals let it through: the frontend went, 263 of 280 requests
    to it failed. The hold now follows how the file was written: in place (same inode)
    a moment ago, whatever the reload would do (smartstack.reload_settle)."""
    with serving(zk, writer, http_backend_factory, ("alpha", "charlie"), "/gtgtport") as (
        syn,
        port,
    ):
        text = syn.config_path.read_text()
        cut = text.rindex(f"port: {port}")  # (charlie's frontend port: its last lines)
        cut = text.rindex("\n", 0, cut) + 1
        failures, log = gt_then_gtgt(syn, port, text, cut)
        assert failures == [], (len(failures), failures[:3])
        assert f"changed={syn.config_path}" in log, "no config_reload_held"
