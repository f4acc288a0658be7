"""Every value of the example configs swapped for a wrong one: the loader answers with a
ConfigError (the file, the key, what was expected), never another exception.

A bounded, deterministic fuzz: each key (and each mapping, list and list item) of each
example gets two of BAD, in turn. Review s44's fuzz of all 14 values (5,166 configs, every
check a host runs too) found `haproxy.extra_sections` with a number for its lines: a
TypeError and a traceback at `synapse -k`, no file nor key.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from nerve.config import load_nerve_config
from smartstack.config_errors import ConfigError
from synapse.config import load_synapse_config

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"
CONFIGS = [
    "systemd/synapse.yaml",
    "edge/synapse.yaml",
    "compose/synapse.yaml",
    "airbnb/synapse.conf.json",
    "systemd/nerve.yaml",
    "compose/nerve.yaml",
    "airbnb/nerve.conf.json",
]
BAD: list[Any] = [None, [], {}, -1, 0, 10**30, 1e308, float("nan"), "x\ny", True, "", "\u221e",
                  [None], {"a": None}]  # fmt: skip
SECOND = 5  # each place's second value: this far along BAD from its first


def places(doc: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """The path of every value below ``doc`` (keys and list indexes), parents first."""
    items = (
        doc.items() if isinstance(doc, dict) else enumerate(doc) if isinstance(doc, list) else ()
    )
    for key, value in items:
        yield (*prefix, key)
        yield from places(value, (*prefix, key))


def swapped(doc: Any, place: tuple[Any, ...], value: Any) -> Any:
    copied = copy.deepcopy(doc)
    parent = copied
    for key in place[:-1]:
        parent = parent[key]
    parent[place[-1]] = value
    return copied


@pytest.mark.parametrize("name", CONFIGS)
def test_a_wrong_value_anywhere_is_a_config_error(name: str, tmp_path: Path) -> None:
    load = load_synapse_config if "synapse" in name else load_nerve_config
    example = yaml.safe_load((EXAMPLES / name).read_text())
    load(EXAMPLES / name)  # (the example itself loads)
    path = tmp_path / "config.yaml"
    unexpected: list[str] = []
    for index, place in enumerate(places(example)):
        for bad in (BAD[index % len(BAD)], BAD[(index + SECOND) % len(BAD)]):
            path.write_text(yaml.safe_dump(swapped(example, place, bad), allow_unicode=True))
            os.utime(path, (1, 1))  # (written long ago: the loader need not wait it settles)
            try:
                load(path)
            except ConfigError:
                pass
            except Exception as err:  # (the finding: anything else is a bug to report)
                unexpected.append(f"{'.'.join(map(str, place))} = {bad!r}: {err!r}")
    assert not unexpected, "\n".join(unexpected)
