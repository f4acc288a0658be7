"""The log level of HAProxy's own output lines relayed by a managed HAProxy."""

from __future__ import annotations

import logging

from synapse.haproxy.managed import output_level

CLI_UP = (
    "[WARNING]  (14144) : CLI : Server svc97/svc97-0-g1_127.0.0.1:21000 is UP/READY "
    "(leaving forced maintenance)."
)
CLI_MAINT = (
    "[WARNING]  (14144) : CLI : Server svc1/a_127.0.0.1:21000 is going DOWN for maintenance."
)
CHECK_DOWN = (
    "[WARNING]  (14144) : Server svc1/a is DOWN, reason: Layer4 connection problem, "
    "check duration: 0ms. 2 active and 0 backup servers left."
)
NO_SERVER = "[ALERT]    (14144) : backend 'svc1' has no server available!"


def test_state_changes_made_through_the_runtime_api_are_info_other_warnings_stay() -> None:
    # synapse's own runtime commands: one line per server change, not a warning each
    assert output_level(CLI_UP, stopping=False) == logging.INFO
    assert output_level(CLI_MAINT, stopping=False) == logging.INFO
    # what HAProxy finds by itself stays a warning, an alert an error
    assert output_level(CHECK_DOWN, stopping=False) == logging.WARNING
    assert output_level(NO_SERVER, stopping=False) == logging.ERROR
    assert output_level("[NOTICE]   (1) : New worker (2) forked", stopping=False) == logging.INFO


def test_while_stopping_every_line_is_info() -> None:
    assert output_level(NO_SERVER, stopping=True) == logging.INFO
    assert output_level(CHECK_DOWN, stopping=True) == logging.INFO
