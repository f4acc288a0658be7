"""testbed/ports.py's picker: each port once, never one another picker holds, from outside
the kernel's ephemeral range (with a fake `is_free`: no socket here)."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from testbed.ports import DEFAULT, PortPicker, choose_range, open_shared, parse_range

SMALL = range(40000, 40012)


@pytest.fixture
def pickers() -> Iterator[list[PortPicker]]:
    made: list[PortPicker] = []
    yield made
    for picker in made:
        picker.close()


def _picker(made: list[PortPicker], lock: Path, busy: frozenset[int] = frozenset()) -> PortPicker:
    picker = PortPicker(SMALL, lock, is_free=lambda port: port not in busy)
    made.append(picker)
    return picker


def test_one_picker_hands_out_each_port_once_then_says_none_is_left(
    pickers: list[PortPicker], tmp_path: Path
) -> None:
    picker = _picker(pickers, tmp_path / "ports.lock")
    got = [picker.pick() for _ in SMALL]
    assert sorted(got) == list(SMALL)
    with pytest.raises(RuntimeError, match="no free port left in 40000-40011"):
        picker.pick()


def test_two_pickers_never_hand_out_a_port_the_other_holds(
    pickers: list[PortPicker], tmp_path: Path
) -> None:
    # Two pickers in one process have two open file descriptions: their locks conflict as
    # those of two processes do (the pytest processes of `make test`, the demo, children).
    first, second = (
        _picker(pickers, tmp_path / "ports.lock"),
        _picker(pickers, tmp_path / "ports.lock"),
    )
    a = [first.pick() for _ in range(6)]
    b = [second.pick() for _ in range(6)]
    assert set(a).isdisjoint(b) and set(a) | set(b) == set(SMALL)
    with pytest.raises(RuntimeError):
        first.pick()  # all the rest is the other's


def test_a_closed_picker_frees_its_ports_for_others(
    pickers: list[PortPicker], tmp_path: Path
) -> None:
    gone = _picker(pickers, tmp_path / "ports.lock")
    held = {gone.pick() for _ in SMALL}
    gone.close()  # (what the kernel does when a process ends)
    other = _picker(pickers, tmp_path / "ports.lock")
    assert {other.pick() for _ in SMALL} == held


def test_a_port_in_use_is_skipped_and_not_held(pickers: list[PortPicker], tmp_path: Path) -> None:
    busy = frozenset({40003, 40004})
    blind = _picker(pickers, tmp_path / "ports.lock", busy)
    got = {blind.pick() for _ in range(len(SMALL) - len(busy))}
    assert got == set(SMALL) - busy
    with pytest.raises(RuntimeError):
        blind.pick()
    # It tried the busy ports and let them go: a picker that finds them free gets them.
    other = _picker(pickers, tmp_path / "ports.lock")
    assert {other.pick(), other.pick()} == busy


def test_with_its_range_all_held_it_takes_what_spill_names_if_no_one_holds_it(
    pickers: list[PortPicker], tmp_path: Path
) -> None:
    lock = tmp_path / "ports.lock"
    full = _picker(pickers, lock)
    held = [full.pick() for _ in SMALL]
    named = iter([held[0], 50000, held[1], 50000, 50001])  # (a port-0 bind's choices)
    spilling = PortPicker(SMALL, lock, is_free=lambda port: True, spill=named.__next__)
    pickers.append(spilling)
    assert [spilling.pick(), spilling.pick()] == [50000, 50001]
    stuck = PortPicker(SMALL, lock, is_free=lambda port: True, spill=lambda: 50000)
    pickers.append(stuck)
    with pytest.raises(RuntimeError, match="SMARTSTACK_TEST_PORTS=LO-HI"):
        stuck.pick()  # the only port it is told of is the spilling picker's
    full.close()
    assert spilling.pick() in SMALL  # its range first again, once a port there is free


def test_pickers_on_different_lock_files_do_not_see_each_other(
    pickers: list[PortPicker], tmp_path: Path
) -> None:
    one, two = _picker(pickers, tmp_path / "a.lock"), _picker(pickers, tmp_path / "b.lock")
    assert {one.pick() for _ in SMALL} == {two.pick() for _ in SMALL} == set(SMALL)


@pytest.mark.parametrize(
    ("ephemeral", "expected"),
    [
        ("32768\t60999\n", DEFAULT),  # Linux's default: all of DEFAULT is below it
        ("28000 60999", range(24000, 28000)),  # starts inside DEFAULT: the part below
        ("10000 25999", range(26000, 32768)),  # the longer part is above it
        ("1024 65535", DEFAULT),  # covers DEFAULT: the locks still keep our processes apart
    ],
)
def test_the_range_avoids_the_kernels_ephemeral_ports(ephemeral: str, expected: range) -> None:
    assert choose_range(None, parse_range(ephemeral)) == expected
    assert choose_range(None, None) == DEFAULT  # no /proc to read


def test_the_environment_names_the_range() -> None:
    assert choose_range("45000-45099", parse_range("32768 60999")) == range(45000, 45100)
    for wrong in ("45099-45000", "0-10", "60000-70000", "12"):
        with pytest.raises(ValueError):
            choose_range(wrong, None)


def test_the_lock_file_it_creates_is_writable_by_every_user(tmp_path: Path) -> None:
    # Another user's run opens it O_RDWR: 0o644 (umask 022) refused it, and every
    # free_port() of that run failed with PermissionError.
    old = os.umask(0o022)
    try:
        fd = open_shared(tmp_path / "ports.lock")
    finally:
        os.umask(old)
    try:
        assert stat.S_IMODE(os.fstat(fd).st_mode) == 0o666
        again = open_shared(tmp_path / "ports.lock")  # an existing one: opened again
        os.close(again)
    finally:
        os.close(fd)
