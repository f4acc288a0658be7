"""nerve's Docker mode: the container labels it reads (pure logic).

The `docker` config block itself (``DockerModeConfig``) lives in nerve.config, which needs it
for its `docker` field: here only what is made of it and of the containers' labels.

Containers on the local engine become nerve services from their labels (prefix `smartstack.`
by default); one registration per labelled port. docs/nerve.md lists the labels:

    smartstack.service=web            the service name (required); fills {service} in the paths
    smartstack.port=80[,8080]         container port(s) to register, one registration each
    smartstack.check=http:/health     http:URI | https:URI | tcp | none; default: tcp when the
                                      container has no HEALTHCHECK, none when it has one
    smartstack.check_interval=0.5     seconds between check rounds (also .rise .fall .timeout)
    smartstack.weight=10              the record's weight
    smartstack.zone=az1               shortcut for the record label zone
    smartstack.label.<key>=<value>    any record label
    smartstack.haproxy_server_options=...
    smartstack.instance=web-1         the registration's name (default <instance_id>_<container>)

A container counts while it runs, is not being stopped, and (if it has a HEALTHCHECK) while
Docker says it is healthy; the label checks then decide as for any nerve service.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from nerve.config import DockerModeConfig, ServiceConfig, service_config
from smartstack.docker_events import ContainerInfo
from smartstack.record_fields import MAX_WEIGHT

_UNSAFE = re.compile(r"[^A-Za-z0-9._:-]")
_ANY_ADDRESS = ("0.0.0.0", "::", "")


class LabelError(ValueError):
    """A container's smartstack labels cannot be used (logged once per container)."""


@dataclass(frozen=True)
class Wanted:
    """One registration a container asks for."""

    key: str  # unique per container and port: the nerve service's name
    service: str
    instance_id: str
    config: ServiceConfig
    container_id: str


def _label_checks(labels: dict[str, str], p: str, has_healthcheck: bool) -> list[dict[str, Any]]:
    spec = labels.get(f"{p}.check", "none" if has_healthcheck else "tcp").strip()
    common: dict[str, Any] = {}
    for key in ("rise", "fall"):
        if f"{p}.{key}" in labels:
            common[key] = _number(labels, f"{p}.{key}", int)
    if f"{p}.timeout" in labels:
        common["timeout"] = _number(labels, f"{p}.timeout", float)
    kind, _, uri = spec.partition(":")
    if kind == "none":
        return []
    if kind == "tcp":
        return [{"type": "tcp", **common}]
    if kind in ("http", "https") and uri.startswith("/"):
        return [{"type": kind, "uri": uri, **common}]
    raise LabelError(f"{p}.check={spec!r}: expected http:/path, https:/path, tcp or none")


def _number(labels: dict[str, str], key: str, kind: type) -> Any:
    try:
        return kind(labels[key])
    except ValueError:
        raise LabelError(f"{key}={labels[key]!r} is not a number") from None


def _ports(labels: dict[str, str], p: str) -> list[int]:
    raw = labels.get(f"{p}.port", "")
    try:
        ports = [int(part) for part in raw.split(",") if part.strip()]
    except ValueError:
        raise LabelError(f"{p}.port={raw!r}: expected port numbers like 80 or 80,8080") from None
    if not ports:
        raise LabelError(f"{p}.port is missing (the container port to register)")
    return ports


def _address(cfg: DockerModeConfig, info: ContainerInfo, port: int) -> tuple[str, int]:
    if cfg.address == "container":
        network = cfg.network or (sorted(info.networks)[0] if info.networks else None)
        ip = info.networks.get(network or "")
        if not ip:
            raise LabelError(f"no IP on network {network!r} (docker.network)")
        return ip, port
    binding = info.published(port)
    if binding is None:
        raise LabelError(f"port {port} is not published (or use docker.address: container)")
    if cfg.host:
        return cfg.host, binding.host_port
    if binding.host_ip in _ANY_ADDRESS:
        raise LabelError(f"port {port} is published on all addresses: set docker.host")
    return binding.host_ip, binding.host_port


def wanted_for(cfg: DockerModeConfig, instance_id: str, info: ContainerInfo) -> list[Wanted]:
    """The registrations a serving container asks for; LabelError when its labels are bad."""
    p = cfg.label_prefix
    labels = info.labels
    service = labels.get(f"{p}.service", "").strip()
    if not service:
        raise LabelError(f"{p}.service is missing")
    ports = _ports(labels, p)
    checks = _label_checks(labels, p, info.health is not None)
    extra: dict[str, Any] = {}
    if f"{p}.check_interval" in labels:
        extra["check_interval"] = _number(labels, f"{p}.check_interval", float)
    if f"{p}.weight" in labels:
        extra["weight"] = _number(labels, f"{p}.weight", int)
        if extra["weight"] > MAX_WEIGHT:  # (the config file takes more, for Ruby's files)
            raise LabelError(f"{p}.weight={extra['weight']}: at most {MAX_WEIGHT}")
    if f"{p}.haproxy_server_options" in labels:
        extra["haproxy_server_options"] = labels[f"{p}.haproxy_server_options"]
    record_labels = {k[len(f"{p}.label.") :]: v for k, v in labels.items()
                     if k.startswith(f"{p}.label.")}  # fmt: skip
    if f"{p}.zone" in labels:
        record_labels["zone"] = labels[f"{p}.zone"]
    if record_labels:
        extra["labels"] = record_labels
    base_name = labels.get(f"{p}.instance") or f"{instance_id}_{info.name}"
    out = []
    for port in ports:
        host, host_port = _address(cfg, info, port)
        name = base_name if len(ports) == 1 else f"{base_name}_{port}"
        name = _UNSAFE.sub("_", name).lstrip("._:-") or info.id[:12]
        try:
            config = service_config(cfg.service_defaults, service, host, host_port, checks, extra)
        except ValueError as exc:
            raise LabelError(" ".join(str(exc).split())[:300]) from None
        key = f"{service}@{_UNSAFE.sub('_', info.name)}:{port}"
        out.append(Wanted(key, service, name, config, info.id))
    return out


def selected(cfg: DockerModeConfig, info: ContainerInfo, instance_id: str) -> bool:
    """The container carries the service label and matches the label_selector."""
    if f"{cfg.label_prefix}.service" not in info.labels:
        return False
    return all(
        (value in ("", "*") and key in info.labels) or info.labels.get(key) == value
        for key, value in cfg.selector(instance_id).items()
    )
