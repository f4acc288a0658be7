"""Benchmarks of smartstack against real ZooKeeper, etcd, HAProxy, nerve and synapse.

`python -m bench [NAME ...] [--quick]` runs them (all by default); each prints a table
beside its targets and writes bench/results/<name>.json. See BENCHMARKS.md.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field


@dataclass
class Options:
    quick: bool = False  # tiny sizes: proves the scripts work, measures nothing
    keep: bool = False  # keep the workspace (logs, configs) after the run
    registries: list[str] = field(default_factory=lambda: ["zookeeper", "etcd"])
    log_level: str = "info"  # of the daemons
    scenarios: list[str] = field(default_factory=list)  # regexes: run only titles they match
    minutes: float | None = None  # the soak's length (None: its default); only soak uses it

    def wants(self, title: str) -> bool:
        """Whether the scenario titled ``title`` runs (``--scenario``: a regex searched in it)."""
        return not self.scenarios or any(re.search(s, title) for s in self.scenarios)

    def size(self, full: int, quick: int) -> int:
        return quick if self.quick else full

    @property
    def restart_interval(self) -> float:
        """synapse's restart_interval in reload-per-change mode: Airbnb's default, 2 s."""
        return 0.5 if self.quick else 2.0
