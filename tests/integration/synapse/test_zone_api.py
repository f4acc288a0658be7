"""The zone endpoints (synapse/zone_api.py) and `synapse zone` (synapse/zone_cli.py).

Here ``apply`` is a fake that computes the zone decision of a fixed fleet (pure), to
test the API's answers; the HTTP server and the CLI are real. The daemon's own apply
(weights through HAProxy's runtime API) is tested in test_zone_routing.py.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client import CollectorRegistry

from smartstack.admin import AdminServer
from synapse.zone_api import ZoneAPI
from synapse.zone_config import ZoneRouting
from synapse.zone_state import Evacuations
from synapse.zones import ZoneServer, decide
from testbed.process import free_port

TOKEN = "zone-token-81"
FLEET = [
    ZoneServer(f"{z}-{i}", z) for z, n in (("az1", 2), ("az2", 2), ("az3", 6)) for i in range(n)
]
ROUTING: dict[str, ZoneRouting | None] = {"web": ZoneRouting(), "db": ZoneRouting(), "plain": None}


class FakeApply:
    """Stands in for the HAProxy side: records what it was given, may refuse."""

    def __init__(self) -> None:
        self.calls: list[Evacuations] = []
        self.fail = False
        self.persisted = True

    async def __call__(self, evac: Evacuations) -> tuple[Mapping[str, Any], bool]:
        if self.fail:
            raise RuntimeError("HAProxy socket gone")
        self.calls.append(evac)
        states = {}
        for name, routing in ROUTING.items():
            decision = decide(FLEET, routing, "az1", evac.for_service(name))
            if decision is not None:
                states[name] = decision.to_status()
        return states, self.persisted


def make(token: str | None = TOKEN) -> tuple[AdminServer, ZoneAPI, FakeApply]:
    admin = AdminServer("127.0.0.1", 0, CollectorRegistry(), lambda: {}, token=token)
    apply = FakeApply()
    api = ZoneAPI(Evacuations(), lambda: ROUTING, apply)
    api.add_routes(admin)
    return admin, api, apply


@pytest.fixture
async def client() -> AsyncIterator[tuple[aiohttp.ClientSession, ZoneAPI, FakeApply]]:
    admin, api, apply = make()
    await admin.start()  # the real admin server, on a free port
    try:
        async with aiohttp.ClientSession(base_url=admin.url) as session:
            yield session, api, apply
    finally:
        await admin.stop()


AUTH = {"Authorization": f"Bearer {TOKEN}"}


async def test_evacuate_and_restore_change_the_split(client) -> None:
    http, api, apply = client
    answer = await http.post("/zones/az1/evacuate", headers=AUTH)
    assert answer.status == 200
    body = await answer.json()
    assert body["changed"] is True and body["evacuations"]["global"] == ["az1"]
    assert body["services"]["web"]["share"] == {"az1": 0.0, "az2": 0.5, "az3": 0.5}
    assert set(body["services"]) == {"web", "db"}  # "plain" has no zone routing
    again = await (await http.post("/zones/az1/evacuate", headers=AUTH)).json()
    assert again["changed"] is False

    only_web = await http.post("/zones/az2/evacuate?service=web", headers=AUTH)
    body = await only_web.json()
    assert body["services"]["web"]["share"] == {"az1": 0.0, "az2": 0.0, "az3": 1.0}
    assert body["services"]["db"]["share"] == {"az1": 0.0, "az2": 0.5, "az3": 0.5}

    restored = await (await http.post("/zones/az1/restore", headers=AUTH)).json()
    assert restored["services"]["db"]["share"]["az1"] == 1.0
    assert api.evacuations == Evacuations().evacuate("az2", "web")
    shown = await (await http.get("/zones")).json()  # a read: no token needed
    assert shown == {"evacuations": {"global": [], "services": {"web": ["az2"]}}}
    assert len(apply.calls) == 4


@pytest.mark.parametrize(
    ("path", "status", "text"),
    [
        ("/zones/az1/evacuate?service=nosuch", 404, "unknown service 'nosuch'; known: db, plain"),
        ("/zones/az1/evacuate?service=plain", 409, "has no zone_routing"),
        ("/zones/a;b/evacuate", 400, "is not a zone name"),
        ("/zones/az1/evacuate?service=", 400, "empty service name"),  # not "every service"
        ("/zones/az1/restore?service=", 400, "empty service name"),
        ("/zones/az1/restore?service=web", 200, ""),
    ],
)
async def test_refusals(client, path: str, status: int, text: str) -> None:
    http, api, apply = client
    answer = await http.post(path, headers=AUTH)
    assert answer.status == status
    assert text in await answer.text()
    if status != 200:
        assert apply.calls == [] and api.evacuations == Evacuations()


async def test_a_zone_no_targeted_service_knows_is_refused() -> None:
    known = {"web": {"az1", "az2"}, "db": {"az3"}}
    admin = AdminServer("127.0.0.1", 0, CollectorRegistry(), lambda: {}, token=None)
    apply = FakeApply()
    api = ZoneAPI(Evacuations(), lambda: ROUTING, apply, lambda name, _: known[name])
    api.add_routes(admin)
    await admin.start()
    try:
        async with aiohttp.ClientSession(base_url=admin.url) as http:
            typo = await http.post("/zones/AZ1/evacuate?service=web")
            assert typo.status == 409
            assert "'AZ1' is unknown to web (known: az1, az2)" in await typo.text()
            other = await http.post("/zones/az3/evacuate?service=web")  # db's zone only
            assert other.status == 409 and api.evacuations == Evacuations()
            assert (await http.post("/zones/az3/evacuate")).status == 200  # db knows it
            assert (await http.post("/zones/AZ1/restore")).status == 200  # cleaning up
            nowhere = await http.post("/zones/az9/evacuate")
            assert "unknown to every service (known: az1, az2, az3)" in await nowhere.text()
    finally:
        await admin.stop()
    assert api.evacuations == Evacuations().evacuate("az3") and len(apply.calls) == 2


async def test_per_service_restore_of_a_global_evacuation_is_a_conflict(client) -> None:
    http, api, _ = client
    await http.post("/zones/az2/evacuate", headers=AUTH)
    answer = await http.post("/zones/az2/restore?service=web", headers=AUTH)
    assert answer.status == 409
    assert "restore it without a service" in await answer.text()
    assert api.evacuations.for_service("web") == {"az2"}


async def test_a_failed_apply_changes_nothing(client) -> None:
    http, api, apply = client
    apply.fail = True
    answer = await http.post("/zones/az2/evacuate", headers=AUTH)
    assert answer.status == 503
    assert "HAProxy socket gone" in await answer.text()
    assert api.evacuations == Evacuations()


async def test_changes_need_the_token_reads_do_not(client) -> None:
    http, _, apply = client
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": TOKEN}):
        answer = await http.post("/zones/az2/evacuate", headers=headers)
        assert answer.status == 401
        assert answer.headers["WWW-Authenticate"].startswith("Bearer")
    assert apply.calls == []
    assert (await http.get("/zones")).status == 200


# --- the CLI against a real admin server --------------------------------------------------


def synapse(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "synapse.cli", *args],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


async def test_cli_evacuates_and_restores_through_the_admin_api(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    admin, api, _ = make()
    admin.port = free_port()
    await admin.start()
    try:
        config = tmp_path / "synapse.json"
        config.write_text(json.dumps({
            "services": {"web": {"discovery": {"method": "base"}, "zone_routing": {}}},
            "admin": {"port": admin.port, "token_file": str(token_file)},
        }))  # fmt: skip
        done = await asyncio.to_thread(synapse, "zone", "evacuate", "az1", "-c", str(config))
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["services"]["web"]["share"]["az2"] == 0.5
        assert api.evacuations.for_service("web") == {"az1"}

        # --admin overrides the address; without a token file there is no token: 401
        url = f"http://127.0.0.1:{admin.port}"
        refused = await asyncio.to_thread(synapse, "zone", "restore", "az1", "--admin", url)
        assert refused.returncode == 1
        assert refused.stderr.startswith(f"error: {url}/zones/az1/restore: HTTP 401")
        missing = await asyncio.to_thread(
            synapse, "zone", "restore", "az1", "--service", "nosuch", "-c", str(config)
        )
        assert missing.returncode == 1 and "HTTP 404" in missing.stderr
        back = await asyncio.to_thread(
            synapse, "zone", "restore", "az1", "--admin", url, "--token-file", str(token_file)
        )
        assert back.returncode == 0, back.stderr
        assert api.evacuations == Evacuations()
    finally:
        await admin.stop()


def test_cli_errors_are_one_line_and_the_old_invocation_still_works(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    down = synapse("zone", "evacuate", "az1", "--admin", url)
    assert down.returncode == 1
    assert down.stderr.startswith(f"error: cannot reach the synapse admin API at {url}")
    assert "Traceback" not in down.stderr
    bad = synapse("zone", "evacuate", "a;b", "--admin", url)
    assert bad.returncode == 2 and "is not a zone name" in bad.stderr
    empty = synapse("zone", "evacuate", "az1", "--service", "", "--admin", url)
    assert empty.returncode == 2 and "empty service name" in empty.stderr
    no_scheme = synapse("zone", "evacuate", "az1", "--admin", "127.0.0.1:1")
    assert no_scheme.returncode == 1 and "not a URL" in no_scheme.stderr
    nowhere = synapse("zone", "evacuate", "az1")
    assert nowhere.returncode == 1 and "(-c) or its admin URL (--admin)" in nowhere.stderr
    config = tmp_path / "synapse.json"
    config.write_text(json.dumps({"services": {"web": {"discovery": {"method": "base"}}}}))
    old = synapse("-c", str(config), "-k")
    assert old.returncode == 0 and "ok (1 services)" in old.stdout


async def test_an_unknown_zone_can_be_forced_by_the_api_and_the_cli() -> None:
    """The typo guard has a way around it: a zone no service knows yet (synapse restarted
    while it has no records, and it is not in `zones`) is evacuated with ?force=1 /
    `--force`. A restore needs none."""
    admin = AdminServer("127.0.0.1", free_port(), CollectorRegistry(), lambda: {}, token=None)
    api = ZoneAPI(Evacuations(), lambda: ROUTING, FakeApply(), lambda name, _: {"az1"})
    api.add_routes(admin)
    await admin.start()
    url = f"http://127.0.0.1:{admin.port}"
    try:
        async with aiohttp.ClientSession(base_url=admin.url) as http:
            forced = await http.post("/zones/az5/evacuate?service=web&force=1")
            assert forced.status == 200 and (await forced.json())["changed"]
        assert api.evacuations.for_service("web") == {"az5"}
        refused = await asyncio.to_thread(synapse, "zone", "evacuate", "az6", "--admin", url)
        assert refused.returncode == 1 and "HTTP 409" in refused.stderr
        assert "--force" in refused.stderr
        done = await asyncio.to_thread(
            synapse, "zone", "evacuate", "az6", "--force", "--admin", url
        )
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["evacuations"]["global"] == ["az6"]
    finally:
        await admin.stop()


async def test_the_answer_says_whether_the_state_file_kept_the_change(client) -> None:
    http, api, apply = client
    answer = await http.post("/zones/az2/evacuate", headers=AUTH)
    assert (await answer.json())["persisted"] is True
    apply.persisted = False  # a full or read-only disk: applied in memory all the same
    answer = await http.post("/zones/az1/evacuate", headers=AUTH)
    assert answer.status == 200 and (await answer.json())["persisted"] is False
    assert api.evacuations == Evacuations().evacuate("az2").evacuate("az1")
