"""SIGUSR2, the restart stop: nerve exits 0 leaving its healthy registrations for the next
nerve (as kill -9 does, cleanly), so a restart or upgrade takes no healthy instance out of
the registry; without a successor they go with the session timeout / lease TTL.

Real nerve processes (`.venv/bin/nerve -c FILE`), real ZooKeeper and etcd. An independent
watcher polls the registry every 10 ms from a thread of its own."""

from __future__ import annotations

import base64
import json
import signal
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml
from kazoo.client import KazooClient
from nerve_testlib import (
    LEASE_TTL,
    TIMEOUT,
    ZK_SESSION,
    NerveProcess,
    children,
    etcd_service,
    nerve_config,
    unique_path,
    write_config,
    zk_service,
)

from testbed.etcd import EtcdCluster
from testbed.process import wait_until
from testbed.zookeeper import ZooKeeperServer

StartNerve = Callable[[Path], NerveProcess]
Read = Callable[[], dict[str, str]]  # the registrations now: name -> owner (session / lease)

# Long enough for nerve A's exit and nerve B's start on a loaded 2-core machine: B must
# find A's registration before it expires (the test is about the hand-over, not the race).
HANDOVER_SESSION = 15.0
HANDOVER_TTL = 15
RISE, INTERVAL = 3, 0.3


def _zk_reader(kz: KazooClient, path: str) -> Read:
    def read() -> dict[str, str]:
        found = {}
        for child in children(kz, path):
            stat = kz.exists(f"{path}/{child}")
            if stat is not None:
                found[child] = hex(stat.ephemeralOwner)
        return found

    return read


def _etcd_reader(cluster: EtcdCluster, path: str) -> Read:
    endpoint = cluster.endpoints[0]
    url = f"{endpoint if endpoint.startswith('http') else 'http://' + endpoint}/v3/kv/range"
    body = json.dumps({"key": _b64(f"{path}/"), "range_end": _b64(f"{path}0")}).encode()

    def read() -> dict[str, str]:
        with urllib.request.urlopen(urllib.request.Request(url, data=body), timeout=2) as r:
            kvs = json.loads(r.read()).get("kvs", [])
        return {base64.b64decode(kv["key"]).decode(): kv.get("lease", "0") for kv in kvs}

    return read


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


@pytest.fixture(params=["zookeeper", "etcd"])
def registry(request, zk: ZooKeeperServer, kz: KazooClient, etcd: EtcdCluster):
    """(registry kind, a service block factory, a reader factory) for one path."""
    path = unique_path()

    def service(port: int, handover: bool) -> dict:
        checks = [{"type": "http", "uri": "/health", "timeout": 1.0, "rise": RISE, "fall": 2}]
        if request.param == "zookeeper":
            timeout = HANDOVER_SESSION if handover else ZK_SESSION
            return zk_service(zk.hosts, path, port, check_interval=INTERVAL, checks=checks,
                              zk_session_timeout=timeout)  # fmt: skip
        ttl = HANDOVER_TTL if handover else LEASE_TTL
        return etcd_service(etcd.endpoints, path, port, check_interval=INTERVAL, checks=checks,
                            etcd_lease_ttl=ttl)  # fmt: skip

    read = _zk_reader(kz, path) if request.param == "zookeeper" else _etcd_reader(etcd, path)
    return request.param, service, read


@contextmanager
def watching(read: Read) -> Iterator[list[tuple[float, dict[str, str] | str]]]:
    """Every 10 ms, what the registry holds (or the read's error), from its own thread."""
    samples: list[tuple[float, dict[str, str] | str]] = []
    stop = threading.Event()

    def watch() -> None:
        deadline = time.monotonic() + 120  # bounded, whatever happens to the test
        while not stop.is_set() and time.monotonic() < deadline:
            try:
                samples.append((time.monotonic(), read()))
            except Exception as exc:  # recorded: the test fails on it
                samples.append((time.monotonic(), repr(exc)))
            time.sleep(0.01)

    thread = threading.Thread(target=watch, name="registry-watcher", daemon=True)
    thread.start()
    try:
        yield samples
    finally:
        stop.set()
        thread.join(5)


def _registered_nerve(
    registry, http_backend_factory, tmp_path: Path, nerve_process: StartNerve, handover: bool
) -> tuple[Path, NerveProcess, dict[str, str]]:
    """nerve with one healthy service, registered: (config file, process, registration)."""
    _, service, read = registry
    backend = http_backend_factory()
    block = service(backend.port, handover)
    config = write_config(tmp_path / "nerve.json", nerve_config({"web": block}))
    nerve = nerve_process(config)
    return config, nerve, wait_until(read, TIMEOUT, what="the registration", interval=0.05)


