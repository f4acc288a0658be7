"""The state file's stamps against a stepped wall clock (``synapse.state_cache``).

Entries are stamped on the wall clock (Airbnb's format), and their age decides whether a
restart with the registry down serves them (``state_file_ttl``). A step of the clock
between the write and the read makes that age wrong by the step: an RTC a day ahead at
boot distrusts a file written 10 s before, one a day behind trusts a day-old file a day
longer. So the file also keeps, under the reserved key, when it was written on this boot's
own clock (``smartstack.boot_clock``):

    {"_synapse": {"clock": {"timestamp": 1700000000.5, "boottime": 5123.4,
                            "boot_id": "8e051dd0-..."}}}

Read back in the same boot, a service's stamps are moved by the step the wall clock made
since the write (what it moved against boottime): the ages are true whatever the clock did.
The record vouches for the stamps it was written with (``stamps``: each service's newest):
a service whose stamps another writer changed since (Ruby synapse after a rollback keeps
the key but stamps on its own clock) and the services whose stamps are still an earlier
boot's (``earlier_boot``) are not moved: the wall clock's rule below is theirs.
After a reboot (or from an older file) only the wall clock is left: its rule stands, but a
stamp in the future (written while the clock was ahead) counts as made now, not trusted
for that lead plus the TTL. A synapse that sees the clock step while it runs moves the
stamps it made (or read in this boot) by the step and writes the file at once; the state
cache alone keeps the offset its stamps are on, so a step is applied once, however many
paths (an update, the watcher, a reload) see it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from smartstack.boot_clock import STEP_MIN

CLOCK_KEY = "clock"  # under the reserved key: when the file was written, on boottime
# In it: the services whose stamps were read from an earlier boot's file and not renewed
# since (a silent registry): their stamps are that boot's clock, not this one's.
EARLIER_KEY = "earlier_boot"
STAMPS_KEY = "stamps"  # in it: service -> its newest stamp when written (what it vouches for)


def written(
    now: float,
    boot: float,
    boot_id: str | None,
    earlier: Iterable[str],
    stamps: Mapping[str, float],
) -> dict[str, Any]:
    """The reserved key's ``clock`` entry for stamps on the wall clock ``now`` when boottime
    was ``boot`` ({}: no boot id). ``earlier``: the services whose stamps are still an
    earlier boot's (``EARLIER_KEY``); ``stamps``: each service's newest stamp (vouched for)."""
    if boot_id is None:
        return {}
    record: dict[str, Any] = {
        "timestamp": round(now, 3), "boottime": round(boot, 3), "boot_id": boot_id,
        STAMPS_KEY: dict(sorted(stamps.items())),
    }  # fmt: skip
    return {CLOCK_KEY: {**record, EARLIER_KEY: sorted(earlier)} if earlier else record}


def as_read(
    own: Any,
    services: Mapping[str, Mapping[str, Any]],
    now: float,
    boot: float,
    boot_id: str | None,
) -> tuple[dict[str, dict[str, Any]], set[str], float | None]:
    """The file's services as a load takes them (``own``: its reserved key), the services
    whose stamps are an earlier boot's, and the step the clock made since the write (None:
    not this boot's file)."""
    record = own.get(CLOCK_KEY) if isinstance(own, Mapping) else None
    step = step_since(record, now, boot, boot_id)
    listed = record.get(EARLIER_KEY) if step is not None else None  # (a Mapping then)
    earlier = {str(s) for s in listed} if isinstance(listed, list) else set()
    vouched = record.get(STAMPS_KEY) if step is not None else None
    vouched = vouched if isinstance(vouched, Mapping) else {}
    out: dict[str, dict[str, Any]] = {}
    foreign: set[str] = set()
    for service, servers in services.items():
        ours = step is not None and service not in earlier
        if ours and vouched.get(service) == newest(servers):  # ages on boottime
            out[service] = shifted(servers, step) if step else dict(servers)
            continue
        out[service], clamp = clamped(servers, now)  # the wall clock's (ahead: made now)
        # (unvouched in this boot: on its clock as it is now, not another boot's)
        if (step is None or service in earlier) and not clamp:
            foreign.add(service)
    return out, foreign, step


def newest(servers: Mapping[str, Any]) -> float | None:
    """The newest stamp among ``servers`` (a service's entries), None without one."""
    stamps = [d.get("timestamp") for d in servers.values() if isinstance(d, dict)]
    return max((s for s in stamps if is_stamp(s)), default=None)


def step_since(record: Any, now: float, boot: float, boot_id: str | None) -> float | None:
    """By how much the wall clock stepped since the file's ``clock`` record was written
    (0.0 below STEP_MIN), or None when that cannot be told: no record (an older file),
    a record of another boot (a reboot), or one that does not parse."""
    if not isinstance(record, Mapping) or boot_id is None or record.get("boot_id") != boot_id:
        return None
    wall, boot_then = record.get("timestamp"), record.get("boottime")
    if not (is_stamp(wall) and is_stamp(boot_then)) or boot_then > boot:
        return None  # (a boottime ahead of ours: not this boot's, whatever its id says)
    step = (now - boot) - (wall - boot_then)
    return step if abs(step) >= STEP_MIN else 0.0


def shifted(servers: Mapping[str, Any], step: float) -> dict[str, Any]:
    """``servers`` (a service's entries) with every stamp moved by ``step`` seconds."""
    out = dict(servers)
    for key, data in servers.items():
        stamp = data.get("timestamp") if isinstance(data, dict) else None
        if is_stamp(stamp):
            moved = stamp + step
            out[key] = {**data, "timestamp": round(moved) if isinstance(stamp, int) else moved}
    return out


def clamped(servers: Mapping[str, Any], now: float) -> tuple[dict[str, Any], bool]:
    """``servers`` with every stamp later than ``now`` made ``now``; whether one was."""
    out, moved = dict(servers), False
    for key, data in servers.items():
        stamp = data.get("timestamp") if isinstance(data, dict) else None
        if is_stamp(stamp) and stamp > now:
            out[key], moved = {**data, "timestamp": int(now)}, True
    return out, moved


def is_stamp(value: Any) -> bool:
    """A stamp as the file may have it (Ruby writes ints; a bool is not one)."""
    return isinstance(value, int | float) and not isinstance(value, bool)
