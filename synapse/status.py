"""synapse's /status document and the small HTML status page served at ``/``.

The page shows, per service, where its servers came from (discovery, state file,
default_servers, a kept previous list), each server with its origin, and what
the HAProxy controller reports about the service. Every value is escaped: hosts
and names come from registries.
"""

from __future__ import annotations

import html
import json
import time
from collections import Counter
from collections.abc import Mapping
from typing import Any


def merge_service_status(
    services: Mapping[str, dict[str, Any]],
    watchers: Mapping[str, dict[str, Any]],
    haproxy: Mapping[str, Any] | None,
) -> dict[str, dict[str, Any]]:
    """Per service: the reconciler's view, its watcher's status and HAProxy's state of it.

    The controller reports running servers per backend (``backends.<backend>.<server>``:
    ``{state, weight, address}``); each service gets its own backend's part.
    """
    backends = (haproxy or {}).get("backends") or {}
    isolated = (haproxy or {}).get("isolated_services") or {}
    out: dict[str, dict[str, Any]] = {}
    for name, view in services.items():
        backend = view.get("backend", name)
        running = backends.get(backend) if isinstance(backends, dict) else None
        out[name] = {
            **view,
            "watcher": watchers.get(name),
            "haproxy": None if running is None else {"backend": backend, "servers": running},
            # haproxy -c refused its block: its last good one runs (synapse.haproxy.isolation)
            "config_isolated": isolated.get(name) if isinstance(isolated, dict) else None,
        }
    return out


# --- HTML ------------------------------------------------------------------------------

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.4em; } h2 { font-size: 1.1em; margin-top: 1.6em; }
table { border-collapse: collapse; margin: .4em 0; }
th, td { border: 1px solid #ccc; padding: .25em .6em; text-align: left; font-size: .9em; }
th { background: #f3f3f3; }
.ok { color: #176b1e; } .bad { color: #a31515; } .muted { color: #777; }
pre { background: #f7f7f7; padding: .6em; font-size: .8em; max-height: 20em; overflow: auto; }
"""


def _e(value: Any) -> str:
    if value is None:
        return '<span class="muted">-</span>'
    if isinstance(value, dict | list):
        value = json.dumps(value, default=str, sort_keys=True)
    return html.escape(str(value))


def _when(stamp: Any) -> str:
    if not isinstance(stamp, int | float):
        return _e(stamp)
    return _e(time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(stamp)))


def _server_state(haproxy: Any, server: str) -> Any:
    """HAProxy's state of one server (UP, DOWN, MAINT, DRAIN, ...), None when not running."""
    if not isinstance(haproxy, dict) or not isinstance(haproxy.get("servers"), dict):
        return None
    state = haproxy["servers"].get(server)
    return state.get("state", state) if isinstance(state, dict) else state


def _service_html(name: str, view: Mapping[str, Any]) -> str:
    watcher = view.get("watcher") or {}
    connected = watcher.get("connected")
    conn_class = "ok" if connected else "bad"
    haproxy = view.get("haproxy")
    rows = []
    for server in view.get("servers", []):
        state = _server_state(haproxy, server["name"])
        rows.append(
            "<tr>"
            f"<td>{_e(server['name'])}</td><td>{_e(server['host'])}</td>"
            f"<td>{_e(server['port'])}</td><td>{_e(server.get('weight'))}</td>"
            f"<td>{_e(server.get('origin'))}</td><td>{_e(state)}</td>"
            "</tr>"
        )
    table = (
        "<table><tr><th>server</th><th>host</th><th>port</th><th>weight</th>"
        "<th>origin</th><th>HAProxy state</th></tr>" + "".join(rows) + "</table>"
        if rows
        else '<p class="muted">no servers</p>'
    )
    if view.get("haproxy_disabled"):
        haproxy_line = '<span class="muted">HAProxy disabled for this service</span>'
    elif isinstance(haproxy, dict):
        states = Counter(_server_state(haproxy, name) for name in haproxy.get("servers") or {})
        counts = ", ".join(f"{n} {state}" for state, n in sorted(states.items(), key=str))
        haproxy_line = f"HAProxy backend {_e(haproxy.get('backend'))}: {_e(counts or 'empty')}"
    else:
        haproxy_line = '<span class="bad">HAProxy does not run this backend (yet)</span>'

    isolated = view.get("config_isolated")
    if isinstance(isolated, dict):
        haproxy_line += (
            f'<br><span class="bad">config refused by haproxy -c, isolated '
            f"({_e(isolated.get('running'))}): {_e(isolated.get('error'))}</span>"
        )
    return (
        f"<h2>{_e(name)}</h2>"
        f"<p>servers from <b>{_e(view.get('origin'))}</b> · "
        f"watcher {_e(watcher.get('method'))} "
        f'<span class="{conn_class}">{"connected" if connected else "not connected"}</span>'
        f" · skipped records {_e(watcher.get('skipped_records', 0))}"
        f"{' · error: ' + _e(watcher['error']) if watcher.get('error') else ''}</p>"
        f"<p>{haproxy_line}</p>{_zones_html(view.get('zones'))}{table}"
    )


def _zones_html(zones: Any) -> str:
    """Smart routing of a zone-routed service: one line (local zone, mode, evacuated, shares)."""
    if not isinstance(zones, dict):
        return ""
    shares = zones.get("share") or {}
    split = " · ".join(f"{_e(z)} {float(v) * 100:.0f} %" for z, v in sorted(shares.items()))
    evacuated = ", ".join(zones.get("evacuated") or []) or None
    return (
        f'<p class="zones">zones: local {_e(zones.get("local_zone"))} · '
        f"mode <b>{_e(zones.get('mode'))}</b> · evacuated {_e(evacuated)} · "
        f"share {split or _e(None)}</p>"
    )


def render_html(status: Mapping[str, Any]) -> str:
    """The status page: one section per service, then HAProxy's last reload and reason."""
    services = status.get("services", {})
    haproxy = status.get("haproxy") or {}
    reconciler = status.get("reconciler") or {}
    sections = "".join(_service_html(n, v) for n, v in sorted(services.items()))
    last_apply = reconciler.get("last_apply") or {}
    reload_info = {k: v for k, v in haproxy.items() if k != "backends"} if haproxy else None
    error = reconciler.get("last_error")
    error_html = f' · <span class="bad">error: {_e(error)}</span>' if error else ""
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>synapse</title>"
        f"<style>{_STYLE}</style></head><body>"
        f"<h1>synapse on {_e(status.get('host'))}</h1>"
        f"<p>{len(services)} services · last update {_when(last_apply.get('at'))} "
        f"({_e(last_apply.get('reason'))}){error_html}</p>"
        f"{sections}"
        "<h2>HAProxy</h2>"
        f"<pre>{_e(json.dumps(reload_info, indent=2, default=str, sort_keys=True))}</pre>"
        '<p class="muted">JSON: <a href="/status">/status</a> · '
        'metrics: <a href="/metrics">/metrics</a></p>'
        "</body></html>"
    )
