"""A wall-clock step for real processes: an LD_PRELOAD shim (wallshift.c, built here with
the system's C compiler) shifts ONLY CLOCK_REALTIME (and gettimeofday, time) by the
seconds written in a file, re-read every 50 ms; monotonic and boottime are untouched, as
with an NTP step. Python's time.time() goes through clock_gettime: it is shifted too."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

SOURCE = Path(__file__).with_name("wallshift.c")


class WallShift:
    """The shim built in ``directory``; ``env()`` for a process, ``set()`` to step its clock."""

    def __init__(self, directory: Path) -> None:
        compiler = shutil.which("gcc") or shutil.which("cc")
        assert compiler, "a C compiler is needed to build the wall-clock shim"
        self.library = directory / "wallshift.so"
        self.file = directory / "wallshift"
        subprocess.run([compiler, "-shared", "-fPIC", "-O2", "-o", str(self.library),
                        str(SOURCE), "-ldl"], check=True, capture_output=True)  # fmt: skip
        self.set(0)

    def env(self) -> dict[str, str]:
        return {"LD_PRELOAD": str(self.library), "WALLSHIFT_FILE": str(self.file)}

    def set(self, seconds: float) -> None:
        """The processes' wall clock is ``seconds`` off from now on (within 50 ms)."""
        tmp = self.file.with_suffix(".tmp")
        tmp.write_text(f"{seconds}\n")
        tmp.replace(self.file)
