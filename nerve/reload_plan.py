"""What a SIGHUP does to each service, decided from the old and the new config alone (pure;
nerve/daemon.py carries the plan out).

A registration that stays healthy must never leave the registry on a reload: synapse would
take the server out of HAProxy until the new checks pass ``rise`` times. So a service keeps
its checks' verdict through every change except one: its registered address moved and its
checks now probe another address (a check without ``host``/``port`` follows the service's),
which has to prove itself like any new server (``moved``: the old registration stays while
its own checks pass, until the new one is written: nerve/handover.py). An edit of the checks
themselves (timeout, rise, fall, uri, headers, another check) starts from the old verdict, as
on a reload that changes only the checks, whatever else changed with it.

A service renamed in the file (the old name gone, a new one at the very same placement:
instance id, record and registry) is the same registration under another name: it keeps its
reporter and verdict instead of being withdrawn and registered anew.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from nerve.config import ServiceConfig
from nerve.registries import reporter_identity

Placement = tuple[str, Any]  # (instance_id, reporter_identity): one registration's what + where
RECORD_KEYS = ("host", "port", "weight", "labels", "haproxy_server_options")

# unchanged: not touched; checks: same registration, new checks; record: the same reporter
# writes a new record (change_record); registry: a new reporter registers first
# (hand_over); renamed: the registration kept under a new name; added: a new service.
Change = Literal["unchanged", "checks", "record", "registry", "renamed", "added"]


@dataclass(frozen=True)
class Step:
    """One service of the new config: what changed since the running one (``previous``:
    its own name, the renamed service's, or None when added)."""

    name: str
    cfg: ServiceConfig
    change: Change
    previous: str | None = None
    # The running checks' verdict holds for the new ones (if the old service is healthy).
    keeps_verdict: bool = False
    # The address moved with the checks: the new one must rise while the old one stays.
    moved: bool = False

    @property
    def outcome(self) -> str:
        """The key of the reload summary (and of the ``config_reloaded`` log line)."""
        return {"checks": "checks_changed", "record": "re_registered",
                "registry": "re_registered"}.get(self.change, self.change)  # fmt: skip


@dataclass(frozen=True)
class ReloadPlan:
    steps: tuple[Step, ...]
    removed: tuple[str, ...]  # withdrawn; a renamed service is not among them


def placement(instance_id: str, cfg: ServiceConfig) -> Placement:
    return (instance_id, reporter_identity(cfg))


def registry_unchanged(old: ServiceConfig, new: ServiceConfig) -> bool:
    """True when the two configs differ at most in the record: same registry, same place."""
    record = {key: getattr(new, key) for key in RECORD_KEYS}
    return reporter_identity(old.model_copy(update=record)) == reporter_identity(new)


def _targets(cfg: ServiceConfig) -> list[tuple[str, int]] | None:
    """The addresses the checks probe (None: mocked, nothing is probed)."""
    if cfg.check_mocked:
        return None
    return sorted({(c.host or cfg.host, c.port or cfg.port) for c in cfg.checks})


def probes_moved(old: ServiceConfig, new: ServiceConfig) -> bool:
    """Whether the registration's address moved and the checks with it: the old verdict
    says nothing about the new address. Check edits at the same address do not count."""
    if (old.host, old.port) == (new.host, new.port):
        return False
    return _targets(old) != _targets(new)


def _renames(
    old_id: str, old: Mapping[str, ServiceConfig], new_id: str, new: Mapping[str, ServiceConfig]
) -> dict[str, str]:
    """{new name: old name} for each removed service whose placement an added one takes."""
    gone = {placement(old_id, cfg): name for name, cfg in old.items() if name not in new}
    renames: dict[str, str] = {}
    for name, cfg in new.items():
        if name not in old:
            previous = gone.pop(placement(new_id, cfg), None)
            if previous is not None:
                renames[name] = previous
    return renames


def same_labels(old: ServiceConfig, new: ServiceConfig) -> bool:
    """The labels write the same record: Python's ``==`` has ``True == 1 == 1.0``, yet
    nerve writes label values as configured (``true``, ``1``, ``1.0``: Ruby synapse's
    label_filters tell them apart, ours compare their text), so an edit between them must
    rewrite the record. Their order is no change (a reader sees an object)."""
    if old.labels is new.labels:
        return True
    return json.dumps(old.labels, sort_keys=True) == json.dumps(new.labels, sort_keys=True)


def _step(name: str, old: ServiceConfig, new: ServiceConfig, same_instance: bool) -> Step:
    if same_instance and old == new and same_labels(old, new):
        return Step(name, new, "unchanged", name)
    if same_instance and reporter_identity(old) == reporter_identity(new):
        return Step(name, new, "checks", name, keeps_verdict=True)
    change: Change = "record" if registry_unchanged(old, new) else "registry"
    moved = probes_moved(old, new)
    return Step(name, new, change, name, keeps_verdict=not moved, moved=moved)


def plan_reload(
    old_id: str, old: Mapping[str, ServiceConfig], new_id: str, new: Mapping[str, ServiceConfig]
) -> ReloadPlan:
    """``old``: the running services' configs; ``new``: the reloaded file's."""
    renames = _renames(old_id, old, new_id, new)
    steps: list[Step] = []
    for name, cfg in new.items():
        if name in renames:
            steps.append(Step(name, cfg, "renamed", renames[name], keeps_verdict=True))
        elif name in old:
            steps.append(_step(name, old[name], cfg, old_id == new_id))
        else:
            steps.append(Step(name, cfg, "added"))
    kept = set(new) | set(renames.values())
    return ReloadPlan(tuple(steps), tuple(name for name in old if name not in kept))


def plan_changes(plan: ReloadPlan) -> int:
    """How many registrations the plan touches: services removed, and kept ones whose
    checks, record, registry or name changed, or added (0: the reload changes nothing a
    restart stop could leave half-done)."""
    return len(plan.removed) + sum(1 for step in plan.steps if step.change != "unchanged")
