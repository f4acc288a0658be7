"""A route moving to another service keeps its current backend while the new one cannot
serve: at runtime until the reload creates it and HAProxy has a server there that takes
requests, in the files until it has servers."""

from __future__ import annotations

from pathlib import Path

from haproxy_helpers import server, service
from prometheus_client import CollectorRegistry

from synapse.haproxy.metrics import HAProxyMetrics
from synapse.haproxy.ops import Op
from synapse.haproxy.route_sync import RouteSync, parse_show_map
from synapse.haproxy.running import ADMIN_FORCED_MAINT, RunningServer
from synapse.model import DesiredService

EXACT = "haproxy.routes-exact.map"


class _Maps:
    """An HAProxy's maps behind a runtime API: `show map`, and map commands applied; and
    its backends' servers (`show servers state`: ``servers``, set by the test)."""

    def __init__(self, directory: Path, exact: dict[str, str]) -> None:
        self.maps = {str(directory / EXACT): dict(exact)}
        self.sent: list[str] = []
        self.servers: dict[str, dict[str, RunningServer]] = {"shop": _ready("shop")}
        self.asked: list[list[str]] = []

    async def read_state(
        self, backends: list[str], with_pid: bool = True
    ) -> tuple[None, dict[str, dict[str, RunningServer] | None]]:
        self.asked.append(backends)
        return None, {name: self.servers.get(name) for name in backends}

    async def execute(self, command: str) -> str:
        entries = self.maps.get(command.split()[2], {})
        return "".join(f"0x{i:x} {k} {v}\n" for i, (k, v) in enumerate(entries.items()))

    async def run_ops(self, ops: list[Op]) -> list[str | None]:
        for op in ops:
            verb, _, path, key, *value = op.command.split()
            self.sent.append(f"{verb} {key} {' '.join(value)}".strip())
            entries = self.maps.setdefault(path, {})
            if verb == "del":
                del entries[key]
            else:
                entries[key] = value[0]
        return [None] * len(ops)


def _ready(backend: str, admin_state: int = 0, weight: int = 1) -> dict[str, RunningServer]:
    """HAProxy's servers of ``backend``: one, ready (or as given)."""
    found = RunningServer(backend, "s1", 1, "10.0.0.1", 8000, 2, admin_state, weight, weight)
    return {"s1": found}


def _svc(name: str, hosts: list[str], servers: int = 1) -> DesiredService:
    found = [server("10.0.0.1", 8000 + i) for i in range(servers)]
    return service(name, found, backend_only=True, routes={"hosts": hosts})


async def _setup(tmp_path: Path) -> tuple[RouteSync, _Maps]:
    haproxy = _Maps(tmp_path, {"shop.test/": "shop"})
    sync = RouteSync([haproxy], HAProxyMetrics(CollectorRegistry()))  # type: ignore[list-item]
    sync.configure(tmp_path / "haproxy.cfg")
    sync.want([_svc("shop", ["shop.test"])])
    sync.write_wanted()
    sync.invalidate()  # HAProxy started from those files
    assert await sync.sync(["shop"]) == ([], [])
    return sync, haproxy


def _file(tmp_path: Path) -> dict[str, str]:
    text = (tmp_path / EXACT).read_text()
    return parse_show_map("".join(f"0x0 {line}\n" for line in text.splitlines()[1:])) or {}


async def test_a_host_moving_to_a_new_service_stays_on_the_old_one_until_the_reload(tmp_path):
    sync, haproxy = await _setup(tmp_path)
    sync.want([_svc("shop", ["old.shop.test"]), _svc("shop2", ["shop.test"])])
    await sync.sync(["shop"])  # shop2's backend needs the reload
    assert haproxy.sent == ["add old.shop.test/ shop"]  # no `del shop.test/`: no 404
    assert haproxy.maps[str(tmp_path / EXACT)]["shop.test/"] == "shop"
    assert _file(tmp_path)["shop.test/"] == "shop"  # the files say what runs
    sync.write_wanted()  # the reload: shop2 has servers, it reads the move
    assert _file(tmp_path) == {"shop.test/": "shop2", "old.shop.test/": "shop"}
    haproxy.maps[str(tmp_path / EXACT)] = _file(tmp_path)
    sync.invalidate()
    assert await sync.sync(["shop", "shop2"]) == ([], [])  # HAProxy holds what is wanted
    assert sync.served == sync.wanted


