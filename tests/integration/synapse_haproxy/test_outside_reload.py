"""A reload synapse did not make (an operator's, a hook's) is planned within seconds, not
at the next 30 s sweep (real HAProxy, managed): the new worker ran an edited config file
without one of the servers, and synapse put it back at runtime."""

from __future__ import annotations

from pathlib import Path

from haproxy_helpers import eventually, read_back, serves, web

from synapse.contract import ApplyOutcome
from synapse.haproxy import reader
from synapse.haproxy.runtime import MasterClient, RuntimeClient
from testbed.process import free_port


async def test_an_outside_reload_is_planned_at_once(
    managed_factory, http_backend_factory, monkeypatch
):
    monkeypatch.setattr(reader, "FULL_READ_INTERVAL", 3600.0)  # the sweep out of the picture
    b1, b2 = http_backend_factory("b1"), http_backend_factory("b2")
    port = free_port()
    controller = managed_factory()
    first = await controller.apply([web(port, [b1, b2])], "t")
    assert first.reload is ApplyOutcome.DONE
    await read_back(controller)
    await serves(port, {"b1", "b2"})
    admin = RuntimeClient(controller.settings.runtime_sockets[0])
    before = (await admin.info())["Pid"]

    # An operator removes b2's line from the file and reloads HAProxy through its master.
    path = Path(controller.config.config_file_path)
    lines = path.read_text().splitlines()
    path.write_text("\n".join(line for line in lines if "server b2_" not in line) + "\n")
    assert controller.settings.master_socket is not None
    await MasterClient(str(controller.settings.master_socket)).reload()

    async def reloaded() -> bool:
        return (await admin.info())["Pid"] != before

    await eventually(reloaded, "the operator's new worker")
    await serves(port, {"b1", "b2"})  # b2 added again at runtime, within seconds
    assert controller._reader.outside is not None and controller._reader.outside.noticed == 1
    assert controller.info.reloads == 0  # (synapse's own: none; it planned what runs)
