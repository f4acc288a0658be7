"""A decoded record's loosely typed fields, made into what a Registration holds.

Ruby nerve writes any non-negative integer as a weight and any JSON value as a label, and
Ruby synapse keeps those servers (it uses a weight only with ``use_nerve_weights``, and
only an Integer). Decoding keeps them too: each ``loose_*`` function returns the value
``smartstack.record.Registration`` accepts and notes of what it changed, which the record
carries in ``ignored`` (synapse logs them as ``record_field_ignored``; the server is kept).
A value that cannot be made safe (a control character, an over-long string) is still
refused by the record's validation.
"""

from __future__ import annotations

import json
from typing import Any

MAX_WEIGHT = 256  # HAProxy's own range for server weights
MAX_LABEL_VALUE_LENGTH = 256

Notes = tuple[str, ...]

# One int object per port number (a port above 256 is a new int per decoded record; a
# fleet uses few distinct ports): 32 bytes a record less. At most 65,535 entries.
_PORTS: dict[int, int] = {}


def share_port(port: int) -> int:
    """The one int object of this port number (``port`` must be a valid port)."""
    return _PORTS.setdefault(port, port)


def coerce_port(value: Any) -> Any:
    """A valid port as its shared int; anything else as it is (validation refuses it)."""
    # Old configs sometimes carried the port as a string ("8080"); nerve copied it as is.
    if isinstance(value, str) and value.isdigit() and len(value) <= 5:
        value = int(value)
    if type(value) is int and 0 < value < 65536:
        return share_port(value)
    return value


def coerce_label_values(value: Any) -> Any:
    """JSON numbers and booleans in label values as text, the way Ruby prints them; the
    rest as it is. nerve's config takes its labels through this too (nerve/config.py)."""
    if not isinstance(value, dict):
        return value
    out: dict[Any, Any] = {}
    for key, item in value.items():
        if isinstance(item, bool):
            out[key] = "true" if item else "false"
        elif isinstance(item, int | float):
            out[key] = str(item)
        else:
            out[key] = item
    return out


def loose_labels(value: Any) -> tuple[Any, Notes]:
    """Labels with a null value dropped and a list or object value as its compact JSON
    text (dropped when that is longer than a label may be), numbers and booleans as text.
    Only ``label_filters`` read labels: an unusable one must not cost the server."""
    if not isinstance(value, dict):
        return value, ()
    out: dict[Any, Any] = {}
    notes: list[str] = []
    for key, item in coerce_label_values(value).items():
        what = f"label {str(key)[:64]!r}"
        if item is None:
            notes.append(f"{what} is null: dropped")
            continue
        if isinstance(item, list | dict):
            text = json.dumps(item, separators=(",", ":"), ensure_ascii=False)
            if len(text) > MAX_LABEL_VALUE_LENGTH:
                too_long = f"longer than {MAX_LABEL_VALUE_LENGTH} as JSON text"
                notes.append(f"{what} is {json_kind(item)} {too_long}: dropped")
                continue
            notes.append(f"{what} is {json_kind(item)}: its JSON text is the value")
            item = text
        out[key] = item
    return out, tuple(notes)


def loose_weight(value: Any) -> tuple[int | None, Notes]:
    """An integer 0-256 as it is; a larger one as 256, HAProxy's largest (it stays the
    heaviest of its servers where nerve weights are used: unset, it would weigh what
    ``server_options`` gives, 1 by default); anything else not set (as Ruby synapse
    ignores a weight that is not an Integer)."""
    if value is None:
        return None, ()
    if isinstance(value, bool) or not isinstance(value, int):
        return None, (f"weight is {json_kind(value)}, not an integer: not used",)
    if value < 0:
        return None, (f"weight {_short(value)} is negative: not used",)
    if value > MAX_WEIGHT:
        above = f"weight {_short(value)} is above {MAX_WEIGHT}, HAProxy's largest"
        return MAX_WEIGHT, (f"{above}: {MAX_WEIGHT} used",)
    return value, ()


def loose_options(value: Any) -> tuple[Any, Notes]:
    """``haproxy_server_options`` that is not a string (an object, a list) not set: Ruby
    synapse keeps such a server and ignores the options."""
    if value is None or isinstance(value, str):
        return value, ()
    return None, (f"haproxy_server_options is {json_kind(value)}, not a string",)


def json_kind(value: Any) -> str:
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list"
    return f"a {type(value).__name__}"


def _short(number: int) -> str:
    text = str(number)  # (JSON's integers stop at 4,300 digits: json.loads refuses more)
    return text if len(text) <= 20 else f"{text[:20]}..."
