"""nerve's host-wide name (smartstack.identity_lock) through reloads, squatters and large
configs: real nerve processes, real ZooKeeper (review s28 of the name per registration).

HIGH-1: a SIGHUP that added a registration another nerve held was refused whole, so a
service moved from nerve A to nerve B, B reloaded first, was withdrawn by A and registered
by nobody. HIGH-2: a descriptor per registration: a nerve of 1,100 services died of EMFILE
at the default limit of 1,024. MEDIUM-1: any local user could bind the name first and keep
nerve from starting. Now one name per nerve (its set of registrations), a reload is never
refused for it, and a name held by another user's process is passed with a warning.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from kazoo.client import KazooClient
from nerve_testlib import children, nerve_config, unique_path, until, write_config, zk_service
from test_one_copy import second_copy

from nerve.config import NerveConfig
from smartstack.identity_lock import socket_name
from smartstack.instance_lock import nerve_identities
from testbed.process import free_port
from testbed.zookeeper import ZooKeeperServer

NOBODY = 65534


def _name(config: dict) -> str:
    [identity] = nerve_identities(NerveConfig.model_validate(config))
    return socket_name("nerve", identity)


def _bound(config: dict) -> bool:
    """Whether some process holds this config's name (/proc/net/unix)."""
    return f"@{_name(config)}" in Path("/proc/net/unix").read_text()


async def test_a_service_moved_to_a_nerve_reloaded_first_stays_registered(
    zk: ZooKeeperServer, kz: KazooClient, tmp_path: Path, nerve_process
) -> None:
    # before: B's whole reload was refused (x: A registers it), then A dropped x: x was
    # registered nowhere for good and b2 never (move.py: x at 0 in 194 of 197 samples)
    paths = {name: unique_path() for name in ("x", "a1", "b1", "b2")}
    svc = {name: zk_service(zk.hosts, p, free_port(), checks=[]) for name, p in paths.items()}
    a_config = nerve_config({"x": svc["x"], "a1": svc["a1"]})
    a_path = write_config(tmp_path / "a.json", a_config)
    b_path = write_config(tmp_path / "b.json", nerve_config({"b1": svc["b1"]}))
    a, b = nerve_process(a_path), nerve_process(b_path)
    await until(lambda: all(children(kz, paths[n]) for n in ("x", "a1", "b1")),
                what="both registered")  # fmt: skip
    b_new = nerve_config({"b1": svc["b1"], "x": svc["x"], "b2": svc["b2"]})
    a_new = nerve_config({"a1": svc["a1"]})
    write_config(b_path, b_new)
    write_config(a_path, a_new)
    b.signal(signal.SIGHUP)  # (config management's order: the receiver first)
    await until(lambda: "config_reloaded" in b.log(), what="B's reload applied")
    a.signal(signal.SIGHUP)
    await until(lambda: "config_reloaded" in a.log(), what="A's reload applied")
    seen = []
    for _ in range(30):  # 3 s after both reloads
        seen.append(len(children(kz, paths["x"])))
        time.sleep(0.1)
    assert seen[-1] == 1 and min(seen[10:]) == 1, seen
    assert len(children(kz, paths["b2"])) == 1
    assert "config_rejected" not in a.log() + b.log()
    assert _bound(b_new) and _bound(a_new) and not _bound(a_config)  # (each its new set's)


async def test_a_reload_to_another_nerves_very_set_is_refused(
    zk: ZooKeeperServer, kz: KazooClient, tmp_path: Path, nerve_process
) -> None:
    # before: applied with instance_lock_reload_clash; the first nerve was stood aside, and
    # once the reloaded one stopped web was registered nowhere (clash_x.py: 0 in 99 of 99)
    paths = {name: unique_path() for name in ("web", "api", "db")}
    svc = {name: zk_service(zk.hosts, p, free_port(), checks=[]) for name, p in paths.items()}
    a_config, b_config = nerve_config({"web": svc["web"]}), nerve_config({"api": svc["api"]})
    first = nerve_process(write_config(tmp_path / "a.json", a_config))
    second_path = write_config(tmp_path / "b.json", b_config)
    second = nerve_process(second_path)
    for nerve in (first, second):
        nerve.wait_for_log("znode_created")
    write_config(second_path, a_config)  # b now is a's copy: refused, b's config stays
    second.signal(signal.SIGHUP)
    await until(lambda: "config_rejected" in second.log(), what="the reload refused")
    log = second.log()
    assert f"another nerve (pid {first.pid}, config {tmp_path / 'a.json'})" in log
    assert "config_reloaded" not in log and "registration_taken_over" not in first.log()
    assert _bound(b_config) and _bound(a_config)
    second.signal(signal.SIGTERM)
    second.wait(20)
    seen = []
    for _ in range(20):  # 2 s after the second stopped: the first still registers web
        seen.append(len(children(kz, paths["web"])))
        time.sleep(0.1)
    assert min(seen) == 1, seen
    own = nerve_config({"api": svc["api"], "db": svc["db"]})
    third_path = write_config(tmp_path / "c.json", b_config)
    third = nerve_process(third_path)
    third.wait_for_log("znode_created")
    write_config(third_path, own)
    third.signal(signal.SIGHUP)  # a set of its own: taken, the old name let go
    await until(lambda: "config_reloaded" in third.log(), what="the next reload")
    await until(lambda: not _bound(b_config), what="the old name let go")
    assert _bound(own) and _bound(a_config)
    await until(lambda: [len(children(kz, paths[n])) for n in ("api", "db")] == [1, 1],
                what="api and db registered")  # fmt: skip


