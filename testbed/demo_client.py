"""The demo's client: a bounded stream of requests through HAProxy, who answered each."""

from __future__ import annotations

import http.client
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

REQUEST_INTERVAL = 0.04  # 25 requests per second
TIMEOUT_S = 2.0  # a request unanswered this long counts as failed (slow is not enough)
MAX_CLIENT_SECONDS = 600  # the client stops by itself even if the demo is killed mid-way


def say(text: str) -> None:
    print(f"\n== {text}", flush=True)


def detail(text: str) -> None:
    print(f"   {text}", flush=True)


@dataclass
class Sample:
    at: float
    backend: str | None  # None = failed request
    sent: dict[str, str] = field(default_factory=dict)  # the cookies the request carried
    set_cookie: str | None = None  # the response's Set-Cookie header
    # When the answer came: a request sent just before an event can be answered after it
    # (HAProxy retried it elsewhere), so what an answer set is judged by this time.
    answered: float = 0.0
    failure: str | None = None  # what failed: "HTTP 503", "no answer in 2 s", "reset", ...


@dataclass
class Client:
    """Sends a bounded stream of requests through HAProxy and records who answered."""

    port: int
    # A cookie jar (None: no cookies): sent with every request, updated from Set-Cookie.
    cookies: dict[str, str] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    samples: list[Sample] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="demo-client", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(5)

    def _run(self) -> None:
        deadline = time.monotonic() + MAX_CLIENT_SECONDS
        while not self._stop.is_set() and time.monotonic() < deadline:
            self.samples.append(self.request())
            self._stop.wait(REQUEST_INTERVAL)

    def request(self) -> Sample:
        """One GET /: who answered (the body), the cookies sent, the Set-Cookie received."""
        at, sent = time.monotonic(), dict(self.cookies or {})
        headers = dict(self.headers)
        if sent:
            headers["Cookie"] = "; ".join(f"{name}={value}" for name, value in sent.items())
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=TIMEOUT_S)
        try:
            conn.request("GET", "/", headers=headers)
            response = conn.getresponse()
            body = response.read().decode(errors="replace")
        except OSError as err:
            return Sample(at, None, sent, answered=time.monotonic(), failure=_failure(err))
        finally:
            conn.close()
        set_cookie = response.getheader("Set-Cookie")
        if set_cookie and self.cookies is not None:
            name, _, value = set_cookie.split(";", 1)[0].partition("=")
            self.cookies[name.strip()] = value.strip()
        failure = None if response.status == 200 else f"HTTP {response.status}"
        body = body if failure is None else None
        return Sample(at, body, sent, set_cookie, time.monotonic(), failure)

    def since(self, start: float) -> list[Sample]:
        return [s for s in list(self.samples) if s.at >= start]


def _failure(err: OSError) -> str:
    if isinstance(err, socket.timeout | TimeoutError):
        return f"no answer in {TIMEOUT_S:g} s"
    if isinstance(err, ConnectionResetError):
        return "reset"
    if isinstance(err, ConnectionRefusedError):
        return "refused"
    return type(err).__name__


def failure_kinds(samples: list[Sample]) -> str:
    """How the failed ones failed: " (no answer in 2 s: 1)", "" when none did (a slow
    answer past the client's timeout is not a 503: the demo says which)."""
    kinds = Counter(s.failure or "?" for s in samples if s.backend is None)
    return f" ({', '.join(f'{k}: {n}' for k, n in kinds.most_common())})" if kinds else ""
