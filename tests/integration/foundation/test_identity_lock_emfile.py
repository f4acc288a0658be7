"""A holder of an abstract lock name out of descriptors (smartstack.identity_lock): a real
process at its RLIMIT_NOFILE with a connection queued on its name.

Review s28 MEDIUM-3: accept() failed with EMFILE, the reader returned, and the queued
connection left the level-triggered reader ready: the loop spun at 100% CPU until the asker
went away. Now the reader rests a second and listens again.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from smartstack.identity_lock import SUPPORTED

HOLDER = r"""
import asyncio, os, resource, sys
from smartstack import identity_lock
resource.setrlimit(resource.RLIMIT_NOFILE, (64, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
identity_lock.set_answer("cfg.json")
identity_lock.take(sys.argv[1])
loop = asyncio.new_event_loop()
identity_lock.answer_on(loop)
spare = []
while True:  # every descriptor taken: the next accept() fails with EMFILE
    try:
        spare.append(os.open("/dev/null", os.O_RDONLY))
    except OSError:
        break
print("full", flush=True)
loop.run_forever()
"""


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.mark.skipif(not SUPPORTED, reason="Linux's abstract namespace")
def test_a_holder_out_of_descriptors_does_not_spin() -> None:
    name = f"smartstack-test-emfile-{os.getpid()}"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, name], stdout=subprocess.PIPE, cwd="/",
                              text=True)  # fmt: skip
    asker = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "full"
        asker.connect(f"\0{name}")  # (queued: never accepted while the holder is full)
        time.sleep(0.3)
        before = _cpu_s(holder.pid)
        time.sleep(2.0)
        used = _cpu_s(holder.pid) - before
        assert used < 0.3, f"{used:.2f} s of CPU in 2 s"  # (before: ~2 s, a core's)
        assert holder.poll() is None
    finally:
        asker.close()
        holder.kill()
        holder.wait()
