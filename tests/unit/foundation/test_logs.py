"""Structured log lines: one event per line, whatever the field values contain."""

from __future__ import annotations

import logging

import pytest

from smartstack.logs import KeyValueFormatter, event


@pytest.mark.parametrize(
    "value",
    ["a\rlevel=error", "x\r\x1b[2Kforged", "tab\there", "line\nbreak", 'q"uote', "\u2028"],
)
def test_a_value_can_never_forge_a_field_or_a_line(value: str, caplog) -> None:
    log = logging.getLogger("test.logs")
    with caplog.at_level(logging.INFO, logger="test.logs"):
        event(log, "something", error=value, n=3)
    line = KeyValueFormatter().format(caplog.records[-1])
    assert line.isprintable(), repr(line)
    assert line.endswith(" n=3") and ' error="' in line


def test_plain_values_stay_unquoted(caplog) -> None:
    log = logging.getLogger("test.logs")
    with caplog.at_level(logging.INFO, logger="test.logs"):
        event(log, "znode_created", node="/nerve/web/i-1_0000000001", ok=True)
    line = KeyValueFormatter().format(caplog.records[-1])
    assert line.endswith("event=znode_created node=/nerve/web/i-1_0000000001 ok=true")
