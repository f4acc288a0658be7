"""bench.fleet_cpu's arithmetic: CPU per write per host above that host's own idle rate."""

from __future__ import annotations

import pytest

from bench.fleet_cpu import per_write_ms


def test_cpu_per_write_is_what_the_deploy_used_above_each_hosts_idle_rate() -> None:
    before = [{"synapse": 10.0, "haproxy": 1.0}, {"synapse": 20.0, "haproxy": 2.0}]
    after = [{"synapse": 12.5, "haproxy": 1.25}, {"synapse": 23.0, "haproxy": 2.5}]
    idle = [{"synapse": 0.01, "haproxy": 0.0}, {"synapse": 0.1, "haproxy": 0.05}]
    out = per_write_ms(before, after, idle, seconds=50.0, writes=1000)
    # host 0: (2.5 s - 0.01/s x 50 s) / 1000 writes = 2.0 ms; its HAProxy 0.25 ms
    assert out[0] == pytest.approx({"synapse": 2.0, "haproxy": 0.25})
    # host 1: (3.0 - 5.0) is below its idle cost: 0, not negative; HAProxy (0.5 - 2.5) too
    assert out[1] == {"synapse": 0.0, "haproxy": 0.0}


def test_no_write_is_not_a_division_by_zero() -> None:
    one = [{"synapse": 1.0, "haproxy": 0.0}]
    two = [{"synapse": 1.5, "haproxy": 0.0}]
    zero = [{"synapse": 0.0, "haproxy": 0.0}]
    assert per_write_ms(one, two, zero, seconds=1.0, writes=0) == [
        {"synapse": 500.0, "haproxy": 0.0}
    ]
