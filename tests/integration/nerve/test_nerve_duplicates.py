"""nerve in process, nothing listening: duplicate registrations are refused, shutdown is quick."""

from __future__ import annotations

import time

from nerve_testlib import nerve_config, running_nerve, zk_service

from testbed.process import free_port


async def test_two_services_with_one_registration_are_refused_and_shutdown_is_quick() -> None:
    dead = f"127.0.0.1:{free_port()}"  # no ZooKeeper there: nothing was ever registered
    twin = zk_service(dead, "/s", 8080, checks=[])
    config = nerve_config({"a": twin, "b": dict(twin), "c": {**twin, "port": 8081}})
    async with running_nerve(config) as daemon:
        assert sorted(daemon.services) == ["a", "c"]
        stopping = time.monotonic()
    # Leaving running_nerve stopped it: no withdraw to wait for, nothing was registered.
    assert time.monotonic() - stopping < 1.9  # a withdraw would wait 2 s for ZooKeeper
