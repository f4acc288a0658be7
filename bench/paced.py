"""A paced HTTP client: every attempt counts once, whatever happens to it.

wrk reconnects in a tight loop while nothing listens, so during an outage its error
count grows with how fast the machine can be refused, not with the requests a client
would have sent. The reliability suite (bench/faults.py) needs "failed requests of all
sent" that mean the same in every scenario: here each of a few threads sends one GET
(a new connection each time, as a client that just arrived) every `interval_s`, and
every attempt is either answered 2xx/3xx or failed. Bounded by `max_duration_s` and by
`stop()`; 127.0.0.1 only.

``keep_alive``: each thread sends its GETs on one connection, as a browser or a pooled
client does, and opens a new one only when the server closed it (``Connection: close``);
a request that fails on it counts as failed, never retried. ``path="/slow"`` (bench/backend.py)
makes each request a long one.
"""

from __future__ import annotations

import http.client
import threading
import time
from collections import Counter
from dataclasses import dataclass, field


@dataclass
class PacedResult:
    attempts: int = 0
    failed: int = 0
    errors: dict[str, int] = field(default_factory=dict)  # kind -> count
    first_failure_s: float | None = None  # since the start
    last_failure_s: float | None = None
    slowest_s: float = 0.0  # the longest an answered (2xx/3xx) request took

    @property
    def outage_s(self) -> float:
        """From the first failed attempt to the last one (0 when none failed)."""
        if self.first_failure_s is None or self.last_failure_s is None:
            return 0.0
        return self.last_failure_s - self.first_failure_s


class PacedClient:
    def __init__(
        self,
        port: int,
        threads: int = 4,
        interval_s: float = 0.02,
        timeout_s: float = 2.0,
        max_duration_s: float = 300.0,
        path: str = "/",
        keep_alive: bool = False,
    ) -> None:
        self.port, self.interval_s, self.timeout_s = port, interval_s, timeout_s
        self.path, self.keep_alive = path, keep_alive
        self.max_duration_s = max_duration_s
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._errors: Counter[str] = Counter()
        self._attempts = 0
        self._failures: list[float] = []
        self._slowest = 0.0
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]
        self._began = 0.0

    def start(self) -> PacedClient:
        self._began = time.monotonic()
        for thread in self._threads:
            thread.start()
        return self

    def _once(self, conn: http.client.HTTPConnection) -> str | None:
        """One GET on ``conn``; None when answered 2xx/3xx, else the kind of failure. The
        connection is closed after it unless keep-alive goes on (it reconnects when used)."""
        failed = True
        try:
            headers = {} if self.keep_alive else {"Connection": "close"}
            conn.request("GET", self.path, headers=headers)
            resp = conn.getresponse()
            resp.read()
            failed = not 200 <= resp.status < 400
            return f"status {resp.status}" if failed else None
        except ConnectionRefusedError:
            return "refused"
        except ConnectionResetError:
            return "reset"
        except TimeoutError:
            return "timeout"
        except (OSError, http.client.HTTPException) as exc:
            return type(exc).__name__
        finally:
            if failed or not self.keep_alive:
                conn.close()

    def _run(self) -> None:
        deadline = self._began + self.max_duration_s
        next_at = time.monotonic()
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout_s)
        while not self._stop.is_set() and time.monotonic() < deadline:
            sent = time.monotonic()
            failure = self._once(conn)
            took = time.monotonic() - sent
            with self._lock:
                self._attempts += 1
                if failure is None:
                    self._slowest = max(self._slowest, took)
                else:
                    self._errors[failure] += 1
                    self._failures.append(time.monotonic() - self._began)
            next_at = max(next_at + self.interval_s, time.monotonic())
            self._stop.wait(max(0.0, next_at - time.monotonic()))
        conn.close()

    def failed_so_far(self) -> int:
        """Failed attempts until now (the client keeps running)."""
        with self._lock:
            return len(self._failures)

    def finish(self) -> PacedResult:
        self._stop.set()
        for thread in self._threads:
            thread.join(self.timeout_s + 5)
        with self._lock:
            failures = sorted(self._failures)
            return PacedResult(
                attempts=self._attempts,
                failed=len(failures),
                errors=dict(self._errors),
                first_failure_s=failures[0] if failures else None,
                last_failure_s=failures[-1] if failures else None,
                slowest_s=self._slowest,
            )
