"""Benchmarks of smartstack against real ZooKeeper, etcd, HAProxy, nerve and synapse.

`python -m bench [NAME ...] [--quick]` runs them (all by default); each prints a table
beside its targets and writes bench/results/<name>.json. See BENCHMARKS.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Options:
    quick: bool = False  # tiny sizes: proves the scripts work, measures nothing
    keep: bool = False  # keep the workspace (logs, configs) after the run
    registries: list[str] = field(default_factory=lambda: ["zookeeper", "etcd"])
    log_level: str = "info"  # of the daemons
    only: list[str] = field(default_factory=list)  # --only: scenario titles to run (substrings)

    def wants(self, title: str) -> bool:
        """Whether to run the scenario titled `title` (every one unless --only names some)."""
        return not self.only or any(text in title for text in self.only)

    def size(self, full: int, quick: int) -> int:
        return quick if self.quick else full

    @property
    def restart_interval(self) -> float:
        """synapse's restart_interval in reload-per-change mode: Airbnb's default, 2 s."""
        return 0.5 if self.quick else 2.0
