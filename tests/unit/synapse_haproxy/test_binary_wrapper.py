"""``managed.binary`` naming a wrapper script (``exec haproxy "$@"``): the master's
/proc/<pid>/exe is what it execs, never the script (``binary_check``)."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from synapse.haproxy.binary_check import other_binary


def test_a_wrapper_script_is_not_a_changed_binary(tmp_path: Path, caplog) -> None:
    """Before, every restart logged haproxy_binary_changed and replaced the master."""
    wrapper = tmp_path / "haproxy-wrapper"
    wrapper.write_text('#!/bin/sh\nulimit -n 4096\nexec /usr/sbin/haproxy "$@"\n')
    wrapper.chmod(0o755)
    with caplog.at_level(logging.DEBUG, logger="synapse.haproxy.managed"):
        assert other_binary(os.getpid(), str(wrapper)) is None
        assert other_binary(os.getpid(), str(wrapper)) is None  # (said once)
    [said] = caplog.records
    assert said.message == "haproxy_binary_not_compared" and said.levelno == logging.INFO
    assert said.smartstack_fields["binary"] == str(wrapper)  # type: ignore[attr-defined]


def test_a_binary_that_is_no_script_is_still_compared(tmp_path: Path) -> None:
    other = tmp_path / "haproxy-new"
    other.write_bytes(Path("/bin/true").read_bytes()[:64])  # (an ELF header, not #!)
    assert other_binary(os.getpid(), str(other)) == os.path.realpath(sys.executable)
    assert other_binary(os.getpid(), str(tmp_path / "missing")) == os.path.realpath(sys.executable)
