"""The real ``python -m synapse.config_child --service`` child of generator settings'
checks (synapse/generator_checks.py): blocks pickled in, answers pickled out, a date
answered with pydantic's message; a child that dies is a CheckFailed (retried, not kept)."""

from __future__ import annotations

import asyncio
import datetime
import sys

import pytest

from synapse import config_child
from synapse.config_child import CheckFailed, services_from_child, services_in_child

ZK = {"method": "zookeeper", "hosts": ["127.0.0.1:2181"], "path": "/nerve/web"}
DOCS = [
    {"discovery": ZK, "haproxy": {"server_options": datetime.date(2026, 1, 2)}},
    {"discovery": ZK, "haproxy": {"server_options": "check", "port": 3000}},
]


def test_the_child_answers_each_block_with_the_loop_running_or_not() -> None:
    for invalid, valid in (asyncio.run(services_in_child(DOCS)), services_from_child(DOCS)):
        assert isinstance(invalid, str) and "server_options" in invalid
        assert (valid.haproxy.server_options, valid.haproxy.port) == ("check", 3000)


def test_a_child_that_dies_or_hangs_is_a_check_failed(monkeypatch: pytest.MonkeyPatch) -> None:
    dies = [sys.executable, "-c", "import sys; sys.stderr.write('killed'); sys.exit(9)"]
    monkeypatch.setattr(config_child, "service_command", lambda fd: dies)
    with pytest.raises(CheckFailed, match="killed"):
        asyncio.run(services_in_child(DOCS))
    with pytest.raises(CheckFailed, match="killed"):
        services_from_child(DOCS)
    hangs = [sys.executable, "-c", "import time; time.sleep(30)"]
    monkeypatch.setattr(config_child, "service_command", lambda fd: hangs)
    monkeypatch.setattr(config_child, "CHILD_TIMEOUT", 0.5)
    with pytest.raises(CheckFailed, match="no answer within"):
        asyncio.run(services_in_child(DOCS))
