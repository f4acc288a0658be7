"""nerve against a real ZooKeeper (standalone and a 3-node ensemble), in process."""

from __future__ import annotations

import asyncio
import json
import re
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from kazoo.client import KazooClient
from kazoo.exceptions import NoAuthError
from kazoo.security import Permissions
from nerve_testlib import (
    TIMEOUT,
    admin_get,
    children,
    nerve_config,
    running_nerve,
    unique_path,
    until,
    zk_service,
)

from nerve.config import NerveConfig
from nerve.daemon import NerveDaemon
from nerve.reporters.zookeeper import ZooKeeperReporter
from smartstack.record import Registration, decode_child_name, encode, encode_child_prefix
from testbed.process import free_port
from testbed.zookeeper import (
    ZooKeeperEnsemble,
    ZooKeeperServer,
    expire_session,
)

NAME = re.compile(r"^i-test_\d{10}$")


def zk_reporter(daemon: NerveDaemon, service: str) -> ZooKeeperReporter:
    reporter = daemon.services[service].reporter
    assert isinstance(reporter, ZooKeeperReporter)
    return reporter


async def test_register_withdraw_reregister_in_nerves_format(
    zk: ZooKeeperServer, kz: KazooClient, http_backend_factory
) -> None:
    backend = http_backend_factory()
    path = unique_path()
    rise, fall, interval = 3, 2, 0.3
    service = zk_service(
        zk.hosts,
        path,
        backend.port,
        check_interval=interval,
        weight=7,
        labels={"az": "a1"},
        checks=[{"type": "http", "uri": "/health", "timeout": 1, "rise": rise, "fall": fall}],
    )
    started = time.monotonic()
    async with running_nerve(nerve_config({"web": service})) as daemon:
        first = await until(lambda: children(kz, path), what="registration")
        elapsed = time.monotonic() - started
        # (from before the daemon's start: its session and first rounds; 2.5 s of it was
        # seen at load 12-15 on 2 cores. A wait for a session timeout or a 5 s hand-over
        # would still fail it.)
        assert elapsed <= rise * interval + 2.5
        assert elapsed >= (rise - 1) * interval - 0.05  # not before `rise` passing rounds
        assert len(first) == 1 and NAME.match(first[0]), first
        data, stat = kz.get(f"{path}/{first[0]}")
        expected = Registration("127.0.0.1", backend.port, "i-test", 7, {"az": "a1"})
        assert data == encode(expected)
        assert json.loads(data) == {
            "host": "127.0.0.1",
            "port": backend.port,
            "name": "i-test",
            "weight": 7,
            "labels": {"az": "a1"},
        }
        assert stat.ephemeralOwner == zk_reporter(daemon, "web").conn.client.client_id[0]

        backend.stop()
        stopped = time.monotonic()
        await until(lambda: not children(kz, path), what="withdrawal")
        assert time.monotonic() - stopped <= fall * interval + 1

        backend.start()
        restarted = time.monotonic()
        again = await until(lambda: children(kz, path), what="re-registration")
        assert time.monotonic() - restarted <= rise * interval + 1
        assert NAME.match(again[0]) and again != first  # a new sequence number

        def writes(op: str) -> float | None:
            labels = {"service": "web", "registry": "zookeeper", "op": op}
            return daemon.metrics.registry.get_sample_value("nerve_registry_writes_total", labels)

        await until(lambda: (writes("register") or 0) >= 2, what="the write to be counted")
        assert (writes("register"), writes("withdraw")) == (2.0, 1.0)  # one per transition
    assert children(kz, path) == []  # stop() withdrew it


async def test_path_encoding_and_node_types(zk: ZooKeeperServer, kz: KazooClient) -> None:
    base = unique_path()
    port = free_port()
    services = {
        "encoded": zk_service(zk.hosts, f"{base}/enc", port, checks=[], use_path_encoding=True),
        "plain": zk_service(zk.hosts, f"{base}/eph", port, checks=[], node_type="ephemeral"),
        "kept": zk_service(zk.hosts, f"{base}/per", port, checks=[], node_type="persistent"),
    }
    record = Registration("127.0.0.1", port, "i-test")
    async with running_nerve(nerve_config(services)) as daemon:
        await until(lambda: all(children(kz, f"{base}/{p}") for p in ("enc", "eph", "per")))
        [encoded] = children(kz, f"{base}/enc")
        prefix = encode_child_prefix(record)
        assert prefix is not None and encoded.startswith(prefix)
        assert re.fullmatch(r"\d{10}", encoded[len(prefix) :])
        assert decode_child_name(encoded) == record
        assert children(kz, f"{base}/eph") == ["i-test_"]
        session = zk_reporter(daemon, "plain").conn.client.client_id[0]
        assert kz.get(f"{base}/eph/i-test_")[1].ephemeralOwner == session
        [persistent] = children(kz, f"{base}/per")
        assert kz.get(f"{base}/per/{persistent}")[1].ephemeralOwner == 0
    assert children(kz, f"{base}/per") == []  # withdrawn on stop, although persistent


