"""nerve at its own open-file limit (a real RLIMIT_NOFILE): healthy services stay registered,
no maintenance flag is made up, and an admin server that gets no socket does not end the
process. A real nerve, real ZooKeeper, a real backend; the limit is lowered on the running
nerve with prlimit(2), so that it cannot open a single new file."""

from __future__ import annotations

import os
import re
import resource
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from kazoo.client import KazooClient
from nerve_testlib import (
    TIMEOUT,
    admin_get,
    children,
    nerve_config,
    unique_path,
    write_config,
    zk_service,
)

from testbed.process import free_port, wait_until
from testbed.zookeeper import ZooKeeperServer

SERVICES = 20
STARVED = 2.0  # seconds at the limit: ~10 rounds of every check


def fd_numbers(pid: int) -> set[int]:
    return {int(fd) for fd in os.listdir(f"/proc/{pid}/fd")}


def no_new_file(pid: int) -> int:
    """A limit below which every fd number is taken by one nerve holds for good (a check's
    socket comes and goes): with it, opening anything fails with EMFILE."""
    held = fd_numbers(pid)
    for _ in range(5):
        time.sleep(0.05)
        held &= fd_numbers(pid)
    return min(set(range(len(held) + 1)) - held)


def test_at_its_open_file_limit_nerve_withdraws_nothing_and_makes_up_no_flag(
    zk: ZooKeeperServer, kz: KazooClient, nerve_process, http_backend_factory, tmp_path: Path
) -> None:
    """Before: every check that could not open its socket failed (`fall` 1: the service
    withdrawn), and every flag file that could not be opened was cached as "unreadable flag
    file": /status showed the service in maintenance for the life of the process."""
    backend = http_backend_factory("web")
    paths = {f"s{i:02d}": unique_path() for i in range(SERVICES)}
    tcp = {"type": "tcp", "timeout": 1.0, "rise": 1, "fall": 1}
    services = {
        name: zk_service(zk.hosts, path, backend.port, checks=[tcp], zk_session_timeout=10)
        for name, path in paths.items()
    }
    port = free_port()
    config = nerve_config(
        services, state_dir=str(tmp_path / "state"), admin={"host": "127.0.0.1", "port": port}
    )
    nerve = nerve_process(write_config(tmp_path / "nerve.json", config))
    registered = lambda: sum(bool(children(kz, path)) for path in paths.values())  # noqa: E731
    wait_until(lambda: registered() == SERVICES, TIMEOUT, what="every registration")

    soft, hard = resource.prlimit(nerve.pid, resource.RLIMIT_NOFILE)
    resource.prlimit(nerve.pid, resource.RLIMIT_NOFILE, (no_new_file(nerve.pid), hard))
    try:
        lowest, end = SERVICES, time.monotonic() + STARVED
        while time.monotonic() < end:
            lowest = min(lowest, registered())
            time.sleep(0.05)
    finally:
        resource.prlimit(nerve.pid, resource.RLIMIT_NOFILE, (soft, hard))

    withdrawn = re.findall(r"event=service_withdrawn .*", nerve.log())
    assert (lowest, withdrawn[:2]) == (SERVICES, [])
    nerve.wait_for_log("event=check_verdict_back")  # files again: the checks answer
    log = nerve.log()
    starved = set(re.findall(r"event=check_no_verdict service=(\w+)", log))
    assert starved == set(paths)  # the limit did bite, every service's check
    assert "event=maintenance_flag_unknown" in log
    status = admin_get(port, "/status")["services"]
    assert [name for name, s in status.items() if s["maintenance"]] == []
    assert all(s["registered"] for s in status.values())
    nerve.process.stop(timeout=10)


ADMIN_WITHOUT_FILES = textwrap.dedent(
    """
    import asyncio, errno, logging, os, resource, sys
    from prometheus_client import CollectorRegistry
    from smartstack.admin import AdminServer, start_or_log

    logging.basicConfig(stream=sys.stdout, level=logging.INFO, format="%(message)s")
    loop = asyncio.new_event_loop()
    resource.setrlimit(resource.RLIMIT_NOFILE, (128, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
    held = []
    try:
        for _ in range(128):
            held.append(os.open("/dev/null", os.O_RDONLY))
    except OSError as exc:
        assert exc.errno == errno.EMFILE, exc
    admin = AdminServer("127.0.0.1", 0, CollectorRegistry(), dict)
    print("started", loop.run_until_complete(start_or_log(admin)))
    """
)


def test_an_admin_server_that_gets_no_socket_is_logged_and_nerve_goes_on(
    tmp_path: Path,
) -> None:
    """asyncio skips an address whose socket() fails (EMFILE too) and makes a server on no
    socket; before, ``sockets[0]`` raised IndexError past start_or_log (which catches
    OSError) and nerve exited 1 at start, registering nothing."""
    done = subprocess.run(
        [sys.executable, "-c", ADMIN_WITHOUT_FILES],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=tmp_path,  # (-c puts the working directory first on sys.path)
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["admin_not_started", "started False"]
