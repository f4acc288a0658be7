"""import_in_thread: the module is imported by another thread while the loop runs on."""

from __future__ import annotations

import asyncio
import sys
import threading
from pathlib import Path

import pytest

from synapse.background_import import import_in_thread


async def test_the_module_is_imported_in_another_thread_while_the_loop_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "slow_module_for_test.py").write_text(
        "import threading, time\nIMPORTED_BY = threading.current_thread().name\ntime.sleep(0.1)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "slow_module_for_test", raising=False)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.01)

    task = asyncio.get_running_loop().create_task(ticker())
    try:
        await import_in_thread("slow_module_for_test")
    finally:
        task.cancel()
    module = sys.modules["slow_module_for_test"]
    assert threading.current_thread().name != module.IMPORTED_BY
    assert ticks >= 3  # the loop ran on during the import's 0.1 s


async def test_an_import_error_reaches_the_caller() -> None:
    with pytest.raises(ModuleNotFoundError, match="no_such_module_here"):
        await import_in_thread("synapse.no_such_module_here")
