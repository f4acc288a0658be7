"""Generator settings found in the registry: Airbnb's ``config_for_generator`` (pure).

Ruby synapse's ZooKeeper watcher reads the data of the watched ``path`` (or of
``discovery.generator_config_path``; ``disabled`` turns it off) as a JSON object whose
keys name generators, e.g. ``{"haproxy": {"server_options": "check inter 2s"}}``.
Ruby then uses that block instead of the file's. Here it is merged UNDER the file's
block: a key the file sets wins, a key only the znode sets is used. So a fleet can
steer a service from the registry without a host's file being overridden.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable, Mapping
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


def with_generator_config(
    file_config: ServiceConfig,
    found: Mapping[str, Any],
    revisit: Callable[[], None] | None = None,
) -> ServiceConfig:
    """``file_config`` with the registry's generator blocks under it (the file wins).

    Raises ``smartstack.modelbase.ValidationError`` when the merged block is invalid. A
    daemon on plain models has it validated by a child process in a worker thread (~0.3-1 s;
    docs/synapse.md): until that answers ``file_config`` is returned as it is and
    ``revisit`` is called on the loop once the answer is kept (the next call returns it).
    """
    if not any(found.get(name) for name in GENERATORS):
        return file_config
    doc = file_config.model_dump(by_alias=True, exclude_unset=True)
    for name in GENERATORS:
        block = found.get(name)
        if block:
            doc[name] = {**block, **doc.get(name, {})}
    if not modelbase.is_plain():
        return ServiceConfig.model_validate(doc)  # type: ignore[attr-defined]
    key = json.dumps(doc, sort_keys=True, default=str)
    known = _ANSWERS.get(key)
    if known is None:
        _validate_in_child(key, doc, revisit)
        return file_config
    if isinstance(known, str):
        raise modelbase.ValidationError(known)
    return known


# A daemon on plain models: merged documents (canonical JSON) -> the child's answer (the
# ServiceConfig, or pydantic's message); the last few, the registry's settings change rarely.
_ANSWERS: dict[str, Any] = {}
_QUEUE: dict[str, tuple[dict[str, Any], Callable[[], None] | None]] = {}
_worker: asyncio.Future[None] | None = None
ANSWERS_KEPT = 2048  # > services of a big edge: a start asks for every service at once


def _validate_in_child(key: str, doc: dict[str, Any], revisit: Callable[[], None] | None) -> None:
    """Queue ``doc``; one worker thread has a child validate what is queued, as one batch
    (a start with settings for 1,000 services: one child, not 1,000)."""
    global _worker
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:  # no loop (a tool, a test): wait for the child here
        _QUEUE[key] = (doc, None)
        _drain()
        return
    if key in _QUEUE and _QUEUE[key][1] is not None:
        return  # asked already; its revisit comes
    _QUEUE[key] = (doc, revisit)
    if _worker is None or _worker.done():
        # started after this loop step: what the step queues after this goes in one batch
        _worker = loop.create_future()
        loop.call_soon(_start, loop, _worker)


def _start(loop: asyncio.AbstractEventLoop, done: asyncio.Future[None]) -> None:
    drained = loop.run_in_executor(None, _drain, loop)
    drained.add_done_callback(lambda _: done.done() or done.set_result(None))


def _drain(loop: asyncio.AbstractEventLoop | None = None) -> None:
    from synapse.config_child import services_from_child

    while _QUEUE:
        batch = dict(_QUEUE)
        answers = services_from_child([doc for doc, _ in batch.values()])
        for key, answer in zip(batch, answers, strict=True):
            _ANSWERS[key] = answer
            revisit = _QUEUE.pop(key, (None, None))[1]
            if revisit is not None and loop is not None:
                loop.call_soon_threadsafe(revisit)
        while len(_ANSWERS) > ANSWERS_KEPT:
            del _ANSWERS[next(iter(_ANSWERS))]


async def settled(timeout: float) -> None:
    """Wait (up to ``timeout``) until no generator settings wait for a child's answer: the
    first hand-over to HAProxy carries them, as when they were validated in-process."""
    worker = _worker
    if worker is not None and not worker.done():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(worker), timeout)
