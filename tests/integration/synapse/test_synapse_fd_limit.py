"""`global` lines the managed HAProxy cannot start with on this host's open-file limit.

`haproxy -c` never sets the limit: with `maxconn 100000` under a hard RLIMIT_NOFILE of 20000,
``synapse -k`` said ok, and the HAProxy synapse started failed ("Cannot raise FD limit to
200068, limit is 20000") and was retried forever: nothing served. A SIGHUP adding the line
left every later reload failing: a service added afterwards was never served. Now ``-k``
and the start refuse it, and a SIGHUP is refused as a bad file is (the running config stays).
The limit is lowered for synapse alone (prlimit), so the test holds on any machine.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess

import pytest
from synapse_e2e import SYNAPSE, Synapse, wait_serving
from synapse_reload import refused_sighup, static_service

from testbed.process import free_port

pytestmark = pytest.mark.skipif(shutil.which("prlimit") is None, reason="needs prlimit")
LIMITED = ["prlimit", "--nofile=1024:4096", "--"]  # HAProxy inherits the hard 4096


def test_check_refuses_a_maxconn_the_limit_cannot_hold(http_backend_factory):
    b1 = http_backend_factory("b1")
    syn = Synapse({"web": static_service(b1, free_port())}, haproxy={"global": ["maxconn 5000"]})
    command = [*LIMITED, str(SYNAPSE), "-c", str(syn.config_path), "-k"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"{syn.config_path}: haproxy.global[0]: `maxconn 5000`: " in done.stderr
    assert (
        "at least 10014" in done.stderr
    )  # (its one port: review s34) and "this host allows 4096" in done.stderr
    assert "lower maxconn, or raise LimitNOFILE / ulimit -Hn" in done.stderr
    syn.config["haproxy"]["global"] = ["maxconn 1000"]  # 2013 fits
    syn.write_config()
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_a_sighup_with_such_a_line_is_refused_and_the_running_config_stays(
    http_backend_factory,
):
    b1 = http_backend_factory("b1")
    port, new_port = free_port(), free_port()
    syn = Synapse({"web": static_service(b1, port)})
    syn.process.args = [*LIMITED, *syn.process.args]
    with syn:
        wait_serving(port, {"b1"})
        syn.config["haproxy"]["global"] = ["maxconn 5000"]
        syn.config["services"]["new"] = static_service(b1, new_port)
        error = refused_sighup(syn)
        assert "haproxy.global[0]: `maxconn 5000`" in error and "allows 4096" in error
        assert "event=config_reload_failed" in syn.log(10**6)
        wait_serving(port, {"b1"})  # the running config serves on
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", new_port), timeout=3).close()
        syn.config["haproxy"]["global"] = ["maxconn 1000"]  # fixed: applied
        syn.write_config()
        syn.signal(signal.SIGHUP)
        wait_serving(new_port, {"b1"}, timeout=30)
        assert syn.status()["config"]["last_reload"]["ok"] is True


def test_check_counts_the_listening_ports(http_backend_factory):
    """Review s34: 600 services at `maxconn 256` under a hard limit of 1,024 passed `-k`
    (bound 525) and HAProxy (needing ~1,180) never started; each port is an open file."""
    b1 = http_backend_factory("b1")
    services = {f"s{i}": static_service(b1, 20000 + i) for i in range(600)}
    syn = Synapse(services, haproxy={"global": ["maxconn 256"]})
    limited = ["prlimit", "--nofile=1024:1024", "--"]
    command = [*limited, str(SYNAPSE), "-c", str(syn.config_path), "-k"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "at least 1125 (2 per connection, 13 of its own, 600 listening ports)" in done.stderr
