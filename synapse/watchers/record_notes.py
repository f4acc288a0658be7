"""Log and count what decoding ignored in a record whose server is kept.

Ruby synapse keeps a server whose ``haproxy_server_options`` is not a string and
ignores the options; so do we (smartstack.record), and say so. Every note is counted;
only the first of its kind per watcher is a warning: a Ruby fleet whose records all say
``weight: 500`` is normal there, and a line per record at each start would flood the log.
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING

from smartstack.logs import event
from smartstack.record import Registration

if TYPE_CHECKING:
    from synapse.watchers.base import Watcher

log = logging.getLogger("synapse.watchers")

MAX_KINDS = 64  # (label names come from records: the memory of kinds is bounded)
_NUMBERS = re.compile(r"\d+")


def note_kind(reason: str) -> str:
    """Notes that differ only in their numbers (two weights above 256) are one kind."""
    return _NUMBERS.sub("#", reason)


def note_ignored(watcher: Watcher, origin: str, registration: Registration) -> None:
    """Callers do this once per record read (as for bad_record)."""
    for reason in registration.ignored:
        watcher.metrics.ignored_record_fields.labels(watcher.service, watcher.method).inc()
        kind, noted = note_kind(reason), watcher.noted_kinds
        first = kind not in noted and len(noted) < MAX_KINDS
        if first:
            noted.add(kind)
        more = {"next": "this kind at debug level"} if first else {}
        event(log, "record_field_ignored", level=logging.WARNING if first else logging.DEBUG,
              service=watcher.service, origin=origin[:200], reason=reason,
              effect="server kept", **more)  # fmt: skip