def _restart_stop(nerve: NerveProcess) -> None:
    nerve.signal(signal.SIGUSR2)
    rc = nerve.wait(15)
    assert rc == 0, f"SIGUSR2: exit status {rc} (a negative one: killed by the signal)"
    assert "event=registrations_left" in nerve.log(), nerve.log()[-2000:]


def test_restart_stop_then_start_never_leaves_the_registry_without_the_instance(
    registry, http_backend_factory, tmp_path: Path, nerve_process: StartNerve
) -> None:
    kind, read = registry[0], registry[2]
    config, nerve_a, before = _registered_nerve(registry, http_backend_factory, tmp_path,
                                                nerve_process, handover=True)  # fmt: skip
    with watching(read) as samples:
        time.sleep(0.2)
        _restart_stop(nerve_a)
        left = read()
        assert left == before, "the restart stop withdrew or changed the registration"
        nerve_b = nerve_process(config)
        # B holds A's leftover while its checks decide, then writes its own in its place.
        wait_until(lambda: (now := read()) and now != before and len(now) == 1, TIMEOUT,
                   what="nerve B's registration replacing A's", interval=0.05)  # fmt: skip
        time.sleep(0.2)
    errors = [s for _, s in samples if isinstance(s, str)]
    assert not errors, errors[:3]
    missing = [t for t, s in samples if not s]
    assert len(samples) >= 20 and not missing, f"{kind}: no registration at {len(missing)} samples"
    # Replaced, not doubled: B's node (ZooKeeper) or the same key on B's lease (etcd).
    [(name, owner)] = read().items()
    [(old_name, old_owner)] = before.items()
    assert owner != old_owner
    assert (name != old_name) if kind == "zookeeper" else (name == old_name)
    assert "event=registrations_left" not in nerve_b.log()


def test_restart_stop_without_a_successor_leaves_the_registration_until_it_expires(
    registry, http_backend_factory, tmp_path: Path, nerve_process: StartNerve
) -> None:
    kind, read = registry[0], registry[2]
    _, nerve, before = _registered_nerve(registry, http_backend_factory, tmp_path, nerve_process,
                                         handover=False)  # fmt: skip
    _restart_stop(nerve)
    stopped = time.monotonic()
    # Left, nobody withdrew it. (The log says so: read now, the registration may already
    # be in the last second of its lease on a loaded machine.)
    assert "left=1" in nerve.log() and "withdrawn=0" in nerve.log(), nerve.log()[-2000:]
    assert read() in (before, {})
    bound = ZK_SESSION if kind == "zookeeper" else LEASE_TTL
    assert f"expire_within_s={float(bound)}" in nerve.log()
    wait_until(
        lambda: not read(), bound + 10, what="the left registration to expire", interval=0.05
    )
    assert time.monotonic() - stopped <= bound + 10


def test_restart_stop_exits_0_quickly_with_the_registries_down(
    tmp_path: Path, nerve_process: StartNerve
) -> None:
    """Dropping a session that is reconnecting (its server gone) does not hold up the exit."""
    from testbed.process import free_port

    server = ZooKeeperServer(workdir=tmp_path / "zk").start()
    cluster = EtcdCluster(size=1, workdir=tmp_path / "etcd").start()
    try:
        path, port = unique_path(), free_port()  # no checks: always healthy
        services = {
            "zk": zk_service(server.hosts, path, port, checks=[]),
            "etcd": etcd_service(cluster.endpoints, path, port, checks=[]),
        }
        nerve = nerve_process(write_config(tmp_path / "nerve.json", nerve_config(services)))
        nerve.wait_for_log("etcd_key_put")
        nerve.wait_for_log("znode_created")
        server.kill()
        cluster.kill_member(0)
        time.sleep(0.5)  # (the session reconnecting meanwhile)
        sent = time.monotonic()
        nerve.signal(signal.SIGUSR2)
        assert nerve.wait(15) == 0
        assert time.monotonic() - sent < 5
    finally:
        server.stop()
        cluster.stop()


