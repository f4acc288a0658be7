"""One synapse per HAProxy config, host-wide (smartstack.identity_lock): real processes.

Review s28: an older version run as another user leaves ``<config_file_path>.lock`` 0600;
a copy that may not open it ran without the guard (``instance_lock_unavailable``) and
reloaded HAProxy beside the first. The same file is now also held by an abstract unix
socket named after its path, which no file mode can hide.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from synapse_e2e import SYNAPSE, Synapse
from test_synapse_one_copy import static_service

from smartstack.identity_lock import holder, socket_name
from smartstack.instance_lock import WAIT_ENV, _file_identity
from testbed.process import ManagedProcess, free_port

NOBODY = 65534


def test_another_users_0600_lock_file_still_keeps_a_second_synapse_out(http_backend_factory):
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root (to make another user's file) and setpriv")
    backend = http_backend_factory("a")
    syn = Synapse({"web": static_service(free_port(), backend.port)})
    other = None
    try:
        syn.start()
        lock = Path(f"{syn.dir / 'haproxy.cfg'}.lock")
        os.chown(lock, NOBODY, NOBODY)  # (as an older version run as nobody left it)
        lock.chmod(0o600)
        reloads = syn.master_reloads()
        other = ManagedProcess(
            ["setpriv", "--bounding-set=-dac_override,-dac_read_search", str(SYNAPSE),
             "-c", str(syn.config_path)],
            syn.dir, name="synapse-b",
            env={**os.environ, "PYTHONUNBUFFERED": "1", WAIT_ENV: "1"},
        ).start()  # fmt: skip
        assert other.wait(60) == 1, other.log_tail()
        log = other.log_path.read_text()
        assert "instance_lock_unavailable" in log  # the file: not even readable
        assert f"synapse pid {syn.process.pid} already runs with {syn.config_path}" in log
        assert "(lock @smartstack-synapse-" in log
        assert syn.master_reloads() == reloads and syn.process.alive
    finally:
        if other is not None:
            other.kill()
        syn.cleanup()


def test_synapse_answers_on_its_names(http_backend_factory):
    # review s28 LOW-1: synapse never answered: an asker named its own config, and from the
    # 17th connection (the backlog full) the holder's pid was "?"
    backend = http_backend_factory("a")
    syn = Synapse({"web": static_service(free_port(), backend.port)})
    try:
        syn.start()
        lock = os.path.abspath(f"{syn.dir / 'haproxy.cfg'}.lock")
        name = socket_name("synapse", _file_identity(lock))  # (path, directory's dev:ino)
        answers = {holder(name) for _ in range(20)}
        assert answers == {(str(syn.process.pid), str(syn.config_path))}
    finally:
        syn.cleanup()
