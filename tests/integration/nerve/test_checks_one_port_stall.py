"""A stall of nerve withdraws no healthy service: a real nerve, real ZooKeeper, one plain
Python service (http.server, listen backlog 5) checked by 12 services, and nerve stopped
(SIGSTOP) for 0.5 s again and again (nerve/cadence.py ``Wake``).

Before (review s34), every check start that became due during the stall went in the wake's
first instant: 12 connects overflowed the port's accept queue, the dropped SYN was resent
after 1 s, past the 0.3 s timeout, and `fall: 1` withdrew a healthy service after 11 of 15
stalls (/tmp/rev/s35/stall/stall_repro.py)."""

from __future__ import annotations

import time

from nerve_testlib import NerveProcess
from test_checks_one_port import OnePortWatch, one_port_watch  # noqa: F401 (its fixture)

STALLS = 5
STALL_S = 0.5  # past the check interval: every service's round is due during it
# Between stalls: the starts the last wake held have gone (within 0.2 s) and a dropped SYN
# (resent after 1 s, past the timeout) has failed its check by the next stall.
APART_S = 0.8


def stall(nerve: NerveProcess) -> None:
    for _ in range(STALLS):
        time.sleep(APART_S)
        nerve.process.pause()
        time.sleep(STALL_S)
        nerve.process.resume()


def test_a_stalled_nerve_withdraws_no_healthy_service_of_a_shared_port(
    one_port_watch: OnePortWatch,  # noqa: F811 (the fixture imported above)
) -> None:
    one_port_watch(12, 1, stall)
