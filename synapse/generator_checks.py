"""Checking the registry's generator settings without blocking the loop (one per reconciler).

A daemon on plain models has no pydantic (``smartstack.modelbase``): a service block with
the registry's generator settings merged under it (``synapse.generator_config``) is
validated by a child, ``python -m synapse.config_child --service``, ~0.3-1 s. Meanwhile:

- the service keeps its current config (nothing is handed over for the settings until
  their answer is there); the answer's service is then revisited (``revisit(name)``: the
  reconciler asks again and gets it);
- one task runs one child per batch for everything pending (a start with settings for
  1,000 services: one child, not 1,000), and loops while anything is pending;
- a child that gives no answer (crash, timeout, no process) is logged as
  ``generator_config_check_failed`` and tried again with backoff: it says nothing about
  the settings, so nothing is kept for it;
- one answer is kept per service (its merged block and the answer: a valid config or
  pydantic's message), replaced when the settings or the file's block change.

On pydantic models (``docker_services``, ``SYNAPSE_CONFIG_IN_PROCESS``) the block is
validated in-process as before; without a running loop (a tool, a test) by a child waited for.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from smartstack import modelbase
from smartstack.backoff import Backoff
from smartstack.logs import event
from synapse.config import ServiceConfig
from synapse.config_child import CheckFailed, services_from_child, services_in_child
from synapse.generator_config import merged_doc

log = logging.getLogger("synapse.generator_checks")

RETRY_BASE, RETRY_CAP = 1.0, 60.0  # a child gave no answer: tried again after this backoff
_PENDING: Any = object()

Check = Callable[[list[dict[str, Any]]], Awaitable[list[Any]]]
CheckNow = Callable[[list[dict[str, Any]]], list[Any]]


@dataclass
class _Entry:
    """One service's merged block and its answer (``_PENDING`` until the child answers)."""

    doc: dict[str, Any]
    key: str
    answer: Any = _PENDING
    asked: bool = False  # with a child now: not asked again meanwhile

    def same(self, doc: dict[str, Any], key: str) -> bool:
        # the key makes NaN equal to itself, the dicts compare sets by content: an answer
        # is found again whatever the block holds (no revisit asks for the same anew)
        return key == self.key or doc == self.doc


def doc_key(doc: dict[str, Any]) -> str:
    try:
        return json.dumps(doc, sort_keys=True, default=repr)
    except (TypeError, ValueError):  # keys of mixed types (YAML allows them): unsortable
        return repr(doc)


class GeneratorChecks:
    """Per service: the last merged block asked for and its answer; the pending services;
    the one task validating them (``check``: a batch of blocks -> their answers, raising
    CheckFailed; injected by unit tests, which start no process)."""

    def __init__(
        self,
        revisit: Callable[[str], None],
        check: Check = services_in_child,
        check_now: CheckNow = services_from_child,
    ) -> None:
        self._revisit = revisit
        self._check = check
        self._check_now = check_now
        self._entries: dict[str, _Entry] = {}
        self._pending: set[str] = set()
        self._task: asyncio.Task[None] | None = None
        self._backoff = Backoff(RETRY_BASE, RETRY_CAP)

    def config(
        self,
        name: str,
        file_config: ServiceConfig,
        found: Mapping[str, Any],
        current: ServiceConfig,
    ) -> ServiceConfig:
        """``file_config`` with ``found`` (the registry's generator settings) under it;
        ``current`` while a child checks them. Raises ``modelbase.ValidationError`` when
        the merged block is invalid."""
        doc = merged_doc(file_config, found)
        if doc is None:  # no settings (any more): nothing to keep
            self._entries.pop(name, None)
            self._pending.discard(name)
            return file_config
        if not modelbase.is_plain():
            return ServiceConfig.model_validate(doc)  # type: ignore[attr-defined]
        key = doc_key(doc)
        entry = self._entries.get(name)
        if entry is None or not entry.same(doc, key):
            entry = self._entries[name] = _Entry(doc, key)
        if entry.answer is _PENDING:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                return self._answer_now(name, entry, current)
            if not entry.asked:
                self._pending.add(name)
            if self._task is None or self._task.done():
                # its first step runs after this loop step: what the step asks joins the batch
                self._task = loop.create_task(self._run(), name="generator-checks")
            return current
        return self._kept(entry)

    def retain(self, names: Mapping[str, Any]) -> None:
        """Forget the services not in ``names`` (removed by a config reload)."""
        for name in [n for n in self._entries if n not in names]:
            del self._entries[name]
            self._pending.discard(name)

    async def settled(self, timeout: float) -> None:
        """Wait (up to ``timeout``) until no settings wait for a child's answer: the first
        hand-over to HAProxy carries them, as when they were validated in-process."""
        task = self._task
        if task is not None and not task.done():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(task), timeout)

    def kept(self) -> int:
        """How many answers (or pending blocks) are kept: at most one per service."""
        return len(self._entries)

    def _answer_now(self, name: str, entry: _Entry, current: ServiceConfig) -> ServiceConfig:
        """No running loop (a tool, a test): the child is waited for here."""
        try:
            (entry.answer,) = self._check_now([entry.doc])
        except CheckFailed as exc:
            self._failed([name], exc, None)
            return current
        return self._kept(entry)

    @staticmethod
    def _kept(entry: _Entry) -> ServiceConfig:
        """The answer kept: the valid config, or pydantic's message raised."""
        if isinstance(entry.answer, str):
            raise modelbase.ValidationError(entry.answer)
        return entry.answer

    async def _run(self) -> None:
        """Validate what is pending, one child per batch, until nothing is. The loop ends
        only with nothing pending, and a later ask sees the task done: no lost wakeup."""
        loop = asyncio.get_running_loop()
        while self._pending:
            batch = {n: self._entries[n] for n in sorted(self._pending) if n in self._entries}
            self._pending.clear()
            for entry in batch.values():
                entry.asked = True
            if not batch:  # all forgotten meanwhile (settings removed, services removed)
                break
            try:
                answers = await self._check([entry.doc for entry in batch.values()])
                answered = list(zip(batch.items(), answers, strict=True))
            except Exception as exc:  # CheckFailed, or a bug: nothing is kept, try again
                delay = self._backoff.next()
                for entry in batch.values():
                    entry.asked = False
                self._failed(list(batch), exc, delay)
                # those asked anew meanwhile are pending already; the rest is again
                self._pending.update(n for n, e in batch.items() if self._entries.get(n) is e)
                await asyncio.sleep(delay)
                continue
            self._backoff.reset()
            for (name, entry), answer in answered:
                entry.answer = answer
                if self._entries.get(name) is entry:  # still the settings asked for
                    loop.call_soon(self._revisit, name)  # one failing: not the others

    @staticmethod
    def _failed(names: list[str], exc: BaseException, delay: float | None) -> None:
        event(log, "generator_config_check_failed", level=logging.WARNING,
              services=len(names), first=names[0] if names else None, retry_in=delay,
              error=f"{type(exc).__name__}: {exc}".replace("\n", " ")[:300])  # fmt: skip