async def test_a_new_service_without_servers_gets_the_host_once_it_has_some(tmp_path):
    sync, haproxy = await _setup(tmp_path)
    sync.want([_svc("shop", ["old.shop.test"]), _svc("shop2", ["shop.test"], servers=0)])
    await sync.sync(["shop"])
    sync.write_wanted()  # the reload before shop2's watcher answered: the host stays
    assert _file(tmp_path)["shop.test/"] == "shop"
    sync.invalidate()
    haproxy.sent.clear()
    assert await sync.sync(["shop", "shop2"]) == ([], [])  # its backend is empty: no 503
    sync.want([_svc("shop", ["old.shop.test"]), _svc("shop2", ["shop.test"])])
    haproxy.servers["shop2"] = _ready("shop2")  # the apply's commands added one
    await sync.sync(["shop", "shop2"])  # its servers came
    assert haproxy.sent == ["set shop.test/ shop2"]
    assert sync.served == sync.wanted and _file(tmp_path)["shop.test/"] == "shop2"


async def test_a_move_is_held_only_while_the_new_backend_cannot_serve(tmp_path):
    sync, haproxy = await _setup(tmp_path)
    sync.want([_svc("shop", ["old.shop.test"]), _svc("shop2", ["shop.test"], servers=0)])
    await sync.sync(["shop", "shop2"])  # running but empty: held
    assert haproxy.sent == ["add old.shop.test/ shop"]
    # shop removed in the same change: its backend serves until the reload, held there
    sync.want([_svc("shop2", ["shop.test"], servers=0)])
    await sync.sync(["shop", "shop2"])
    assert haproxy.sent[1:] == ["del old.shop.test/"]
    # shop2 runs and has servers: the move at once
    sync.want([_svc("shop2", ["shop.test"])])
    haproxy.servers["shop2"] = _ready("shop2")
    await sync.sync(["shop", "shop2"])
    assert haproxy.sent[2:] == ["set shop.test/ shop2"]
    # the old backend is gone (a stale entry) or has no servers either: nothing to keep
    for case, servers, running in (("gone", 1, ["other"]), ("empty", 0, ["shop"])):
        (tmp_path / case).mkdir()
        sync, haproxy = await _setup(tmp_path / case)
        sync.want([_svc("shop", ["old.shop.test"], servers), _svc("shop2", ["shop.test"])])
        await sync.sync(running)
        assert "del shop.test/" in haproxy.sent, case


async def test_a_move_waits_for_a_server_haproxy_has_not_only_a_desired_one(tmp_path):
    """shop2 (static-rr: a server only a reload adds) has a server in the desired state while
    its reload waits (rate limit): HAProxy's shop2 is empty, in maintenance or at weight 0
    meanwhile: the host stays on shop (no 503); it moves once a server takes requests."""
    sync, haproxy = await _setup(tmp_path)
    sync.want([_svc("shop", ["old.shop.test"]), _svc("shop2", ["shop.test"], servers=0)])
    await sync.sync(["shop", "shop2"])  # the reload made shop2, empty
    assert haproxy.asked == []  # no servers desired there either: nothing to ask
    sync.want([_svc("shop", ["old.shop.test"]), _svc("shop2", ["shop.test"])])
    for servers in ({}, _ready("shop2", ADMIN_FORCED_MAINT), _ready("shop2", weight=0)):
        haproxy.servers["shop2"] = servers
        await sync.sync(["shop", "shop2"])
        assert haproxy.sent == ["add old.shop.test/ shop"], servers
        assert haproxy.maps[str(tmp_path / EXACT)]["shop.test/"] == "shop"
    assert haproxy.asked == [["shop2"]] * 3
    sync.write_wanted()  # the reload brings shop2's server: the files move the host
    assert _file(tmp_path)["shop.test/"] == "shop2"
    haproxy.servers["shop2"] = _ready("shop2")  # (as it would run after that reload)
    await sync.sync(["shop", "shop2"])
    assert haproxy.sent[1:] == ["set shop.test/ shop2"]
