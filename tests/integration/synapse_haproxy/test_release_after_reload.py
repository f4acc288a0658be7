"""After synapse's own reload no kept admin connection holds the old worker (real HAProxy,
managed): HAProxy keeps an old worker alive while a CLI connection to it is open, until
its `stats timeout` (10 s by default). The controller's, the settle reads' and the state
dumper's kept connections are all released by the reloading apply."""

from __future__ import annotations

import asyncio
import dataclasses
import time

from haproxy_helpers import eventually, read_back, server, service
from prometheus_client import CollectorRegistry

from synapse.contract import ApplyOutcome
from synapse.haproxy import view_ops
from synapse.haproxy.answers import ProcInfo
from synapse.haproxy.runtime import MasterClient
from synapse.haproxy.sockets import HAProxySocketError

GONE_WITHIN = 2.0  # seconds for the old worker to exit (else: held until `stats timeout`)


async def proc_of(master: MasterClient) -> ProcInfo:
    for _ in range(50):  # (the master answers between reloads)
        try:
            return await master.show_proc()
        except HAProxySocketError:
            await asyncio.sleep(0.05)
    raise AssertionError("the master socket did not answer")


async def test_no_kept_connection_holds_the_old_worker_after_a_reload(managed_factory, monkeypatch):
    monkeypatch.setattr(view_ops, "CHECK_AFTER", 0.05)
    controller = managed_factory(CollectorRegistry())
    a = service("a", [server("127.0.0.1", 23201, "x")], backend_only=True)
    await controller.apply([a], "start")
    await read_back(controller)
    reader, dumper = controller._reader, controller._dumper
    assert dumper is not None

    async def dumped() -> bool:  # (a round a second: its connection kept since)
        return dumper._blocks is not None and dumper.runtime._held is not None

    await eventually(dumped, "a state dump on a kept connection")
    reads = reader.view.partial_reads
    a2 = dataclasses.replace(a, servers=[*a.servers, server("127.0.0.1", 23202, "n")])
    await controller.apply([a2], "add a server: runtime commands, then a settle read")

    async def settled() -> bool:
        return reader.view.partial_reads > reads and not reader.view.stale

    await eventually(settled, "the settle read")
    assert reader._apart is not None and reader._apart._held is not None  # kept
    master = MasterClient(str(controller.settings.master_socket))
    before = (await proc_of(master)).reloads
    b = service("b", [server("127.0.0.1", 23301, "y")], backend_only=True)
    result = await controller.apply([a2, b], "a new backend: a reload")
    assert result.reload is ApplyOutcome.DONE, result
    start, seen = time.monotonic(), []
    while time.monotonic() - start < GONE_WITHIN:
        proc = await proc_of(master)
        seen.append(proc.old_workers)
        if proc.reloads > before and not proc.old_workers:
            break
        await asyncio.sleep(0.1)
    assert proc.reloads > before and not proc.old_workers, seen
