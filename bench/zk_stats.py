"""ZooKeeper's own account of a sampling window: its server-side latencies and its JVM's GC.

The propagation bench times a write from the client; this says what the server itself saw
in the same window, so the registry's part can be split from what the machine adds:
``srst`` resets the server's statistics before the window, ``mntr`` reads them after
(update and read latency summaries, fsync times; whole milliseconds, as ZooKeeper keeps
them), and the new lines of the JVM's GC log (testbed.zookeeper writes one) count its
stop-the-world pauses in between.
"""

from __future__ import annotations

import re
from pathlib import Path

from testbed.zookeeper import four_letter_word

MNTR_KEYS = (
    "zk_p50_updatelatency", "zk_p99_updatelatency", "zk_max_updatelatency",
    "zk_p50_readlatency", "zk_p99_readlatency", "zk_max_readlatency",
    "zk_avg_fsynctime", "zk_max_fsynctime", "zk_fsync_threshold_exceed_count",
    "zk_p99_sync_processor_queue_and_flush_time_ms",
)  # fmt: skip
_PAUSE = re.compile(r"Pause .*?([0-9.]+)ms\s*$")


def gc_pauses(text: str) -> list[float]:
    """The stop-the-world pauses (ms) in lines of a JVM ``-Xlog:gc`` log."""
    return [float(m.group(1)) for line in text.splitlines() if (m := _PAUSE.search(line))]


def parse_mntr(text: str) -> dict[str, float]:
    """``mntr``'s numeric lines (key TAB value)."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        key, _, value = line.partition("\t")
        try:
            out[key] = float(value)
        except ValueError:
            continue
    return out


class ServerWindow:
    """``start()`` before the sampling, ``stop()`` after: what the server saw meanwhile."""

    def __init__(self, port: int, gc_log: Path | None) -> None:
        self.port = port
        self.gc_log = gc_log
        self._gc_offset = 0
        self._reset = False  # srst answered: the window's counters are its own

    def _gc_text(self) -> str:
        if self.gc_log is None or not self.gc_log.exists():
            return ""
        return self.gc_log.read_text(errors="replace")

    def start(self) -> None:
        """A server that does not answer (1 s) costs its stats (``stop``: None), not the
        scenario measured meanwhile."""
        try:
            four_letter_word(self.port, "srst")
            self._reset = True
        except OSError:
            self._reset = False
        self._gc_offset = len(self._gc_text())

    def stop(self) -> dict[str, float] | None:
        """The window's stats; None when the server did not answer ``srst`` or ``mntr``."""
        try:
            text = four_letter_word(self.port, "mntr") if self._reset else None
        except OSError:
            text = None
        if text is None:
            return None
        stats = parse_mntr(text)
        out = {key: stats[key] for key in MNTR_KEYS if key in stats}
        pauses = gc_pauses(self._gc_text()[self._gc_offset :])
        out["gc_pauses"] = len(pauses)
        out["gc_pause_max_ms"] = max(pauses, default=0.0)
        out["gc_pause_total_ms"] = round(sum(pauses), 3)
        return out

    @staticmethod
    def summary(stats: dict[str, float]) -> str:
        """One line for the report."""

        def get(key: str) -> str:
            value = stats.get(key)
            return "?" if value is None else f"{value:g}"

        return (
            f"update p50/p99/max {get('zk_p50_updatelatency')}/{get('zk_p99_updatelatency')}/"
            f"{get('zk_max_updatelatency')}, read p50/p99/max {get('zk_p50_readlatency')}/"
            f"{get('zk_p99_readlatency')}/{get('zk_max_readlatency')}, fsync avg/max "
            f"{get('zk_avg_fsynctime')}/{get('zk_max_fsynctime')}, "
            f"GC pauses {get('gc_pauses')} (max {get('gc_pause_max_ms')})"
        )
