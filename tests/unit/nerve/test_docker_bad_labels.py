"""Docker mode: a container with unusable labels is logged once while it exists, and its
entry in /status (``docker.invalid_labels``) goes with it (100 created and removed kept 100
entries: /status 406 -> 15,010 bytes, unbounded)."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import pytest
from test_docker_maint_owner import Engine, container, engine, source

from nerve.maintenance import MaintenanceStore
from smartstack.logs import _FIELDS as FIELDS

__all__ = ["engine"]  # (the fixture, used by name)


def bad(cid: str) -> object:
    good = container(cid, name=f"c{cid[:4]}")
    return replace(good, labels={**good.labels, "smartstack.port": "not-a-port"})


async def test_a_removed_containers_label_error_leaves_the_status(
    engine: Engine, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="nerve.docker")
    made, watch = source(MaintenanceStore(tmp_path))
    try:
        ids = [f"{i:04x}" * 16 for i in range(100)]
        for cid in ids:
            watch._apply_update(cid, bad(cid))  # docker run with a bad label
            watch._apply_update(cid, bad(cid))  # an event of the same container: not again
            assert cid in made.status()["invalid_labels"]
            watch._apply_update(cid, None)  # docker rm
        assert made.status()["invalid_labels"] == {}
        logged = [vars(r)[FIELDS] for r in caplog.records
                  if r.getMessage() == "docker_labels_invalid"]  # fmt: skip
        assert len(logged) == 100
        watch._apply_reset({ids[0]: bad(ids[0])})  # a listing: the one left, once
        watch._apply_reset({ids[0]: bad(ids[0])})
        assert list(made.status()["invalid_labels"]) == [ids[0]]
    finally:
        await made.stop(withdraw=False)
