"""Log and count what decoding ignored in a record whose server is kept.

Ruby synapse keeps a server whose ``haproxy_server_options`` is not a string and
ignores the options; so do we (smartstack.record), and say so once per record read.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from smartstack.logs import event
from smartstack.record import Registration

if TYPE_CHECKING:
    from synapse.watchers.base import Watcher

log = logging.getLogger("synapse.watchers")


def note_ignored(watcher: Watcher, origin: str, registration: Registration) -> None:
    """Callers do this once per record read (as for bad_record)."""
    for reason in registration.ignored:
        watcher.metrics.ignored_record_fields.labels(watcher.service, watcher.method).inc()
        event(log, "record_field_ignored", level=logging.WARNING, service=watcher.service,
              origin=origin[:200], reason=reason, effect="server kept")  # fmt: skip
