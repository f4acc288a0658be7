"""Steady HTTP load with Debian's wrk, bounded by its own -d and stopped early with SIGINT.

wrk has no rate option; a Lua ``delay`` hook spaces each connection's requests instead.

A Lua ``done`` hook prints the exact counts and latency percentiles as one JSON line,
so nothing is scraped from wrk's human-readable table.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bench.stack import Synapse

DONE_SCRIPT = """
local pause = tonumber(os.getenv("WRK_DELAY_MS") or "0")
if pause > 0 then
  delay = function() return pause end
end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,' ..
    '"status":%d,"timeout":%d,"p50_us":%d,"p99_us":%d,"p999_us":%d,"max_us":%d}\\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9), latency.max))
end
"""


@dataclass
class LoadResult:
    requests: int
    duration_s: float
    errors: dict[str, int]
    p50_ms: float
    p99_ms: float
    p999_ms: float
    max_ms: float

    @property
    def failed(self) -> int:
        """Requests that did not get a 2xx/3xx: socket errors plus bad statuses."""
        return sum(self.errors.values())

    @property
    def attempts(self) -> int:
        """Requests tried: the answered ones (any status) plus those lost to a socket error
        (wrk counts a refused connection as an error, not as a request)."""
        return self.requests + sum(v for k, v in self.errors.items() if k != "status")

    @property
    def rate(self) -> float:
        return self.requests / self.duration_s if self.duration_s else 0.0


class Wrk:
    """wrk running in the background against one URL; `finish()` stops it and parses."""

    def __init__(
        self,
        url: str,
        workdir: Path,
        max_duration_s: float,
        connections: int = 16,
        threads: int = 2,
        timeout_s: float = 2,
        delay_ms: int = 0,
        headers: Sequence[str] = (),
    ) -> None:
        if shutil.which("wrk") is None:
            raise RuntimeError("wrk is not installed (Debian package wrk)")
        script = workdir / "done.lua"
        script.write_text(DONE_SCRIPT)
        self.log = workdir / "wrk.out"
        self.args = [
            "wrk",
            f"-t{threads}",
            f"-c{connections}",
            f"-d{int(max_duration_s)}s",
            "--timeout",
            f"{max(1, round(timeout_s))}s",
            "-s",
            str(script),
            *(arg for header in headers for arg in ("-H", header)),
            url,
        ]
        # Each connection pauses delay_ms between requests: a steady rate of about
        # connections * 1000 / delay_ms requests/s instead of saturating both cores.
        self.env = dict(os.environ, WRK_DELAY_MS=str(delay_ms))
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Wrk:
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                self.args,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.env,
            )
        return self

    def finish(self, timeout: float = 30.0) -> LoadResult:
        """SIGINT (wrk then prints its summary), wait, parse."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        return parse(self.log.read_text(errors="replace"))

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


@dataclass
class Measured:
    """What ``under_load`` measured, once its block is over."""

    load: LoadResult | None = None
    reloads: int = 0  # HAProxy reloads during the block


@contextlib.contextmanager
def under_load(syn: Synapse, wrk: Wrk, settle_s: float) -> Iterator[Measured]:
    """``wrk`` through ``syn``'s HAProxy for the block, started once the start-up reloads
    are over (``settle_s``: its restart_interval), stopped after it (killed on an error)."""
    time.sleep(settle_s)  # start-up reloads are not part of the measurement
    reloads_before = syn.haproxy.procs().master_reloads
    measured = Measured()
    wrk.start()
    try:
        yield measured
    except BaseException:
        wrk.kill()
        raise
    measured.load = wrk.finish()
    measured.reloads = syn.haproxy.procs().master_reloads - reloads_before


def parse(output: str) -> LoadResult:
    for line in output.splitlines():
        if line.startswith("WRKJSON "):
            data = json.loads(line[len("WRKJSON ") :])
            return LoadResult(
                requests=data["requests"],
                duration_s=data["duration_us"] / 1e6,
                errors={k: data[k] for k in ("connect", "read", "write", "status", "timeout")},
                p50_ms=data["p50_us"] / 1000,
                p99_ms=data["p99_us"] / 1000,
                p999_ms=data["p999_us"] / 1000,
                max_ms=data["max_us"] / 1000,
            )
    raise RuntimeError(f"wrk printed no summary; its output:\n{output[-2000:]}")
