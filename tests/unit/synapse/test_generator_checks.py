"""The registry's generator settings checked by a child on plain models
(synapse/generator_checks.py), the child faked by a function (a unit test starts no process):
batches, revisits, no lost wakeup, retries that keep nothing, one answer per service."""

from __future__ import annotations

import asyncio
import datetime
import io
import logging
import pickle
import sys
from typing import Any

import pytest
from synapse_testlib import service_config

from smartstack import logs, model_plain, modelbase
from synapse import config_child, generator_checks
from synapse.config_child import CheckFailed
from synapse.generator_checks import GeneratorChecks, doc_key

ZK = {"method": "zookeeper", "hosts": ["127.0.0.1:2181"], "path": "/nerve/web"}
CURRENT: Any = object()  # the service's config before the answer


@pytest.fixture(autouse=True)
def plain(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(modelbase, "is_plain", lambda: True)
    monkeypatch.setattr(modelbase, "ValidationError", model_plain.ValidationError)
    monkeypatch.setattr(generator_checks, "RETRY_BASE", 0.001)
    monkeypatch.setattr(generator_checks, "RETRY_CAP", 0.001)


def fields(record: logging.LogRecord) -> dict[str, Any]:
    return getattr(record, logs._FIELDS)


def settings(n: int) -> dict[str, Any]:
    return {"haproxy": {"server_options": f"maxconn {n}"}}


class FakeChild:
    """Answers each block with itself (the "valid config"), or a message for an invalid
    one; fails the first ``failures`` calls; ``gate`` holds a batch until set."""

    def __init__(self, failures: int = 0) -> None:
        self.batches: list[list[dict[str, Any]]] = []
        self.failures = failures
        self.gate: asyncio.Event | None = None

    async def __call__(self, docs: list[dict[str, Any]]) -> list[Any]:
        docs = pickle.loads(pickle.dumps(docs, config_child.PROTOCOL))  # as it travels
        self.batches.append(docs)
        if self.gate is not None:
            await self.gate.wait()
        if self.failures:
            self.failures -= 1
            raise CheckFailed("the child was killed (SIGKILL)")
        return [("bad" if d["haproxy"].get("backend_order") else d) for d in docs]


def checks(child: FakeChild, revisited: list[str]) -> GeneratorChecks:
    return GeneratorChecks(revisited.append, check=child, check_now=lambda docs: docs)


def test_one_child_for_all_and_each_service_revisited() -> None:
    child, revisited = FakeChild(), []
    gen = checks(child, revisited)
    file_cfg = service_config(ZK, haproxy={"port": 3000})

    async def scenario() -> None:
        for n, name in enumerate(("a", "b", "c")):
            found = {"haproxy": {"backend_order": "sideways"}} if name == "c" else settings(n)
            assert gen.config(name, file_cfg, found, CURRENT) is CURRENT  # not yet
        await gen.settled(5.0)
        await asyncio.sleep(0)  # the revisits are called on the loop

    asyncio.run(scenario())
    assert [len(b) for b in child.batches] == [3] and sorted(revisited) == ["a", "b", "c"]
    answer = gen.config("a", file_cfg, settings(0), CURRENT)
    assert answer["haproxy"]["server_options"] == "maxconn 0"  # the child's answer, kept
    assert answer["haproxy"]["port"] == 3000  # the file's block wins
    with pytest.raises(modelbase.ValidationError, match="bad"):
        gen.config("c", file_cfg, {"haproxy": {"backend_order": "sideways"}}, CURRENT)


def test_no_lost_wakeup_while_a_batch_runs_or_as_it_ends() -> None:
    """Asked while the child runs: the next batch; asked from a revisit, as the task
    ends: a new task. (Once a worker thread ended before it was marked done, and what
    was queued in between never started a worker.)"""
    child, revisited = FakeChild(), []
    file_cfg = service_config(ZK, haproxy={"port": 3000})

    def revisit(name: str) -> None:
        revisited.append(name)
        if name == "b":  # the last answer of the task's last batch
            assert gen.config("c", file_cfg, settings(3), CURRENT) is CURRENT

    gen = GeneratorChecks(revisit, check=child)

    async def scenario() -> None:
        child.gate = asyncio.Event()
        gen.config("a", file_cfg, settings(1), CURRENT)
        await asyncio.sleep(0.01)  # the batch of "a" is with the child
        assert len(child.batches) == 1
        gen.config("b", file_cfg, settings(2), CURRENT)
        child.gate.set()
        for _ in range(3):
            await gen.settled(5.0)
            await asyncio.sleep(0)

    asyncio.run(scenario())
    assert [[d["haproxy"]["server_options"] for d in b] for b in child.batches] == [
        ["maxconn 1"],
        ["maxconn 2"],
        ["maxconn 3"],
    ]
    assert revisited == ["a", "b", "c"]
    assert gen.config("c", file_cfg, settings(3), CURRENT)["haproxy"]["port"] == 3000


def test_two_services_with_identical_blocks_are_both_revisited() -> None:
    child, revisited = FakeChild(), []
    gen = checks(child, revisited)
    file_cfg = service_config(ZK, haproxy={"port": 3000})

    async def scenario() -> None:
        gen.config("a", file_cfg, settings(1), CURRENT)
        gen.config("b", file_cfg, settings(1), CURRENT)
        await gen.settled(5.0)
        await asyncio.sleep(0)

    asyncio.run(scenario())
    assert sorted(revisited) == ["a", "b"]
    assert gen.config("b", file_cfg, settings(1), CURRENT) is not CURRENT


def test_values_json_cannot_carry_reach_the_child() -> None:
    """YAML makes dates, sets and binary values: the blocks travel pickled, and the key
    of a block holding them (or keys of mixed types) is computed without error."""
    child, revisited = FakeChild(), []
    gen = checks(child, revisited)
    file_cfg = service_config(ZK, haproxy={"port": 3000})
    odd = {"haproxy": {"server_options": datetime.date(2026, 1, 2), "x": {1, 2}, "y": b"\x00"}}

    async def scenario() -> None:
        assert gen.config("a", file_cfg, odd, CURRENT) is CURRENT
        await gen.settled(5.0)
        await asyncio.sleep(0)

    asyncio.run(scenario())
    assert revisited == ["a"]
    assert child.batches[0][0]["haproxy"]["server_options"] == datetime.date(2026, 1, 2)
    assert gen.config("a", file_cfg, odd, CURRENT)["haproxy"]["x"] == {1, 2}  # found again
    assert doc_key({1: "a", "b": 2}) == repr({1: "a", "b": 2})  # unsortable keys


def test_the_child_reads_pickled_blocks_and_answers_a_message_for_a_date(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The child's own side (in this process: main with stdin/stdout replaced)."""
    monkeypatch.undo()  # pydantic here, as in the child
    docs = [
        {"discovery": ZK, "haproxy": {"server_options": datetime.date(2026, 1, 2)}},
        {"discovery": ZK, "haproxy": {"server_options": "check"}},
    ]
    out = io.BytesIO()
    stdin = io.TextIOWrapper(io.BytesIO(pickle.dumps(docs, config_child.PROTOCOL)))
    monkeypatch.setattr(sys, "stdin", stdin)
    monkeypatch.setattr(sys, "stdout", io.TextIOWrapper(out))
    assert config_child.main(["--service"]) == 0
    invalid, valid = config_child.service_answers(out.getvalue(), b"", 2)
    assert "server_options" in invalid and "string" in invalid  # pydantic's message
    assert valid.haproxy.server_options == "check"
    with pytest.raises(CheckFailed, match="it died"):
        config_child.service_answers(b"", b"it died", 2)


def test_a_failed_child_is_retried_and_nothing_is_kept(caplog: pytest.LogCaptureFixture) -> None:
    child, revisited, meanwhile = FakeChild(failures=2), [], []
    file_cfg = service_config(ZK, haproxy={"port": 3000})

    async def check(docs: list[dict[str, Any]]) -> list[Any]:
        # asked again while the child runs (after a failure too): pending, not "invalid",
        # and not asked of another child
        meanwhile.append(gen.config("a", file_cfg, settings(1), CURRENT))
        return await child(docs)

    gen = GeneratorChecks(revisited.append, check=check)

    async def scenario() -> None:
        assert gen.config("a", file_cfg, settings(1), CURRENT) is CURRENT
        await gen.settled(5.0)
        await asyncio.sleep(0)

    with caplog.at_level(logging.WARNING, logger="synapse.generator_checks"):
        asyncio.run(scenario())
    assert len(child.batches) == 3 and revisited == ["a"]
    assert meanwhile == [CURRENT] * 3
    failed = [r for r in caplog.records if r.getMessage() == "generator_config_check_failed"]
    assert len(failed) == 2 and "SIGKILL" in fields(failed[0])["error"]
    assert gen.config("a", file_cfg, settings(1), CURRENT)["haproxy"]["server_options"] == (
        "maxconn 1"
    )


def test_one_answer_kept_per_service() -> None:
    """A fleet-wide settings change replaces each service's answer: no dead answers."""
    child, revisited = FakeChild(), []
    gen = checks(child, revisited)
    file_cfg = service_config(ZK, haproxy={"port": 3000})

    async def scenario() -> None:
        for round_ in range(20):
            for name in ("a", "b", "c"):
                gen.config(name, file_cfg, settings(round_), CURRENT)
            await gen.settled(5.0)
            assert gen.kept() == 3

    asyncio.run(scenario())
    assert len(child.batches) == 20
    gen.config("a", file_cfg, {}, CURRENT)  # no settings any more: nothing kept for it
    gen.retain({"b": None})  # "c" was removed by a config reload
    assert gen.kept() == 1


def test_without_a_loop_the_answer_is_waited_for_and_returned(
    caplog: pytest.LogCaptureFixture,
) -> None:
    file_cfg = service_config(ZK, haproxy={"port": 3000})
    gen = GeneratorChecks(lambda name: None, check=FakeChild(), check_now=lambda docs: docs)
    assert gen.config("a", file_cfg, settings(1), CURRENT)["haproxy"]["port"] == 3000

    def crash(docs: list[dict[str, Any]]) -> list[Any]:
        raise CheckFailed("timed out")

    gen = GeneratorChecks(lambda name: None, check=FakeChild(), check_now=crash)
    assert gen.config("a", file_cfg, settings(1), CURRENT) is CURRENT  # not kept as invalid
    assert gen.kept() == 1 and "generator_config_check_failed" in caplog.text
