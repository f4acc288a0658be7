"""Generator settings found in the registry: Airbnb's ``config_for_generator`` (pure).

Ruby synapse's ZooKeeper watcher reads the data of the watched ``path`` (or of
``discovery.generator_config_path``; ``disabled`` turns it off) as a JSON object whose
keys name generators, e.g. ``{"haproxy": {"server_options": "check inter 2s"}}``.
Ruby then uses that block instead of the file's. Here it is merged UNDER the file's
block: a key the file sets wins, a key only the znode sets is used. So a fleet can
steer a service from the registry without a host's file being overridden.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from smartstack import modelbase
from synapse.config import ServiceConfig

GENERATORS = ("haproxy", "file_output")

GeneratorConfig = dict[str, dict[str, Any]]


def parse_generator_config(data: bytes | None) -> tuple[GeneratorConfig, list[str]]:
    """The generator blocks in a znode's data, and what was ignored (as Ruby: an unknown
    generator name is skipped, a block that is not an object becomes empty). Empty data:
    no settings. Data that is not a JSON object raises ValueError."""
    if not data or not data.strip():
        return {}, []
    doc = json.loads(data)
    if not isinstance(doc, dict):
        raise ValueError("not a JSON object")
    out: GeneratorConfig = {}
    notes: list[str] = []
    for name, block in doc.items():
        if name not in GENERATORS:
            notes.append(f"{name}: not a generator, ignored")
        elif not isinstance(block, dict):
            notes.append(f"{name}: not an object, ignored")
            out[name] = {}
        else:
            out[name] = dict(block)
    return out, notes


def merged_doc(file_config: ServiceConfig, found: Mapping[str, Any]) -> dict[str, Any] | None:
    """The service block with the registry's generator blocks under the file's (the file
    wins), to be validated; None when the registry has no settings for it."""
    if not any(found.get(name) for name in GENERATORS):
        return None
    doc = file_config.model_dump(by_alias=True, exclude_unset=True)
    for name in GENERATORS:
        block = found.get(name)
        if block:
            doc[name] = {**block, **doc.get(name, {})}
    return doc


def with_generator_config(file_config: ServiceConfig, found: Mapping[str, Any]) -> ServiceConfig:
    """``file_config`` with the registry's generator blocks under it, validated here and
    now (pydantic in this process; on plain models a child, waited for: a tool, a test).
    The daemon uses ``synapse.generator_checks``, which does not block its loop.

    Raises ``smartstack.modelbase.ValidationError`` when the merged block is invalid and
    ``synapse.config_child.CheckFailed`` when the child gave no answer."""
    doc = merged_doc(file_config, found)
    if doc is None:
        return file_config
    if not modelbase.is_plain():
        return ServiceConfig.model_validate(doc)  # type: ignore[attr-defined]
    from synapse.config_child import services_from_child

    (answer,) = services_from_child([doc])
    if isinstance(answer, str):
        raise modelbase.ValidationError(answer)
    return answer
