"""An exec check whose program cannot be started gives no verdict (review s32: a typo pushed
fleet-wide by SIGHUP withdrew every instance within 2 s). Real commands through /bin/sh and
a real nerve process against a real ZooKeeper."""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path

from kazoo.client import KazooClient
from nerve_testlib import (
    NerveProcess,
    admin_get,
    admin_ready,
    children,
    children_seen,
    nerve_config,
    unique_path,
    until,
    write_config,
    zk_service,
)

from nerve.checks.exec import ExecCheck
from testbed.process import free_port
from testbed.zookeeper import ZooKeeperServer


async def test_only_a_program_that_cannot_be_started_gives_no_verdict(tmp_path: Path) -> None:
    text = tmp_path / "check.txt"
    text.write_text("exit 0\n")  # not executable
    blind = {
        "list, missing": ["/nonexistent/chek-disk", "-x"],
        "list, not on PATH": ["chek-disk-nosuch"],
        "list, not executable": [str(text)],
        "shell, missing": "/nonexistent/chek-disk --max 90",
        "shell, not executable": f"{text} --max 90",
        "shell, missing, then another missing": "/nonexistent/a || /nonexistent/b",
    }
    for what, command in blind.items():
        result = await ExecCheck("e", command, 5).run()
        assert not result.verdict, what
        assert "cannot start the program" in result.detail, (what, result.detail)
    # The command ran: its exit status is a verdict, 127 from a command further on too.
    judged = {
        "a bare first word /bin/sh does not find": ("chek-disk-nosuch --max 90", False),
        "127 from an inner command": ("/bin/true && /nonexistent/chek-disk", False),
        "the script's own 127": ("/bin/sh -c 'exit 127'", False),
        "a missing program with a fallback": ("/nonexistent/chek-disk || true", True),
    }
    for what, (command, ok) in judged.items():
        result = await ExecCheck("e", command, 5).run()
        assert result.verdict and result.ok is ok, (what, result.detail)


async def test_a_program_gone_after_it_ran_is_a_failure(tmp_path: Path) -> None:
    """Review s32: an app uninstalled with its check program (``rm -rf`` of its directory)
    gave no verdict for ever, its dead instance registered everywhere (was withdrawn after
    `fall` before the no-verdict rule): only a program never run is a typo."""
    app = tmp_path / "app" / "bin"
    app.mkdir(parents=True)
    script = app / "healthcheck"
    script.write_text("#!/bin/sh\nexit 0\n")
    script.chmod(0o755)
    for command in ([str(script)], f"{script} --quick"):
        check = ExecCheck("e", command, 5)
        assert (await check.run()).ok
        script.unlink()
        result = await check.run()
        assert result.verdict and not result.ok, result.detail
        assert "the program that ran before cannot start now" in result.detail
        script.write_text("#!/bin/sh\nexit 0\n")
        script.chmod(0o755)


async def test_sighup_to_a_missing_program_keeps_the_registration(
    zk: ZooKeeperServer, kz: KazooClient, tmp_path: Path, nerve_process
) -> None:
    """Before: the reloaded check failed (`exit status 127` / FileNotFoundError) and fall 1
    withdrew the node within a round; synapse took the server out."""
    path, admin = unique_path(), free_port()
    check = {"type": "exec", "command": "true", "timeout": 2, "rise": 1, "fall": 1}
    web = zk_service(zk.hosts, path, free_port(), checks=[check], check_interval=0.2)
    config = nerve_config({"web": web}, admin={"port": admin})
    cfg = write_config(tmp_path / "nerve.json", config)
    nerve = nerve_process(cfg)
    await until(lambda: children(kz, path), what="registration")
    await until(lambda: admin_ready(admin), what="the admin API")
    [node] = children(kz, path)

    with children_seen(kz, path) as seen:
        for command in ("/nonexistent/chek-disk --max 90", ["/nonexistent/chek-disk"]):
            new = json.loads(json.dumps(config))
            new["services"]["web"]["checks"][0]["command"] = command
            log = await reloaded(nerve, cfg, new, "check_no_verdict")
            rounds = admin_get(admin, "/status")["services"]["web"]["rounds"]
            await until(
                lambda r=rounds: admin_get(admin, "/status")["services"]["web"]["rounds"] >= r + 5,
                what="5 rounds without a verdict",
            )
            [warning] = [x for x in log.splitlines() if "event=config_warning" in x]
            assert "services.web.checks[0].command: program /nonexistent/chek-disk" in warning
            [line] = [x for x in log.splitlines() if "event=check_no_verdict" in x]
            assert "level=warning" in line and "/nonexistent/chek-disk" in line
            assert children(kz, path) == [node]
            status = admin_get(admin, "/status")["services"]["web"]
            assert status["registered"] is True
            assert status["checks"][0]["no_verdict"]["in_a_row"] >= 5
            assert "/nonexistent/chek-disk" in status["checks"][0]["no_verdict"]["detail"]
            await reloaded(nerve, cfg, config, "config_reloaded")  # the program back
            await asyncio.sleep(0.5)
        assert all(nodes == [node] for nodes in seen), seen  # never withdrawn on the way


async def reloaded(nerve: NerveProcess, cfg: Path, config: dict, text: str) -> str:
    """Write ``config``, SIGHUP, wait for the reload and ``text``: the log since the SIGHUP."""
    write_config(cfg, config)
    offset = len(nerve.log())
    nerve.signal(signal.SIGHUP)
    for what in ("config_reloaded", text):
        await until(lambda w=what: w in nerve.log()[offset:], what=what)
    return nerve.log()[offset:]
