"""nerve and synapse as real processes in their first moments: configs that run without a
registry (it is a closed port: both keep trying), SIGHUP's disposition read from /proc."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from testbed.process import ManagedProcess, free_port

VENV_BIN = Path(sys.executable).parent
DAEMONS = ("nerve", "synapse")
# The line each daemon logs once it runs (its loop handles SIGHUP from before it on).
STARTED = {"nerve": "event=nerve_started", "synapse": "event=started"}


def daemon_config(name: str, directory: Path, admin_port: int | None = None) -> Path:
    """One service whose registry never answers; admin server on ``admin_port`` (or none)."""
    closed = f"127.0.0.1:{free_port()}"
    if name == "nerve":
        service = {"host": "127.0.0.1", "port": free_port(), "check_interval": 0.5,
                   "checks": [{"type": "tcp", "timeout": 0.2}],
                   "zk_hosts": [closed], "zk_path": "/start-window/web"}  # fmt: skip
        config = {"instance_id": "i-1", "state_dir": str(directory), "services": {"web": service},
                  "admin": {"host": "127.0.0.1", "port": admin_port}}  # fmt: skip
    else:
        discovery = {"method": "zookeeper", "hosts": [closed], "path": "/start-window/web"}
        config = {"services": {"web": {"discovery": discovery}},
                  "admin": {"host": "127.0.0.1", "port": admin_port}}  # fmt: skip
    path = directory / f"{name}.json"
    path.write_text(json.dumps(config))
    return path


def daemon_process(
    name: str, config: Path, workdir: Path, env: dict[str, str], command: list[str] | None = None
) -> ManagedProcess:
    """``.venv/bin/<name> -c CONFIG`` (or ``command``, then ``-c CONFIG``), log in workdir."""
    args = [*(command or [str(VENV_BIN / name)]), "-c", str(config)]
    return ManagedProcess(args, workdir, name=name, env={**os.environ, **env})


def sighup_disposition(pid: int) -> tuple[bool, bool]:
    """(caught, ignored): SIGHUP's bit in /proc/PID/status; neither: it ends the process."""
    fields = dict(
        line.split(":\t", 1)
        for line in Path(f"/proc/{pid}/status").read_text().splitlines()
        if ":\t" in line
    )
    bit = 1 << 0  # signal 1, SIGHUP
    return bool(int(fields["SigCgt"], 16) & bit), bool(int(fields["SigIgn"], 16) & bit)
