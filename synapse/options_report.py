"""Saying what became of records' ``haproxy_server_options``, once per service and change.

Two outcomes are warnings. The whitelist dropped some options
(``registry_server_options_dropped``). Or every record's options were ignored because
``haproxy.registry_server_options.allow`` is false (``registry_server_options_ignored``):
the opt-in is our security contract (a record is untrusted input), but Ruby synapse
appends them to the server line, so a migrated ``backup`` sorry page would otherwise take
its share of traffic without a word. Each is logged when it appears for a service and
again only when it changes (the reconciler selects a service at every report).

A list whose every record the service's ``label_filters`` drop is said the same way
(``label_filters_match_nothing``, when it starts; ``label_filters_match_again`` when it
ends): a typo in a filter's value loads, and otherwise only HAProxy's 503s said anything.
"""

from __future__ import annotations

import logging

from smartstack.logs import event
from synapse.reload_diff import ServiceState
from synapse.selection import Selection, filters_text

log = logging.getLogger("synapse.reconciler")  # (these lines were the reconciler's own)

ALLOW_HINT = "haproxy.registry_server_options.allow: true"
MAX_SHOWN = 500  # characters of options in a line: 1,000 distinct records must not flood it


def report_options(name: str, selection: Selection, service: ServiceState) -> None:
    """Log what ``selection`` left off for service ``name``, when new since the last one."""
    dropped = selection.dropped_options
    if dropped and dropped != service.reported_options:
        event(log, "registry_server_options_dropped", level=logging.WARNING,
              service=name, dropped="; ".join(dropped)[:MAX_SHOWN])  # fmt: skip
    service.reported_options = dropped
    ignored = selection.ignored_options
    if ignored and ignored != service.reported_ignored:
        event(log, "registry_server_options_ignored", level=logging.WARNING, service=name,
              options="; ".join(ignored)[:MAX_SHOWN], effect="not on the server lines",
              hint=ALLOW_HINT)  # fmt: skip
    service.reported_ignored = ignored
    _report_filters(name, selection, service)


def _report_filters(name: str, selection: Selection, service: ServiceState) -> None:
    unmatched = selection.unmatched
    if bool(unmatched) == service.reported_unmatched:
        return
    service.reported_unmatched = bool(unmatched)
    filters = filters_text(service.config.discovery.label_filters)
    if not unmatched:
        event(log, "label_filters_match_again", service=name, filters=filters,
              servers=len(selection))  # fmt: skip
        return
    effect = f"{selection.origin} servers" if selection.servers else "no server"
    event(log, "label_filters_match_nothing", level=logging.ERROR if not selection.servers
          else logging.WARNING, service=name, records=unmatched, filters=filters,
          effect=effect)  # fmt: skip
