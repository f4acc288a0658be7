"""Servers whose host is a DNS name, with DNS that does not answer or that moves, against a
real HAProxy 2.6 in namespaces of its own (``private_dns``; figures from ``dns_child``).

HAProxy resolved such names itself while parsing (``init-addr last,libc,none``): with a
resolver that never answers, 20 s per name, so every ``haproxy -c`` outlived
``reload_timeout`` and no service at all could be reloaded for as long as the outage
lasted; and ``last`` took the server-state file's address at every reload, so a name that
moved was never followed. Synapse now looks the names up itself (``dns_addresses``)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from private_dns import private_dns, require_private_dns

ROOT = Path(__file__).resolve().parents[3]


def run_child(mode: str, tmp_path: Path, hosts: str) -> dict:
    require_private_dns()
    child = [sys.executable, str(ROOT / "tests/helpers/dns_child.py"), mode]
    argv, _ = private_dns(child, tmp_path, hosts)
    env = {"PYTHONPATH": f"{ROOT}:{ROOT / 'tests/helpers'}", "PATH": "/usr/sbin:/usr/bin:/bin"}
    done = subprocess.run(argv, capture_output=True, text=True, timeout=90, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_silent_resolver_holds_back_no_reload(tmp_path: Path):
    # before: api's apply failed after reload_timeout (4 s: `haproxy -c` took 20 s), and
    # `new`, IP-only, was not served in 8 s (90 s measured, retried with backoff)
    figures = run_child("silent", tmp_path, "127.0.0.1 localhost\n")
    assert figures["api"]["outcome"] == "done" and figures["api"]["s"] < 3.5, figures
    assert figures["new"]["outcome"] == "done", figures
    assert figures["new_served_s"] is not None and figures["web_serves"], figures


def test_a_name_that_moves_is_followed_without_another_change(tmp_path: Path):
    # before: HAProxy kept the old address (`init-addr last` reads the state file first)
    hosts = "127.0.0.1 localhost\n127.0.0.1 mv.test.example\n"
    figures = run_child("moved", tmp_path, hosts)
    assert figures["before"] == "127.0.0.1", figures
    assert figures["after"] == "127.0.0.9" and figures["moved_s"] < 8, figures
