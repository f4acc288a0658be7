"""free_port across processes: `make test` runs two pytest processes at once, the demo and
helper children are processes too. A port one of them holds (handed out, its server not bound
yet or stopped to be started again on it) is never handed to another, nor taken by a port-0
bind or an outgoing connection (outside the kernel's ephemeral range)."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from testbed.ports import DEFAULT
from testbed.process import free_port

REPO = Path(__file__).resolve().parents[2]
PICKS = 500  # on main two processes of 500 picks each shared ~15 ports (0 in exp(-17))
# A child that picks PICKS ports, says which, and holds them until its stdin closes.
HOLDER = (
    "import sys\nfrom testbed.process import free_port\n"
    f"print(' '.join(str(free_port()) for _ in range({PICKS})), flush=True)\nsys.stdin.read()\n"
)


@pytest.fixture
def holders() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for child in started:
        if child.stdin:
            child.stdin.close()
        child.wait(timeout=30)


def _held_by_a_child(started: list[subprocess.Popen[str]]) -> set[int]:
    child = subprocess.Popen(
        [sys.executable, "-c", HOLDER], cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    started.append(child)
    assert child.stdout is not None
    return {int(port) for port in child.stdout.readline().split()}


def _ephemeral() -> range:
    lo, hi = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
    return range(int(lo), int(hi) + 1)


def test_two_live_processes_never_get_the_same_port(holders) -> None:
    first, second = _held_by_a_child(holders), _held_by_a_child(holders)
    assert len(first) == len(second) == PICKS
    assert first & second == set()
    mine = {free_port() for _ in range(50)}  # this process, beside both (held to its end)
    assert mine & (first | second) == set()


def test_picked_ports_are_outside_the_kernels_ephemeral_range() -> None:
    ephemeral = _ephemeral()
    if DEFAULT.start in ephemeral and DEFAULT[-1] in ephemeral:
        pytest.skip(f"the ephemeral range {ephemeral} covers all of {DEFAULT}: no port outside")
    picked = [free_port() for _ in range(50)]
    assert [port for port in picked if port in ephemeral] == []
    # So a port-0 bind (what servers started with port 0 do) never lands on one.
    with socket.create_server(("127.0.0.1", 0)) as server:
        assert server.getsockname()[1] not in picked


# The parent picks, forks, the child picks PICKS while the parent picks PICKS more.
FORKER = f"""
import multiprocessing
from testbed.ports import DEFAULT
from testbed.process import free_port

def child(conn):
    conn.send([free_port() for _ in range({PICKS})])
    conn.recv()  # holds them (and itself) until the parent has picked its own

before = {{free_port() for _ in range(10)}}  # (the child's copy of the picker knows these)
parent_end, child_end = multiprocessing.Pipe()
forked = multiprocessing.get_context("fork").Process(target=child, args=(child_end,))
forked.start()
in_child = set(parent_end.recv())
in_parent = {{free_port() for _ in range({PICKS})}}
parent_end.send("done")
forked.join(timeout=30)
print(forked.exitcode, len(in_child), len(in_parent), len(in_child & (in_parent | before)))
"""


def test_a_forked_child_and_its_parent_never_get_the_same_port() -> None:
    # (In a child process of its own: its PICKS ports are not held for the rest of the run.)
    done = subprocess.run(
        [sys.executable, "-c", FORKER], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["0", str(PICKS), str(PICKS), "0"]  # exit, sizes, shared
