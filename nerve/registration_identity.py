"""What makes two nerve copies "the same": the registrations they make.

Two nerves that register one record in one place fight over it (ZooKeeper: each deletes
the other's node as its leftover; etcd: one key, two leases; a maintenance on one undone by
the other), whatever their config files are called. A registration's identity is the
registry (kind and hosts), the place (zk_path / etcd_path), the name it is written under
(instance_id) and the address it registers (host:port, which the record and the etcd key
hold: two apps on one host with one instance_id and their own ports do not fight). Weight,
labels, checks and session settings are left out: a copy that differs only in them still
registers the same server twice. Docker mode's services come and go with containers: its
identity is the Docker endpoint, the containers it selects and where it registers them.

Hosts are compared as written (lower case, sorted): one ensemble named by an IP in one
config and by a name in the other is not recognised, nor two lists that only overlap.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any


def service_identity(instance_id: str, cfg: Any) -> str:
    """One service's registration identity, canonical JSON (``cfg``: a ServiceConfig,
    validated: paths without a trailing '/', zk_hosts a list)."""
    kind = cfg.reporter_type
    if kind == "zookeeper":
        hosts, path = list(cfg.zk_hosts or []), cfg.zk_path
    else:
        hosts, path = cfg.etcd_endpoint_list(), cfg.etcd_path
    return _canonical(kind, hosts, path, instance_id, [str(cfg.host).lower(), cfg.port])


def docker_identity(instance_id: str, docker: Any) -> str:
    """Docker mode's: its containers' registrations are not known at start."""
    from nerve.config import PLACEHOLDER_HOST, service_config

    cfg = service_config(docker.service_defaults, "{service}", PLACEHOLDER_HOST, 1, [], {})
    kind = cfg.reporter_type
    hosts = list(cfg.zk_hosts or []) if kind == "zookeeper" else cfg.etcd_endpoint_list()
    path = cfg.zk_path if kind == "zookeeper" else cfg.etcd_path
    selector = sorted(docker.selector(instance_id).items())
    source = ["docker", docker.url, docker.label_prefix, selector, docker.address,
              docker.host, docker.network]  # fmt: skip
    return _canonical(kind, hosts, path, instance_id, source)


def registration_identities(
    instance_id: str, services: Mapping[str, Any], docker: Any = None
) -> dict[str, list[str]]:
    """Every identity the config registers under, with the services (by name) that do:
    two services of one config with one identity are one registration."""
    found: dict[str, list[str]] = {}
    for name, cfg in sorted(services.items()):
        found.setdefault(service_identity(instance_id, cfg), []).append(name)
    if docker is not None:
        found.setdefault(docker_identity(instance_id, docker), []).append("docker")
    return found


def _canonical(kind: str, hosts: list[str], path: str | None, name: str, what: list[Any]) -> str:
    hosts = sorted({_host(host) for host in hosts})
    return json.dumps([kind, hosts, path or "/", name, what], separators=(",", ":"))


def _host(host: str) -> str:
    """``Host:2181/chroot`` -> ``host:2181/chroot``: names are case-blind, a chroot is not."""
    address, slash, chroot = host.strip().partition("/")
    return address.lower() + slash + chroot


def nerve_identity(instance_id: str, services: Mapping[str, Any], docker: Any = None) -> str:
    """The whole nerve's identity, the sorted set of its registrations' identities: one
    lock name (one descriptor) per nerve. Two copies of one config, by whatever path, have
    one set; configs that only partly overlap do not meet here (the registry's takeover
    handling covers two nerves with one instance id: docs/nerve.md)."""
    found = registration_identities(instance_id, services, docker)
    return json.dumps(sorted(found), separators=(",", ":"))


def retake_for_reload(running: Any, new: Any) -> set[str]:
    """A SIGHUP's config: its set's name taken when the set changed (``identity_lock.retake``:
    ``ReloadClash`` only when another nerve runs this very set); returns the names to let go
    once it is applied. The docker block is
    the running one's: a change to it waits for a restart."""
    from smartstack.identity_lock import retake

    identity = nerve_identity(new.instance_id, new.services, running.docker)
    return retake("nerve", identity, sorted(new.services))