async def test_leftover_of_a_previous_run_is_replaced_not_duplicated(
    zk: ZooKeeperServer, kz: KazooClient
) -> None:
    path = unique_path()
    port = free_port()
    record = encode(Registration("127.0.0.1", port, "i-test"))
    other_record = encode(Registration("127.0.0.1", port + 1, "i-test"))
    # A previous nerve run's node (still alive: its session has not timed out yet), a node
    # of the same instance for another service, and another instance's node.
    leftover = kz.create(f"{path}/i-test_", record, ephemeral=True, sequence=True, makepath=True)
    sibling = kz.create(f"{path}/i-test_", other_record, ephemeral=True, sequence=True)
    foreign = kz.create(f"{path}/i-other_", record, ephemeral=True, sequence=True)

    async with running_nerve(nerve_config({"web": zk_service(zk.hosts, path, port, checks=[])})):

        def ours() -> list[str]:
            return [
                f"{path}/{c}"
                for c in children(kz, path)
                if c.startswith("i-test_") and kz.get(f"{path}/{c}")[0] == record
            ]

        [mine] = await until(lambda: (nodes := ours()) and leftover not in nodes and nodes)
        assert set(ours()) == {mine}  # one registration, the leftover is gone
        assert {f"{path}/{c}" for c in children(kz, path)} == {mine, sibling, foreign}


async def test_leftover_written_with_label_values_as_text_is_replaced_not_duplicated(
    zk: ZooKeeperServer, kz: KazooClient
) -> None:
    # nerve before 4908bdc wrote label numbers and booleans as text; a restart stop leaves
    # its node for the upgraded nerve, which writes them as they are: the same record to
    # every reader, in other bytes. Unrecognised, it stood beside ours for the whole session
    # timeout (review cr36-airbnb: 2 records for 5.5 s of a 6 s session).
    path = unique_path()
    port = free_port()
    old = b'{"host":"127.0.0.1","port":%d,"name":"i-test","labels":{"tier":"1","canary":"true"}}'
    leftover = kz.create(
        f"{path}/i-test_", old % port, ephemeral=True, sequence=True, makepath=True
    )
    other_record = old.replace(b'"1"', b'"2"') % port  # another service's: other labels
    other = kz.create(f"{path}/i-test_", other_record, ephemeral=True, sequence=True)
    labels = {"tier": 1, "canary": True}
    service = zk_service(zk.hosts, path, port, checks=[], labels=labels)
    async with running_nerve(nerve_config({"web": service})):
        want = encode(Registration("127.0.0.1", port, "i-test", labels=labels))

        def ours() -> list[str]:
            return [f"{path}/{c}" for c in children(kz, path) if f"{path}/{c}" != other]

        [mine] = await until(lambda: (nodes := ours()) and leftover not in nodes and nodes)
        assert kz.get(mine)[0] == want
        assert {f"{path}/{c}" for c in children(kz, path)} == {mine, other}


async def test_session_expiry_re_registers_within_two_seconds_of_reconnection(
    zk: ZooKeeperServer, kz: KazooClient
) -> None:
    path = unique_path()
    service = zk_service(zk.hosts, path, free_port(), checks=[])
    async with running_nerve(nerve_config({"web": service})) as daemon:
        [before] = await until(lambda: children(kz, path), what="registration")
        conn = zk_reporter(daemon, "web").conn
        old_session = conn.client.client_id[0]
        reconnected: list[float] = []
        conn.add_listener(lambda s: s == "new_session" and reconnected.append(time.monotonic()))

        await asyncio.to_thread(expire_session, conn.client)

        after = await until(
            lambda: [c for c in children(kz, path) if c != before], what="re-registration"
        )
        seen = time.monotonic()
        await until(lambda: reconnected, what="the new session event")
        assert seen - reconnected[0] < 2.0
        new_session = conn.client.client_id[0]
        assert new_session != old_session
        assert kz.get(f"{path}/{after[0]}")[1].ephemeralOwner == new_session
        assert children(kz, path) == after  # exactly one registration
        metrics = admin_free_metrics(daemon)
        assert (
            'nerve_registry_reconnects_total{event="new_session",registry="zookeeper"}' in metrics
        )


def admin_free_metrics(daemon: NerveDaemon) -> str:
    from prometheus_client import generate_latest

    return generate_latest(daemon.metrics.registry).decode()


