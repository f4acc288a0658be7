"""What synapse's admin server reports: /status and /health/<service> (``synapse.admin_routes``)."""

from __future__ import annotations

import socket
import time
from typing import TYPE_CHECKING, Any

from smartstack import modelbase
from smartstack.last_good import age_text
from synapse.selection import filters_text
from synapse.status import merge_service_status

if TYPE_CHECKING:
    from smartstack import httpserver as web
    from synapse.daemon import SynapseDaemon


async def service_health(daemon: SynapseDaemon, request: web.Request) -> web.Response:
    """/health/<service>[?min=N]: 503 with fewer than N servers UP in HAProxy (N:
    ``?min=``, else the service's ``haproxy.min_up``, default 1)."""
    from smartstack.admin import json_response
    from synapse.haproxy.health import service_verdict

    name = request.match_info["service"]
    service = daemon.config.services.get(name)
    if service is None:
        return json_response({"service": name, "ok": False, "error": "no such service"}, 404)
    try:
        min_up = int(request.query.get("min", service.haproxy.min_up))
    except ValueError:
        return json_response({"service": name, "error": "min must be an integer"}, 400)
    backend = service.haproxy.backend_name or name
    servers = await daemon.controller.backend_servers(backend) if daemon.controller else None
    ok, body = service_verdict(name, backend, servers, min_up)
    return json_response(body, 200 if ok else 503)


def last_good_info(daemon: SynapseDaemon) -> dict[str, Any] | None:
    """The last good copy running instead of the invalid file (synapse.last_good), or None."""
    source = daemon.config_source
    return source.last_good.status() if source is not None else None


def degraded(daemon: SynapseDaemon) -> list[str]:
    """/health's ``degraded``: services served otherwise than their config says, for a
    typo that still loads (HAProxy runs what synapse wants: /health stays 200; a 503 would
    have a supervisor restart synapse, which starts from the typo alone)."""
    said = daemon.service_watchers.degraded()  # a SIGHUP's discovery lists no server

    def daemon_lost(name: str) -> str | None:  # why a service's watcher is disconnected
        watcher = daemon.service_watchers.active.get(name)
        if watcher is None or watcher.connected or watcher.method == "unsupported":
            return None
        return watcher.last_error or "disconnected"

    reconciler = daemon.reconciler
    if reconciler is not None:  # a restart's typo: the state file's servers (restart_held)
        said += reconciler.restart_held.degraded(daemon.config.services)
        named = {line.partition(":")[0] for line in said}  # (a held swap's old list too)
        said += reconciler.previous_kept.degraded(daemon.config.services, named, daemon_lost)
    cache = reconciler.state_cache if reconciler else None
    if cache is not None:  # (a start while the registry is down would serve older servers)
        said += cache.write_streak.degraded("state file", "it lags the servers served (retried "
                                            "each second)")  # fmt: skip
    if daemon.controller is not None:
        said += daemon.controller.degraded()
    running = last_good_info(daemon)
    if running is not None:  # (the file is invalid: its last good copy runs, synapse.last_good)
        why = running.get("why", "the config file is invalid")
        age = age_text(running["written_at"], time.time())
        said.append(f"config: {why}: running the last good config {age} "
                    f"({running['errors'][0]})")  # fmt: skip
    for name, selection in (reconciler.selections() if reconciler else {}).items():
        service = daemon.config.services.get(name)
        if selection.unmatched and service is not None:
            filters = filters_text(service.discovery.label_filters)
            said.append(f"{name}: {selection.unmatched} records, every one dropped by "
                        f"label_filters {filters}")  # fmt: skip
    return said


def daemon_status(daemon: SynapseDaemon) -> dict[str, Any]:
    """/status: the daemon, its HAProxy, reconciler, watchers and registry connections."""
    haproxy = None
    if daemon.controller is not None:
        try:
            haproxy = daemon.controller.status()
        except Exception as exc:
            haproxy = {"error": f"{type(exc).__name__}: {exc}"}
    reconciler = daemon.reconciler
    cache = reconciler.state_cache if reconciler else None  # (none: no state_file_path)
    services = reconciler.service_status() if reconciler else {}
    for name, zones in (reconciler.zones.status(services) if reconciler else {}).items():
        services[name]["zones"] = zones  # smart routing: local zone, evacuations, shares
    watchers = daemon.service_watchers.status()  # (``replacing``: a SIGHUP's new watcher)
    for line in degraded(daemon):  # /health's lines, per service (the page's red rows)
        name, _, said = line.partition(": ")
        if name in services:
            services[name].setdefault("degraded", []).append(said)
    return {
        "host": socket.gethostname(),
        "started_at": daemon.started_at,
        "config": {
            "path": daemon.config_path,
            "last_reload": daemon.last_config_reload,
            "last_good": last_good_info(daemon),
        },
        "config_models": "plain" if modelbase.is_plain() else "pydantic",  # config_load
        "services": merge_service_status(services, watchers, haproxy),
        "haproxy": haproxy,
        "reconciler": {
            "started": reconciler.started if reconciler else False,
            "applies": reconciler.applies if reconciler else 0,
            "paced_rounds": reconciler.pacer.paced if reconciler else 0,  # synapse.pacing
            "last_apply": reconciler.last_apply if reconciler else None,
            "last_error": reconciler.last_error if reconciler else None,
            # [watch event, HAProxy acknowledged its runtime commands] (time.monotonic)
            "recent_changes": [[round(e, 6), round(a, 6)] for e, a in reconciler.changes]
            if reconciler
            else [],
        },
        "state_file": cache.write_streak.status() if cache is not None else None,
        "zookeeper": [
            {"hosts": c.hosts, "connected": c.connected, "reconnects": c.reconnects}
            for c in (daemon.zk_pool.connections() if daemon.zk_pool else [])
        ],
        "etcd": [
            {"endpoints": c.endpoints, "current": c.current_endpoint, "failovers": c.failovers}
            for c in daemon._etcd.values()
        ],
    }
