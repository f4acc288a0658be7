"""The runtime API line of each operation, byte for byte (review s40: the commands became
``str.format`` templates). An operation without one raises, as before the templates, rather
than send an empty line (HAProxy 2.6 answers it with its whole help text, a failed command
that names no operation)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from synapse.haproxy.ops import (
    AddServer,
    DelLeftover,
    DelServer,
    EnableHealth,
    Op,
    SetAddr,
    SetState,
    SetWeight,
)


def test_each_operation_sends_the_line_it_always_sent() -> None:
    lines = {
        SetState("web", "a_10.0.0.1:80", "drain"): "set server web/a_10.0.0.1:80 state drain",
        SetWeight("web", "s", 0): "set weight web/s 0",
        SetAddr("web", "s", "10.0.0.2", 81): "set server web/s addr 10.0.0.2 port 81",
        AddServer("web", "s", "10.0.0.2:81", "weight 3 check"): (
            "add server web/s 10.0.0.2:81 weight 3 check"
        ),
        AddServer("web", "s", "10.0.0.2:81"): "add server web/s 10.0.0.2:81",  # no trailing space
        EnableHealth("web", "s"): "enable health web/s",
        DelServer("web", "s"): "del server web/s",
        DelLeftover("web", "s"): "del server web/s",
        SetState("b{0}", "{op.server}"): "set server b{0}/{op.server} state ready",  # not fields
    }
    assert {op: op.command for op in lines} == lines
    assert {op: str(op) for op in lines} == lines


def test_an_operation_without_a_command_line_says_so_instead_of_sending_an_empty_one() -> None:
    @dataclass(frozen=True)
    class Forgotten(Op):
        pass

    for op in (Op("web", "s"), Forgotten("web", "s")):
        with pytest.raises(NotImplementedError):
            _ = op.command
