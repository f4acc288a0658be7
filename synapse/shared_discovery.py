"""A warning when two services watch the same registry path with the same filters.

A copy-paste typo (web given api's ``path``) makes one service silently serve another's
instances: both load, both have servers, only the wrong ones (measured: 358 of 372 web
requests answered by api's instance, info logs only). Some configs do it on purpose (two
frontends, or two ``haproxy`` settings, for one set of servers), so it is a warning, not
an error. Services that differ in a way that changes what they serve (``decode``, a port
override) are not reported.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # annotations only: synapse.config calls this module from its loader
    from synapse.config import ServiceConfig


def _registry(service: ServiceConfig) -> tuple[Any, ...] | None:
    """What a service's servers come from and how they are picked; None: not a registry
    watch (base, dns, docker, multi)."""
    d = service.discovery
    if d.method.startswith("zookeeper"):
        where: tuple[Any, ...] = ("zookeeper", tuple(sorted(d.hosts or [])))
    elif d.method == "etcd":
        where = ("etcd", tuple(sorted(d.etcd_endpoint_list())))
    else:
        return None
    path = (d.path or "").rstrip("/") or "/"
    filters = tuple(sorted((f.label, f.value, f.condition) for f in d.label_filters))
    picked = (d.decode.method, d.decode.endpoint_name, service.port_override)
    return (*where, path, filters, picked)


def shared_discovery_warnings(services: dict[str, ServiceConfig]) -> list[str]:
    """One line per group of services that would get the same servers."""
    groups: dict[tuple[Any, ...], list[str]] = {}
    for name, service in services.items():
        key = _registry(service)
        if key is not None:
            groups.setdefault(key, []).append(name)
    lines = []
    for key, names in groups.items():
        if len(names) < 2:
            continue
        kind, hosts, path, filters = key[0], ",".join(key[1]), key[2], key[3]
        listed = " and ".join(f"services.{n}" for n in sorted(names))
        same = "the same label_filters" if filters else "no label_filters"
        lines.append(
            f"{listed} watch the same {kind} path {path} on {hosts} with {same}: they get "
            "the same servers (a copied path? fine if on purpose)"
        )
    return lines