def _shared_dir() -> Path:
    """A directory another user reaches (pytest's tmp_path is 0700)."""
    shared = Path(tempfile.mkdtemp(prefix="nerve-twouser-"))
    shared.chmod(0o777)
    return shared


async def test_a_root_copy_through_a_link_waits_for_a_service_users_nerve(
    zk: ZooKeeperServer, kz: KazooClient
) -> None:
    # before: root took the service user's nerve (uid 65534) for a squatter, ran beside it,
    # stood it aside, and once stopped left 0 znodes for good (twouser2.py: 123 of 123)
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv (to run the holder as another user)")
    shared = _shared_dir()
    (shared / "app").mkdir(mode=0o777)
    (shared / "etc").mkdir()
    (shared / "app").chmod(0o777)
    path = unique_path()
    config = nerve_config({"web": zk_service(zk.hosts, path, free_port(), checks=[])})
    config_path = write_config(shared / "app" / "nerve.json", config)
    config_path.chmod(0o644)
    (shared / "etc" / "nerve.json").symlink_to("../app/nerve.json")
    as_nobody = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
    first = second_copy(config_path, shared, 15, name="nerve-a", prefix=as_nobody)
    root_copy = None
    try:
        await until(lambda: children(kz, path) or not first.alive, timeout=30, what="registered")
        assert first.alive
        root_copy = second_copy(shared / "etc" / "nerve.json", shared, 2)
        await until(lambda: not root_copy.alive, timeout=30, what="the root copy gives up")
        assert root_copy.returncode == 1
        log = root_copy.log_path.read_text()
        assert "instance_lock_waiting" in log and "instance_lock_squatted" not in log
        seen = []
        for _ in range(20):  # 2 s: the service user's nerve still registers web
            seen.append(len(children(kz, path)))
            time.sleep(0.1)
        assert min(seen) == 1 and "registration_taken_over" not in first.log_path.read_text()
    finally:
        for nerve in (root_copy, first):
            if nerve is not None:
                nerve.stop(timeout=20)
        shutil.rmtree(shared, ignore_errors=True)


async def test_a_name_squatted_by_another_user_is_passed_with_a_warning(
    zk: ZooKeeperServer, kz: KazooClient, tmp_path: Path
) -> None:
    # before: nerve waited the whole bound, then exited 1 naming nobody's process (squat.py)
    if os.geteuid() == 0 and shutil.which("setpriv") is None:
        pytest.skip("needs setpriv")
    if os.geteuid() != 0:
        pytest.skip("needs root (to run the squatter as another user)")
    path = unique_path()
    config = nerve_config({"web": zk_service(zk.hosts, path, free_port(), checks=[])})
    bind = (
        "import socket, sys, time; s = socket.socket(socket.AF_UNIX); s.bind('\\0' +"
        " sys.argv[1]); s.listen(1); print('bound', flush=True); time.sleep(60)"
    )
    squatter = subprocess.Popen(
        ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
         sys.executable, "-c", bind, _name(config)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    nerve = None
    try:
        assert squatter.stdout is not None and squatter.stdout.readline().strip() == "bound"
        started = time.monotonic()
        nerve = second_copy(write_config(tmp_path / "nerve.json", config), tmp_path, 15)
        await until(lambda: children(kz, path) or not nerve.alive, timeout=30, what="registered")
        assert time.monotonic() - started < 5 and nerve.alive
        log = nerve.log_path.read_text()
        assert log.count("instance_lock_squatted") == 1
        assert f"holder_pid={squatter.pid} holder_uid={NOBODY}" in log
    finally:
        if nerve is not None:
            nerve.stop(timeout=20)
        squatter.kill()
        squatter.wait()


def _descriptors(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _identity_names(pid: int) -> int:
    """The identity lock's abstract sockets ``pid`` holds (the host's other nerves, of other
    tests or sessions, are not counted: round 32 saw 4 on a shared host)."""
    held = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            held.add(os.readlink(f"/proc/{pid}/fd/{fd}"))
    rows = [line.split() for line in Path("/proc/net/unix").read_text().splitlines()[1:]]
    return sum(
        1 for r in rows if r[-1].startswith("@smartstack-nerve-") and f"socket:[{r[6]}]" in held
    )


async def test_a_nerve_of_300_services_holds_one_name(
    zk: ZooKeeperServer, kz: KazooClient, tmp_path: Path, nerve_process
) -> None:
    # before: a descriptor per registration, 300 more than a nerve of one service
    path = unique_path()
    one = nerve_process(write_config(tmp_path / "one.json", nerve_config(
        {"s0": zk_service(zk.hosts, unique_path(), 40000, checks=[])})))  # fmt: skip
    one.wait_for_log("znode_created")
    services = {f"s{i}": zk_service(zk.hosts, path, 40000 + i, checks=[]) for i in range(300)}
    many = nerve_process(write_config(tmp_path / "many.json", nerve_config(services)))
    await until(lambda: len(children(kz, path)) == 300, timeout=60, what="300 registered")
    assert _descriptors(many.pid) - _descriptors(one.pid) <= 2
    assert _identity_names(one.pid) == _identity_names(many.pid) == 1  # (one each)
