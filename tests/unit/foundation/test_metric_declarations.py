"""Every Prometheus family nerve, synapse and synapse's HAProxy controller declare: its name,
type, labels, help text (and buckets), against ``metric_declarations.json``. Dashboards,
alerts and docs/ name these: a refactoring of the declarations must not change one. A family
added or changed on purpose: write the file again from the repo root
(``PYTHONPATH=tests/helpers python -m tests.unit.foundation.test_metric_declarations --write``)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from metric_registries import registries

SNAPSHOT = Path(__file__).with_name("metric_declarations.json")


def test_the_declared_families_are_the_snapshots() -> None:
    assert registries() == json.loads(SNAPSHOT.read_text())


if __name__ == "__main__" and sys.argv[1:] == ["--write"]:
    SNAPSHOT.write_text(json.dumps(registries(), indent=1) + "\n")
