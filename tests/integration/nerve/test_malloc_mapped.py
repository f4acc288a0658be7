"""A running nerve's large transient blocks are mapped, not carved from glibc's heap.

asyncio reads every socket and pipe into a fresh 256 KB bytes object. A read at EOF (an
exec check's output pipe closing) frees that block whole, and glibc then raises its mmap
threshold past 256 KB, its trim threshold to twice that: every later read buffer came from
the heap, and the heap of a soak nerve grew 132 KB every ~15 minutes for good
(BENCHMARKS.md, session 50). nerve fixes both as it starts (smartstack.malloc_tune). A
``sitecustomize`` on the nerve's path allocates 40 blocks of 256 KB as it exits, after
many check rounds, and writes how many glibc mapped (``mallinfo2``'s count of mapped
blocks): a few may fit in free space of the heap, the rest must not grow it.
"""

from __future__ import annotations

import textwrap
import time
from pathlib import Path

import pytest
from kazoo.client import KazooClient
from nerve_testlib import site_probe, zk_nerve_registered

from testbed.zookeeper import ZooKeeperServer

ROUNDS_S = 2.0  # ten check rounds at 0.2 s: reads at EOF, each freeing a whole buffer
BLOCKS, MAPPED_AT_LEAST = 40, 30
PROBE = textwrap.dedent(
    """
    import atexit, os

    def _probe():
        import ctypes

        class Info(ctypes.Structure):
            _fields_ = [(name, ctypes.c_size_t) for name in (
                "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
                "uordblks", "fordblks", "keepcost")]

        libc = ctypes.CDLL("libc.so.6")
        libc.mallinfo2.restype = Info
        before = libc.mallinfo2().hblks
        blocks = [bytes(256 * 1024) for _ in range(40)]  # asyncio read buffers' size
        mapped = libc.mallinfo2().hblks - before
        del blocks
        path = os.path.join(os.environ["MALLOC_PROBE_DIR"], f"{os.getpid()}.txt")
        with open(path, "w") as out:
            out.write(str(mapped))

    atexit.register(_probe)
    """
)


@pytest.fixture
def probe_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES"):
        monkeypatch.delenv(name, raising=False)  # (an operator's would be left alone)
    return site_probe(tmp_path, monkeypatch, PROBE, "MALLOC_PROBE_DIR")


def test_a_nerve_maps_read_buffers_after_many_check_rounds(
    probe_dir: Path, zk: ZooKeeperServer, kz: KazooClient, http_backend_factory,
    nerve_process, tmp_path: Path,
) -> None:  # fmt: skip
    port = http_backend_factory().port
    checks = [{"type": "exec", "command": "echo ok", "rise": 1}]  # (its pipe reaches EOF)
    nerve = zk_nerve_registered(nerve_process, zk.hosts, kz, port, tmp_path, checks=checks)
    time.sleep(ROUNDS_S)
    pid = nerve.pid
    nerve.process.stop(timeout=20)
    mapped = int((probe_dir / f"{pid}.txt").read_text())
    assert MAPPED_AT_LEAST <= mapped <= BLOCKS
