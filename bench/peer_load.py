"""A recording HTTP client for the peer comparison: every request's time, latency and answer.

A few threads each send one GET at a time (a new connection each, as a client that just
arrived) to a HAProxy frontend on 127.0.0.1, with a Host header (EasyHAProxy routes by
host). Each attempt is kept: when it started, how long it took, whether it failed and which
container answered (the busybox backend answers with its name). Bounded by `max_duration_s`,
by `max_requests` and by `stop()`.
"""

from __future__ import annotations

import http.client
import threading
import time
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Attempt:
    started: float  # time.monotonic()
    seconds: float
    ok: bool
    answer: str  # the container's name, or the error


@dataclass
class Recording:
    attempts: list[Attempt] = field(default_factory=list)

    @property
    def failed(self) -> int:
        return sum(not a.ok for a in self.attempts)

    def stalled(self, threshold_s: float = 0.5) -> int:
        return sum(a.seconds >= threshold_s for a in self.attempts)

    def last_answer_from(self, name: str, after: float) -> float | None:
        """When `name` last answered a request sent after `after` (None: never)."""
        times = [
            a.started + a.seconds for a in self.attempts if a.answer == name and a.started >= after
        ]
        return max(times) if times else None

    def first_answer_from(self, name: str) -> float | None:
        times = [a.started + a.seconds for a in self.attempts if a.answer == name]
        return min(times) if times else None


class RecordingClient:
    def __init__(
        self,
        port: int,
        host_header: str,
        threads: int = 6,
        pause_s: float = 0.005,
        timeout_s: float = 5.0,
        max_duration_s: float = 120.0,
        max_requests: int = 200_000,
    ) -> None:
        self.port, self.host_header = port, host_header
        self.threads, self.pause_s, self.timeout_s = threads, pause_s, timeout_s
        self.max_duration_s, self.max_requests = max_duration_s, max_requests
        self.recording = Recording()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._workers: list[threading.Thread] = []

    def _one(self) -> Attempt:
        started = time.monotonic()
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout_s)
        try:
            conn.request("GET", "/", headers={"Host": self.host_header, "Connection": "close"})
            resp = conn.getresponse()
            body = resp.read().decode(errors="replace").strip()
            ok = 200 <= resp.status < 400
            answer = body.splitlines()[0] if ok and body else f"status {resp.status}"
        except (OSError, http.client.HTTPException) as exc:
            ok, answer = False, type(exc).__name__
        finally:
            conn.close()
        return Attempt(started, time.monotonic() - started, ok, answer)

    def _run(self) -> None:
        deadline = time.monotonic() + self.max_duration_s
        while not self._stop.is_set() and time.monotonic() < deadline:
            attempt = self._one()
            with self._lock:
                if len(self.recording.attempts) >= self.max_requests:
                    return
                self.recording.attempts.append(attempt)
            time.sleep(self.pause_s)

    def start(self) -> RecordingClient:
        for i in range(self.threads):
            worker = threading.Thread(target=self._run, name=f"peer-load-{i}", daemon=True)
            worker.start()
            self._workers.append(worker)
        return self

    def stop(self) -> Recording:
        self._stop.set()
        for worker in self._workers:
            worker.join(self.timeout_s + 1)
        return self.recording
