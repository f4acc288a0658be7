"""Identity comparisons of lists of objects: what changed since last time, by ``is``.

An unchanged service is handed over as the very same object apply after apply, so the
steps of an apply find what changed by identity, in loops that run in C: they run per
change over every service.
"""

from __future__ import annotations

import itertools
import operator
from collections.abc import Iterator, Sequence
from typing import Any


def moved(new: Sequence[Any], old: Sequence[Any]) -> Iterator[int]:
    """Positions where the two lists hold different objects (zip-length: compare the
    lengths first)."""
    return itertools.compress(itertools.count(), map(operator.is_not, new, old))


def same_objects(new: Sequence[Any], old: Sequence[Any]) -> bool:
    """Whether both lists hold the very same objects in the same order."""
    return len(new) == len(old) and all(map(operator.is_, new, old))
