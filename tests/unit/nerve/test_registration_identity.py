"""Which registrations two nerve copies share (nerve.registration_identity): pure logic.

Review s28: the instance lock went by the config file's path and state_dir, so one config
by a link in another directory, a release directory flip or a copy of the file ran twice and
the two fought over one registration. The host-wide lock goes by what is registered.
"""

from __future__ import annotations

from typing import Any

from nerve.config import NerveConfig
from nerve.registration_identity import nerve_identity, registration_identities
from smartstack.identity_lock import socket_name


def _zk(path: str = "/nerve/web", port: int = 8080, **extra: Any) -> dict[str, Any]:
    return {"host": "10.0.0.5", "port": port, "zk_hosts": ["zk1:2181", "zk2:2181"],
            "zk_path": path, **extra}  # fmt: skip


def _etcd(port: int = 8080, **extra: Any) -> dict[str, Any]:
    endpoints = ["e1:2379", "e2:2379"]
    return {"host": "10.0.0.5", "port": port, "reporter_type": "etcd",
            "etcd_endpoints": endpoints, "etcd_path": "/nerve/web", **extra}  # fmt: skip


def _ids(services: dict[str, Any], instance_id: str = "i-1", **top: Any) -> set[str]:
    config = NerveConfig.model_validate({"instance_id": instance_id, "services": services, **top})
    return set(registration_identities(config.instance_id, config.services, config.docker))


def test_one_config_written_in_another_order_has_one_identity() -> None:
    first = _ids({"web": _zk(), "api": _zk("/nerve/api", 9090), "kv": _etcd(7000)})
    again = _ids({
        "kv": _etcd(7000, etcd_endpoints=["E2:2379", "e1:2379"]),
        "api": _zk("/nerve/api/", 9090, zk_hosts="zk2:2181, ZK1:2181"),  # one string, a '/'
        "web": _zk(checks=[{"type": "tcp"}], weight=3, labels={"az": "a"}),  # not where
    })  # fmt: skip
    assert first == again and len(first) == 3


def test_a_renamed_service_is_the_same_registration() -> None:
    assert _ids({"web": _zk()}) == _ids({"frontend": _zk()})


def test_state_dir_and_admin_do_not_make_another_copy() -> None:
    assert _ids({"web": _zk()}) == _ids({"web": _zk()}, state_dir="/elsewhere",
                                        admin={"port": 2000})  # fmt: skip


def test_each_thing_that_moves_the_registration_makes_another_identity() -> None:
    base = _ids({"web": _zk()})
    others = [
        _ids({"web": _zk()}, instance_id="i-2"),
        _ids({"web": _zk("/nerve/other")}),
        _ids({"web": _zk(port=8081)}),  # another app on this host, its own port
        _ids({"web": _zk(host="10.0.0.6")}),
        _ids({"web": _zk(zk_hosts=["zk9:2181"])}),
        _ids({"web": _zk(zk_hosts=["zk1:2181/Chroot"])}),
        _ids({"web": _etcd()}),
    ]
    assert all(not other & base for other in others)
    assert len(set().union(*others)) == len(others)
    assert _ids({"web": _zk(zk_hosts=["zk1:2181/Chroot"])}) != _ids(
        {"web": _zk(zk_hosts=["zk1:2181/chroot"])}
    )


def test_a_different_service_set_shares_only_what_it_has_in_common() -> None:
    both = _ids({"web": _zk(), "api": _zk("/nerve/api", 9090)})
    web = _ids({"web": _zk()})
    assert web < both and _ids({"api": _zk("/nerve/api", 9090)}) == both - web


def test_two_services_of_one_config_with_one_identity_are_one_lock() -> None:
    config = NerveConfig.model_validate(
        {"instance_id": "i-1", "services": {"web": _zk(), "web2": _zk(weight=5)}}
    )
    found = registration_identities(config.instance_id, config.services)
    assert list(found.values()) == [["web", "web2"]]


def test_docker_mode_is_its_endpoint_selection_and_registry() -> None:
    def docker(**extra: Any) -> set[str]:
        block = {"service_defaults": {"zk_hosts": ["zk1:2181"], "zk_path": "/svc/{service}"}}
        return _ids({}, docker={**block, **extra})

    assert docker() == docker() and len(docker()) == 1
    assert docker() != docker(label_selector={"app": "a"})
    assert docker() != docker(url="tcp://127.0.0.1:2375")


def test_socket_names_fit_the_abstract_namespace() -> None:
    [identity] = _ids({"web": _zk()})
    name = socket_name("nerve", identity)
    assert name.startswith("smartstack-nerve-") and len(name) < 107
    assert name == socket_name("nerve", identity) != socket_name("synapse", identity)


def _nerve(services: dict[str, Any], instance_id: str = "i-1", **top: Any) -> str:
    config = NerveConfig.model_validate({"instance_id": instance_id, "services": services, **top})
    return nerve_identity(config.instance_id, config.services, config.docker)


def test_one_nerve_one_identity_its_set_of_registrations() -> None:
    # review s28 HIGH-2: a name (a descriptor) per registration starved a large nerve
    services = {f"s{i}": _zk(port=10000 + i) for i in range(300)}
    assert _nerve(services) == _nerve(dict(reversed(list(services.items()))))
    renamed = {f"r{i}": _zk(port=10000 + i, weight=2) for i in range(300)}
    assert _nerve(services) == _nerve(renamed)  # (the same registrations)
    assert socket_name("nerve", _nerve(services)).startswith("smartstack-nerve-")


def test_configs_that_only_overlap_are_other_identities() -> None:
    # (not caught by the name: docs/nerve.md "One copy per config")
    web, api = _zk(), _zk("/nerve/api", 9090)
    assert len({_nerve({"web": web}), _nerve({"web": web, "api": api}), _nerve({"api": api})}) == 3
