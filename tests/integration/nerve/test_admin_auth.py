"""admin.token_file: nerve's maintenance endpoints need the bearer token; reads do not.

A real nerve (in process) on a real ZooKeeper, its admin API over HTTP, and the
`nerve maint` / `nerve up` commands as subprocesses.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from kazoo.client import KazooClient
from nerve_testlib import (
    NERVE_BIN,
    admin_get,
    children,
    nerve_config,
    running_nerve,
    unique_path,
    until,
)
from nerve_testlib import zk_service as service

from testbed.process import free_port
from testbed.zookeeper import ZooKeeperServer

TOKEN = "tok-3f9a1c"


def post(port: int, path: str, token: str | None) -> tuple[int, str]:
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        data=json.dumps({"reason": "auth test"}).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    if token is not None:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def nerve_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(NERVE_BIN), *args], capture_output=True, text=True, timeout=30, check=False
    )


async def test_maintenance_needs_the_token_and_reads_do_not(
    zk: ZooKeeperServer, kz: KazooClient, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    token_file = tmp_path / "admin.token"
    token_file.write_text(TOKEN + "\n")
    path = unique_path()
    port = free_port()
    config = nerve_config(
        {"web": service(zk.hosts, path, free_port(), checks=[])},
        admin={"port": port, "token_file": str(token_file)},
        state_dir=str(tmp_path / "state"),
    )
    cfg = tmp_path / "nerve.json"
    cfg.write_text(json.dumps(config))
    async with running_nerve(config, cfg):
        await until(lambda: children(kz, path), what="registration")
        for token in (None, "wrong", TOKEN + "x"):
            code, body = await asyncio.to_thread(post, port, "/maintenance/web", token)
            assert code == 401, body
            assert "Bearer" in body
        assert children(kz, path), "a refused call changed nothing"
        status = await asyncio.to_thread(admin_get, port, "/status")  # reads need no token
        assert status["services"]["web"]["registered"] is True
        code, body = await asyncio.to_thread(post, port, "/maintenance/web", TOKEN)
        assert code == 200, body
        await until(lambda: not children(kz, path), what="withdrawal with the token")

        # The CLI: with -c it reads admin.token_file; with --admin alone it has none.
        url = f"http://127.0.0.1:{port}"
        refused = await asyncio.to_thread(nerve_cli, "up", "web", "--admin", url)
        assert refused.returncode == 1
        assert "HTTP 401" in refused.stderr and "--token-file" in refused.stderr
        done = await asyncio.to_thread(nerve_cli, "up", "web", "-c", str(cfg))
        assert done.returncode == 0, done.stderr
        await until(lambda: children(kz, path), what="registration after `nerve up`")
        flag = await asyncio.to_thread(
            nerve_cli, "maint", "web", "--reason", "x", "--admin", url,
            "--token-file", str(token_file),
        )  # fmt: skip
        assert flag.returncode == 0, flag.stderr
    assert TOKEN not in caplog.text, "the token is never logged"
    assert "admin_unauthorized" in caplog.text


async def test_without_a_token_file_maintenance_stays_open(
    zk: ZooKeeperServer, kz: KazooClient
) -> None:
    path = unique_path()
    port = free_port()
    config = nerve_config(
        {"web": service(zk.hosts, path, free_port(), checks=[])}, admin={"port": port}
    )
    async with running_nerve(config):
        await until(lambda: children(kz, path), what="registration")
        code, body = await asyncio.to_thread(post, port, "/maintenance/web", None)
        assert code == 200, body