async def test_a_check_that_never_answers_does_not_delay_another_service(
    zk: ZooKeeperServer, kz: KazooClient, http_backend_factory
) -> None:
    base = unique_path()
    backend = http_backend_factory()
    hung = {"type": "exec", "command": "sleep 60", "timeout": 8}
    services = {
        "stuck": zk_service(zk.hosts, f"{base}/stuck", free_port(), checks=[hung]),
        "fine": zk_service(
            zk.hosts,
            f"{base}/fine",
            backend.port,
            checks=[{"type": "http", "uri": "/health", "timeout": 1, "rise": 2}],
        ),
    }
    started = time.monotonic()
    async with running_nerve(nerve_config(services)) as daemon:
        await until(lambda: children(kz, f"{base}/fine"), what="the healthy service")
        # Registered before the hung check's 8 s timeout: it did not wait for it ...
        assert time.monotonic() - started < 8
        assert daemon.services["stuck"].rounds == 0  # ... whose first round still hangs
        assert children(kz, f"{base}/stuck") == []


async def test_maintenance_withdraws_at_once_and_survives_a_restart(
    zk: ZooKeeperServer, kz: KazooClient, tmp_path: Path
) -> None:
    path = unique_path()
    config = nerve_config(
        {"web": zk_service(zk.hosts, path, free_port(), checks=[])}, admin={"port": 0}
    )
    config_path = tmp_path / "nerve.json"
    async with running_nerve(config, config_path) as daemon:
        await until(lambda: children(kz, path), what="registration")
        assert daemon.admin is not None
        port = daemon.admin.port
        answer = await asyncio.to_thread(
            post_json, port, "/maintenance/web", {"reason": "disk swap"}
        )
        assert answer["maintenance"]["reason"] == "disk swap"
        await until(lambda: not children(kz, path), timeout=5, what="withdrawal at once")
        status = (await asyncio.to_thread(admin_get, port, "/status"))["services"]["web"]
        for path_, body, code in (
            ("/maintenance/nosuch", {"reason": "x"}, 404),
            ("/maintenance/web", {"reason": ""}, 400),
            ("/maintenance/web", {"reason": "x", "for": -1}, 400),
            ("/maintenance/web", ["not", "an", "object"], 400),
        ):
            with pytest.raises(urllib.error.HTTPError) as refused:
                await asyncio.to_thread(post_json, port, path_, body)
            assert refused.value.code == code
        with pytest.raises(urllib.error.HTTPError) as refused:  # no JSON content type
            await asyncio.to_thread(
                urllib.request.urlopen,
                urllib.request.Request(f"http://127.0.0.1:{port}/maintenance/web", b"reason=x"),
            )
        assert refused.value.code == 415
        assert status["registered"] is False and "disk swap" in status["reason"]
        assert (tmp_path / "nerve-state" / "web.json").exists()

    async with running_nerve(config, config_path) as daemon:
        service = daemon.services["web"]
        await until(lambda: service.rounds >= 3, what="three check rounds")
        assert children(kz, path) == []  # the flag survived the restart
        service.leave_maintenance()
        await until(lambda: children(kz, path), what="registration after `up`")
        assert not (tmp_path / "nerve-state" / "web.json").exists()

        service.enter_maintenance("short", duration=0.5)
        await until(lambda: not children(kz, path), what="withdrawal")
        await until(lambda: children(kz, path), what="the maintenance to expire")


def post_json(port: int, path: str, body: object) -> dict:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.loads(response.read())


@pytest.mark.long
async def test_registry_outage_checks_go_on_and_the_truth_is_written_on_return(
    tmp_path: Path, http_backend_factory
) -> None:
    workdir, port = tmp_path / "zk", free_port()
    server = ZooKeeperServer(workdir=workdir, port=port).start()
    observer = KazooClient(hosts=server.hosts)
    observer.start(timeout=TIMEOUT)
    backend = http_backend_factory()
    backend.stop()  # unhealthy at first: nothing registered
    path = unique_path()
    errors = {"service": "web", "registry": "zookeeper"}
    try:
        async with running_nerve(
            nerve_config({"web": zk_service(server.hosts, path, backend.port)})
        ) as daemon:
            service = daemon.services["web"]
            await until(lambda: service.rounds >= 2 and service.reporter.in_sync)
            await asyncio.to_thread(server.kill)
            outage = time.monotonic()
            rounds = service.rounds
            backend.start()  # healthy while the registry is away
            await until(lambda: service.state.wanted, what="the service to become healthy")

            def failures() -> float:
                value = daemon.metrics.registry.get_sample_value(
                    "nerve_registry_errors_total", errors
                )
                return value or 0.0

            await until(lambda: failures() >= 2, what="failed registration attempts")
            duration = time.monotonic() - outage
            assert service.rounds >= rounds + 5  # checks kept running
            assert failures() <= duration / 0.2 + 2  # backoff, never a tight loop
            status = service.status()
            assert status["wanted"] and not status["registered"]
            assert status["registry"]["last_error"]

            server = ZooKeeperServer(workdir=workdir, port=port).start()
            nodes = await until(
                lambda: asyncio.to_thread(children, observer, path), what="registration on return"
            )
            assert len(nodes) == 1 and NAME.match(nodes[0])
    finally:
        observer.stop()
        observer.close()
        server.stop()


