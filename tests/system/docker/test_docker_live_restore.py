"""A dockerd restarted with --live-restore (a real private daemon): its containers keep running
and, from Docker 25.0, their health is reset to "starting" until the next probe; smartstack's
ContainerWatch keeps a healthy container serving through that window (restored_health).

An older dockerd (Debian bookworm's 20.10) keeps the health as it was: the test then checks only
that the restart withdrew nothing (the rule has no window to act in)."""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from dockertestlib import eventually

from smartstack.docker_events import ContainerInfo, ContainerWatch
from testbed.dockerd import DockerDaemon
from testbed.images import busybox_image

SECOND = 1_000_000_000  # healthcheck durations are in ns
# No start interval (API 1.44, not in dockerd 20.10) and no start period: the first probe comes
# one interval after the start, and again one interval after a restore. 8 s: healthy soon
# enough, and a "starting" window of several seconds once the restarted daemon answers.
INTERVAL = 8
HEALTHCHECK = {"test": ["CMD", "test", "-f", "/www/healthy"], "interval": INTERVAL * SECOND,
               "timeout": 2 * SECOND, "retries": 1, "start_period": 0}  # fmt: skip


def state(client: Any, container_id: str) -> dict[str, Any]:
    return client.api.inspect_container(container_id)["State"]


def health(client: Any, container_id: str) -> str | None:
    return (state(client, container_id).get("Health") or {}).get("Status")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def assert_serving(reports: list[dict[str, ContainerInfo]], cid: str) -> None:
    seen = [report.get(cid) for report in reports]
    assert all(info is not None and info.serving for info in seen), [
        (info.health, info.health_held) if info else None for info in seen
    ]


async def test_healthy_container_kept_serving_across_live_restore() -> None:
    workdir = Path(tempfile.mkdtemp(prefix="smst-live-"))
    daemon = DockerDaemon(workdir, extra_args=["--live-restore"]).start()
    client = daemon.client()
    reports: list[dict[str, ContainerInfo]] = []
    watch = ContainerWatch(daemon.base_url, asyncio.get_running_loop(),
                           reports.append, labels=["app=live"], backoff=(0.1, 0.5))  # fmt: skip
    try:
        client.networks.create("livenet")
        # Not published: docker-proxy is a child of dockerd and would not survive its restart.
        web = client.containers.run(busybox_image(client), detach=True, name="live",
                                    network="livenet", labels={"app": "live"},
                                    healthcheck=HEALTHCHECK)  # fmt: skip
        cid = web.id
        watch.start()
        await eventually(lambda: health(client, cid) == "healthy", INTERVAL + 10, "healthy")

        def reported() -> ContainerInfo | None:
            return reports[-1].get(cid) if reports else None

        await eventually(lambda: (info := reported()) and info.serving, 10, "the watch: serving")
        first = len(reports) - 1
        before = state(client, cid)
        resyncs = watch.resyncs

        # `systemctl restart docker` with live-restore: the container keeps running.
        client.close()
        daemon.stop_daemon_only()
        assert alive(before["Pid"]), "the container died with dockerd: no live-restore"
        await eventually(lambda: not watch.connected, 10, "the watch to see dockerd gone")
        daemon.start()
        client = daemon.client()
        after = state(client, cid)
        assert (after["Running"], after["Pid"], after["StartedAt"]) == (
            True, before["Pid"], before["StartedAt"]
        ), "the container was not live-restored"  # fmt: skip
        await eventually(lambda: watch.resyncs > resyncs, 10, "the watch's resync")
        assert_serving(reports[first:], cid)  # whatever this Docker does, nothing withdrawn
        restored = (after.get("Health") or {}).get("Status")
        if restored != "starting":  # dockerd before 25.0 (moby PR 47051) keeps the health:
            assert restored == "healthy"  # the promise held; the rule has no window to act in
            return  # (its unit tests: tests/unit/docker/test_docker_event_rules.py)

        # The watch resynced while Docker still said "starting" (health only goes forward from
        # there: starting now means starting when the watch listed it).
        assert health(client, cid) == "starting", "the probe came before the watch's resync"
        window_start = time.monotonic()
        await eventually(lambda: health(client, cid) != "starting", INTERVAL + 5, "a new probe")
        window = time.monotonic() - window_start
        assert health(client, cid) == "healthy"
        assert window > 1.0, f"Docker said 'starting' for only {window:.1f}s after the resync"

        # Docker's probe result reaches the watch: healthy, no longer held.
        await eventually(lambda: (info := reported()) and not info.health_held, 10, "the probe")
        assert_serving(reports[first:], cid)
        assert any(r[cid].health_held for r in reports[first:]), "the rule was not exercised"
        assert reported().serving  # type: ignore[union-attr]
        assert watch.connected
    finally:
        await watch.stop()
        client.close()
        daemon.stop()
        leftovers = daemon.leftovers()
        shutil.rmtree(workdir, ignore_errors=True)
        assert leftovers == []
