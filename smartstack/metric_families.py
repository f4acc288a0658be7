"""Declares a daemon's Prometheus families on its own registry, one line a family.

A daemon keeps its help texts in one table (metric name -> help text, as ``# HELP`` shows
it) and declares each family with ``Families.declare``: the registry is named once, the
labels are the trailing arguments. Before, every family took five or six lines of the same
call (``Counter(name, help, [labels], registry=registry)``), forty-odd times over three
modules. ``tests/unit/foundation/test_metric_declarations.py`` holds what they declare.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from prometheus_client import CollectorRegistry

F = TypeVar("F")


class Families:
    def __init__(self, registry: CollectorRegistry, help_texts: Mapping[str, str]) -> None:
        self.registry = registry
        self.help_texts = help_texts

    def declare(self, kind: Callable[..., F], name: str, *labels: str, **options: Any) -> F:
        """A ``kind`` family (prometheus_client's Counter, Gauge, Histogram, or a family of
        ``smartstack.labelled_metrics``) named ``name``; ``options``: e.g. ``buckets``. A
        name missing from the help table is a KeyError at the daemon's start."""
        return kind(name, self.help_texts[name], labels, registry=self.registry, **options)