async def test_ensemble_member_killed_keeps_the_registration(
    zk_ensemble: ZooKeeperEnsemble,
) -> None:
    path = unique_path()
    service = zk_service(zk_ensemble.hosts, path, free_port(), checks=[], zk_session_timeout=4)
    observer = KazooClient(hosts=zk_ensemble.hosts)
    observer.start(timeout=TIMEOUT)
    try:
        async with running_nerve(nerve_config({"web": service})) as daemon:
            [node] = await until(lambda: children(observer, path), what="registration")
            czxid = observer.get(f"{path}/{node}")[1].czxid
            conn = zk_reporter(daemon, "web").conn
            session = conn.client.client_id[0]
            peer_port = conn.client._connection._socket.getpeername()[1]
            member = next(
                i for i, m in enumerate(zk_ensemble.members) if m.client_port == peer_port
            )
            zk_ensemble.kill_member(member)

            # Longer than the session timeout: the session (and the node) must live on.
            deadline = time.monotonic() + 6
            while time.monotonic() < deadline:
                nodes = await asyncio.to_thread(children, observer, f"{path}")
                assert nodes == [node]
                await asyncio.sleep(0.1)
            await until(lambda: conn.connected, what="nerve to reconnect to another member")
            assert conn.client.client_id[0] == session
            assert observer.get(f"{path}/{node}")[1].czxid == czxid
    finally:
        observer.stop()
        observer.close()


async def test_reload_to_another_port_proves_the_new_address_first(
    zk: ZooKeeperServer, kz: KazooClient, http_backend_factory
) -> None:
    backend = http_backend_factory()
    path = unique_path()
    tcp = [{"type": "tcp", "timeout": 1, "fall": 3}]  # checks the service's own port
    config = nerve_config({"web": zk_service(zk.hosts, path, backend.port, checks=tcp)})
    async with running_nerve(config) as daemon:
        await until(lambda: children(kz, path), what="registration")
        moved = json.loads(json.dumps(config))
        moved["services"]["web"]["port"] = free_port()  # nothing listens there
        summary = await daemon.reload(NerveConfig.model_validate(moved))
        assert summary["re_registered"] == ["web"]
        service = await until(lambda: daemon.services["web"], what="the new service")
        await until(lambda: service.rounds >= 2, what="two check rounds on the new port")
        # Same checks, but they now probe a dead port: nothing may have been registered for
        # it; the old one stays while its checks pass at the old port (nerve/handover.py).
        assert not service.state.healthy and not service.reporter.registered
        [node] = children(kz, path)
        assert json.loads(kz.get(f"{path}/{node}")[0])["port"] == backend.port
        registered = daemon.metrics.registry.get_sample_value(
            "nerve_transitions_total", {"service": "web", "to": "registered"}
        )
        assert registered == 1.0


async def test_digest_auth_protects_the_registration(zk: ZooKeeperServer, kz: KazooClient) -> None:
    base = unique_path()
    port = free_port()

    def secured(name: str, acl: str) -> dict:
        auth = {"scheme": "digest", "credential": "nerve:s3cret", "acl": acl}
        return zk_service(zk.hosts, f"{base}/{name}", port, checks=[], zk_auth=auth)

    services = {"shared": secured("shared", "read_only_world"), "own": secured("own", "creator")}
    async with running_nerve(nerve_config(services)):
        [shared] = await until(lambda: children(kz, f"{base}/shared"), what="registration")
        # Anybody (synapse) reads it; only nerve's identity may change or delete it.
        data, _ = kz.get(f"{base}/shared/{shared}")
        assert json.loads(data)["port"] == port
        with pytest.raises(NoAuthError):
            kz.delete(f"{base}/shared/{shared}")
        acls, _ = kz.get_acls(f"{base}/shared/{shared}")
        # (ZooKeeper >= 3.6 shows a digest as "user:x" to whoever is not that user.)
        assert {(a.id.scheme, a.id.id.split(":")[0], a.perms) for a in acls} == {
            ("digest", "nerve", Permissions.ALL),
            ("world", "anyone", Permissions.READ),
        }
        await until(lambda: kz.exists(f"{base}/own"), what="the creator-only path")
        with pytest.raises(NoAuthError):
            kz.get_children(f"{base}/own")
    assert children(kz, f"{base}/shared") == []  # nerve could still withdraw it
