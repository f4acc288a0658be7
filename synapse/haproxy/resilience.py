"""Backend lines that keep a dead server from failing requests: retries, redispatch, checks.

In managed mode (synapse runs HAProxy) every backend gets, unless the operator's own
lines already set the keyword:

- HTTP: ``retries 3``, ``retry-on conn-failure empty-response`` (no ``response-timeout``:
  a slow request would run on every server in turn, each for ``timeout server``),
  ``option redispatch 1`` (each retry goes to another server) and
  ``http-request disable-l7-retry unless { method GET HEAD OPTIONS }``: a request that
  may have run on the server (a POST whose answer never came) is never sent twice; only
  a failed connection (nothing was sent) is retried for every method.
- TCP: ``retries 3`` and ``option redispatch 1`` (TCP retries connection failures only).
- Servers of the docker watcher (no nerve checks them): ``default-server check inter
  2000 fastinter 500 downinter 500 rise 2 fall 2`` (a dockerd restart downs every
  published port at once: back within a second of the ports), with ``option httpchk GET
  <path>`` when the service is HTTP and ``health_check.path`` is set, so a hung app in a
  running container is taken out.
- Zone-routed services: checks (every 10 s while up, every second while down or coming
  back, unless ``health_check.inter_ms`` is set); where a backup can take the traffic,
  synapse.zone_apply also sets ``observe`` (layer4, mark-down at the first error), so
  HAProxy fails over to the other zones' servers (backups, with ``option allbackups`` in
  any mode) at the first refused connection of a lost zone.
- Servers with a ``maxconn``: ``timeout queue`` (``synapse.haproxy.queue_wait``), so a
  queued request waits as long as a server may answer, not HAProxy's ``timeout connect``.

Airbnb mode (``managed`` not set) gets only what the service's explicit ``retries``,
``observe`` and ``health_check`` keys ask for, and ``timeout queue`` for its ``maxconn``
key or records allowed to carry one (ours: in either mode; not for a ``maxconn`` in its
own server lines). Pure functions.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from synapse.config import HAProxyConfig, ServiceConfig
from synapse.haproxy.queue_wait import queue_lines
from synapse.haproxy.specs import _last_value
from synapse.resilience_config import (
    DOCKER_CHECK_TIMES,
    ZONE_INTER,
    ZONE_OBSERVE,
    RetriesConfig,
)


def _normalised(lines: Iterable[str]) -> list[str]:
    """Lines as ``_sets`` compares them (once per service, not once per question):
    stripped, lower case, a leading ``no `` dropped (``no option x`` sets ``option x``)."""
    out = []
    for line in lines:
        text = line.strip().lower()
        out.append(text[3:] if text.startswith("no ") else text)
    return out


def _sets(normalised: Sequence[str], *keywords: str) -> bool:
    """Whether a line (of ``_normalised``) starts with one of ``keywords``."""
    prefixes = tuple(k + " " for k in keywords)  # (built once: it runs per line per service)
    return any(text in keywords or text.startswith(prefixes) for text in normalised)


def is_http(backend_lines: Sequence[str], defaults: Sequence[str]) -> bool:
    mode = _last_value(backend_lines, "mode") or _last_value(defaults, "mode") or "tcp"
    return mode.split()[0].lower() == "http"


def _retries(policy: RetriesConfig, http: bool, given: Sequence[str], explicit: bool) -> list[str]:
    """Retry lines; with ``explicit`` False, only those the operator's lines leave unset."""

    def wanted(*keywords: str) -> bool:
        return explicit or not _sets(given, *keywords)

    lines = []
    if wanted("retries"):
        lines.append(f"retries {policy.count}")
    l7 = [c for c in policy.retry_on if c != "conn-failure"]
    if http and policy.retry_on and wanted("retry-on"):
        lines.append(f"retry-on {' '.join(policy.retry_on)}")
        if l7 and policy.methods:
            lines.append(
                f"http-request disable-l7-retry unless {{ method {' '.join(policy.methods)} }}"
            )
    if wanted("option redispatch"):
        lines.append("option redispatch 1" if policy.redispatch else "no option redispatch")
    return lines


def extra_backend_lines(
    config: HAProxyConfig, service: ServiceConfig, backend_lines: Sequence[str]
) -> list[str]:
    """Lines to append to the service's backend (see the module docstring)."""
    hap = service.haproxy
    managed = config.managed is not None
    given = _normalised([*config.defaults, *backend_lines])
    http = is_http(backend_lines, config.defaults)
    lines: list[str] = []

    if hap.retries is not False and (managed or hap.retries not in (None, False)):
        policy = hap.retries if isinstance(hap.retries, RetriesConfig) else RetriesConfig()
        lines += _retries(policy, http, given, explicit=hap.retries not in (None, False))

    zoned = service.zone_routing is not None
    if zoned and not _sets(given, "option allbackups"):
        lines.append("option allbackups")  # other zones' servers are backups: all of them
    check = hap.health_check
    checked = check.enabled
    if checked is None:
        checked = managed and (service.discovery.method == "docker" or zoned)
    observe = hap.observe  # (zone routing: synapse.zone_apply sets it where it can fail over)
    if checked or observe is not None:  # observe needs health checks to bring it back
        if http and check.path and not _sets(given, "option httpchk"):
            lines.append(f"option httpchk GET {check.path}")
        inter = f"inter {check.inter_ms}"
        if (zoned or observe is ZONE_OBSERVE) and "inter_ms" not in check.model_fields_set:
            inter = ZONE_INTER  # traffic tells a dead server at once; checks bring it back
        elif service.discovery.method == "docker" and "inter_ms" not in check.model_fields_set:
            inter += f" {DOCKER_CHECK_TIMES}"  # back soon after a dockerd restart
        options = f"check {inter} rise {check.rise} fall {check.fall}"
        if observe is not None:
            layer = observe.layer if http else "layer4"  # layer7 needs an HTTP backend
            options += (
                f" observe {layer} error-limit {observe.error_limit} on-error {observe.on_error}"
            )
        lines.append(f"default-server {options}")
    return lines + queue_lines(config, service, [*backend_lines, *lines])
