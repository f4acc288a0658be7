"""statsd for both daemons: Airbnb's top-level ``statsd: {host, port}`` key, plus ``prefix``.

Call sites are one line and never care whether statsd is configured:
``metrics.statsd.incr("nerve", "check", service, check, "success")``. Without a
``statsd`` block the daemon holds ``NULL_STATS``, which does nothing.

Sending is fire-and-forget UDP on a non-blocking socket (a full buffer drops the
datagram); no error of the client ever reaches the daemon. The statsd host is looked up
on a thread of its own, never on the event loop: a blocking lookup there froze the daemon
(no check, no etcd keep-alive) for a slow DNS server's whole timeout, at start and at
every SIGHUP that changed the block. Figures sent before the address is known are
dropped; a name that does not resolve is logged once and looked up again every
``RETRY_SECONDS``. Name parts are sanitised
(statsd treats ``.`` as hierarchy and ``:``, ``|``, ``@`` as syntax).
"""

from __future__ import annotations

import contextlib
import logging
import re
import socket
import threading
from collections.abc import Callable
from typing import Any

from smartstack.logs import event
from smartstack.modelbase import ConfigModel, Field

log = logging.getLogger("smartstack.statsd")

_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
RETRY_SECONDS = 30.0  # a statsd name that did not resolve is looked up again this often


class StatsdConfig(ConfigModel):
    """Airbnb: ``{host, port}`` (``sample_rate``: metric name -> rate, as Airbnb synapse);
    ours: ``prefix``, put before every metric name (e.g. ``prod.web-1``)."""

    host: str = "localhost"
    port: int = Field(default=8125, ge=1, le=65535)
    prefix: str | None = None
    sample_rate: dict[str, float] = Field(default_factory=dict)


def statsd_warnings(path: object, statsd: StatsdConfig | None) -> list[str]:
    """A host no lookup can find: a warning, not an error (metrics must never keep a
    daemon from starting), saying that nothing is sent until it is fixed."""
    problem = statsd_host_problem(statsd.host) if statsd is not None else None
    return [f"{path}: statsd.host: {problem} (no metrics are sent meanwhile)"] if problem else []


def statsd_host_problem(host: str) -> str | None:
    """Why ``host`` cannot be statsd's host (None: it can)."""
    if not host.strip():
        return "is empty: give the statsd server's name or IP address"
    if host != host.strip() or any(c.isspace() for c in host):
        return f"{host!r} contains whitespace: did you mean {''.join(host.split())!r}?"
    name, colon, port = host.rpartition(":")
    if colon and port.isdigit() and name and ":" not in name:
        return f"{host!r} looks like host:port: write host: {name!r} and port: {int(port)}"
    return None


def metric_name(parts: tuple[str, ...]) -> str:
    """("nerve", "check", "web.api", "http") -> "nerve.check.web_api.http"."""
    return ".".join(_UNSAFE.sub("_", str(part)) or "_" for part in parts)


class Stats:
    """The no-op: what a daemon without a ``statsd`` block sends (nothing)."""

    enabled = False

    def incr(self, *parts: str, count: int = 1) -> None:
        """Count ``count`` occurrences of the metric named by ``parts``."""

    def timing(self, *parts: str, seconds: float) -> None:
        """Record one duration (sent in milliseconds, as statsd expects)."""

    def gauge(self, *parts: str, value: float) -> None:
        """Set a gauge."""

    def close(self) -> None:
        """Release the socket."""


NULL_STATS = Stats()


class StatsdStats(Stats):
    """A real ``statsd.StatsClient`` behind the same three calls, once its host resolved."""

    enabled = True

    def __init__(self, config: StatsdConfig) -> None:
        self.config = config
        self._rates = config.sample_rate
        self._prefix = config.prefix.strip(".") if config.prefix else None
        import statsd  # here: a daemon without a statsd block never loads the client

        self._make_client = statsd.StatsClient
        self._client: Any = None  # until the lookup thread set it: figures are dropped
        self._closed = threading.Event()
        self._resolving = threading.Thread(
            target=self._connect,
            name="statsd-resolve",
            daemon=True,  # never holds the exit
        )
        self._resolving.start()

    def _build(self) -> Any:
        """The client for an IPv4 host, else for an IPv6 one ('::1', a name with only AAAA
        records: the client resolves IPv4 only unless told, `statsd_unavailable` for good)."""
        host, port = self.config.host, self.config.port
        try:
            return self._make_client(host, port, prefix=self._prefix)
        except socket.gaierror as first:
            try:
                return self._make_client(host, port, prefix=self._prefix, ipv6=True)
            except OSError:
                raise first from None

    def _connect(self) -> None:
        """On the lookup thread: build the client (its constructor resolves the host),
        retrying every RETRY_SECONDS; one log line when it fails, one when it recovers."""
        failures = 0
        while not self._closed.is_set():
            try:
                client = self._build()
            except OSError as exc:
                failures += 1
                if failures == 1:
                    event(
                        log,
                        "statsd_unavailable",
                        level=logging.ERROR,
                        host=self.config.host,
                        port=self.config.port,
                        error=str(exc)[:160],
                        retry_s=RETRY_SECONDS,
                    )
                self._closed.wait(RETRY_SECONDS)
                continue
            # The client's socket blocks by default; a UDP send only blocks on a full
            # buffer, and then dropping the datagram is right (the client swallows it).
            client._sock.setblocking(False)
            if self._closed.is_set():  # closed while we built it: never used
                self._send(client.close)
                return
            self._client = client
            if self._closed.is_set():  # closed meanwhile, after close() looked
                self._send(client.close)
            elif failures:
                event(
                    log,
                    "statsd_recovered",
                    host=self.config.host,
                    port=self.config.port,
                    failures=failures,
                )
            return

    @property
    def ready(self) -> bool:
        """The host resolved: figures are sent from now on."""
        return self._client is not None

    def incr(self, *parts: str, count: int = 1) -> None:
        name = metric_name(parts)
        if self._client is not None:
            self._send(self._client.incr, name, count, self._rates.get(name, 1))

    def timing(self, *parts: str, seconds: float) -> None:
        name = metric_name(parts)
        if self._client is not None:
            self._send(self._client.timing, name, seconds * 1000.0, self._rates.get(name, 1))

    def gauge(self, *parts: str, value: float) -> None:
        if self._client is not None:
            self._send(self._client.gauge, metric_name(parts), value)

    def close(self) -> None:
        self._closed.set()  # a lookup still running builds no client
        if self._client is not None:
            self._send(self._client.close)

    @staticmethod
    def _send(call: Callable[..., object], *args: object) -> None:
        # Statistics must never disturb the daemon: any error of the client is dropped.
        with contextlib.suppress(Exception):
            call(*args)


def make_stats(config: StatsdConfig | None) -> Stats:
    """A client for the config's ``statsd`` block, or the no-op. Returns at once: the host
    is resolved on a thread (see the module's docstring); a host that does not resolve is
    logged (``statsd_unavailable``) and tried again, the daemon runs on meanwhile."""
    if config is None:
        return NULL_STATS
    event(log, "statsd_configured", host=config.host, port=config.port, prefix=config.prefix)
    return StatsdStats(config)