@pytest.mark.parametrize("kind", ["zookeeper", "etcd"])
@pytest.mark.parametrize("edit", ["unchanged", "api_removed"])
def test_a_reload_that_changed_nothing_yet_does_not_withdraw_the_instance(
    kind: str, edit: str, zk: ZooKeeperServer, kz: KazooClient, etcd: EtcdCluster,
    http_backend_factory, tmp_path: Path, nerve_process: StartNerve,
) -> None:  # fmt: skip
    """SIGHUP then SIGUSR2 at once, while the reload still waits for its config check (a
    child process): the reload is dropped and the registrations are left as usual, as after
    a file edited without a SIGHUP. Before (review s32) such a stop withdrew everything: a
    SIGHUP of an unchanged file 0.1 s before took web and api out for 2.55 s. A service the
    new file removes is left too and goes by itself with its session / lease, as after a
    restart on an edited file (the next nerve does not have it)."""
    web_path, api_path = unique_path(), unique_path()

    def block(path: str) -> dict:
        port = http_backend_factory().port
        if kind == "zookeeper":
            return zk_service(zk.hosts, path, port, zk_session_timeout=HANDOVER_SESSION)
        return etcd_service(etcd.endpoints, path, port, etcd_lease_ttl=HANDOVER_TTL)

    reader = (
        (lambda p: _zk_reader(kz, p)) if kind == "zookeeper" else (lambda p: _etcd_reader(etcd, p))
    )
    both = {"web": block(web_path), "api": block(api_path)}
    config = write_config(tmp_path / "nerve.json", nerve_config(both))
    nerve = nerve_process(config)
    wait_until(lambda: reader(web_path)() and reader(api_path)(), TIMEOUT, what="both registered",
               interval=0.05)  # fmt: skip
    before = reader(web_path)(), reader(api_path)()
    if edit == "api_removed":
        write_config(config, nerve_config({"web": both["web"]}))
    nerve.signal(signal.SIGHUP)
    time.sleep(0.02)  # (the reload's config check, a child process, takes far longer)
    _restart_stop(nerve)
    log = nerve.log()
    assert "event=restart_stop_withdraws_all" not in log, log[-2000:]
    assert "left=2" in log and "withdrawn=0" in log, log[-2000:]
    assert "event=config_reloaded" not in log, "the reload was applied during the stop"
    # Left, not deleted: the same node / key on the same session / lease (15 s: how long
    # they last is test_restart_stop_without_a_successor_leaves_the_registration_...'s).
    assert (reader(web_path)(), reader(api_path)()) == before


def test_a_persistent_znode_is_withdrawn_by_the_restart_stop(
    zk: ZooKeeperServer, kz: KazooClient, http_backend_factory, tmp_path: Path,
    nerve_process: StartNerve,
) -> None:  # fmt: skip
    """A persistent node has no session to expire with: left, it would stay for good."""
    path = unique_path()
    block = zk_service(zk.hosts, path, http_backend_factory().port, node_type="persistent")
    nerve = nerve_process(write_config(tmp_path / "nerve.json", nerve_config({"web": block})))
    read = _zk_reader(kz, path)
    wait_until(read, TIMEOUT, what="the registration", interval=0.05)
    nerve.signal(signal.SIGUSR2)
    assert nerve.wait(15) == 0
    assert read() == {}, "a persistent node was left (it never expires)"
    assert "event=registrations_left" not in nerve.log()


def test_a_restart_stop_during_a_held_reload_applies_it_first(
    zk: ZooKeeperServer, kz: KazooClient, http_backend_factory, tmp_path: Path,
    nerve_process: StartNerve,
) -> None:  # fmt: skip
    """api removed by a YAML file written in place (so the reload is held until the file
    has been still for 2 s: smartstack.reload_settle; a whole JSON object would not be),
    SIGHUP, SIGUSR2 during the hold: the reload is applied when the hold ends (api
    withdrawn), then the restart stop leaves web.
    Before (review s32, cr-f usr2hold) the held reload was dropped and api stayed in
    ZooKeeper for a next nerve that has no such service (10 s after the old one exited)."""
    web_path, api_path = unique_path(), unique_path()

    def block(path: str) -> dict:
        port = http_backend_factory().port
        return zk_service(zk.hosts, path, port, zk_session_timeout=HANDOVER_SESSION)

    both = {"web": block(web_path), "api": block(api_path)}
    config = write_config(tmp_path / "nerve.yaml", nerve_config(both))
    nerve = nerve_process(config)
    web, api = _zk_reader(kz, web_path), _zk_reader(kz, api_path)
    wait_until(lambda: web() and api(), TIMEOUT, what="both registered", interval=0.05)
    before = web()
    text = yaml.safe_dump(nerve_config({"web": both["web"]}))
    config.write_text(text)  # in place: the same inode
    nerve.signal(signal.SIGHUP)
    for _ in range(3):  # (rewritten in place every 0.5 s: the hold lasts past the SIGUSR2,
        time.sleep(0.5)  # its config check, a child process, long done by then)
        config.write_text(text)
    _restart_stop(nerve)
    log = nerve.log()
    assert "event=config_reload_held" in log and "event=config_reloaded" in log, log[-2000:]
    assert "event=restart_stop_withdraws_all" not in log, log[-2000:]
    assert "left=1" in log, log[-2000:]
    assert api() == {}, "api, removed by the held reload, was left registered"
    assert web() == before
