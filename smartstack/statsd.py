"""statsd for both daemons: Airbnb's top-level ``statsd: {host, port}`` key, plus ``prefix``.

Call sites are one line and never care whether statsd is configured:
``metrics.statsd.incr("nerve", "check", service, check, "success")``. Without a
``statsd`` block the daemon holds ``NULL_STATS``, which does nothing.

Sending is fire-and-forget UDP on a non-blocking socket (a full buffer drops the
datagram); no error of the client ever reaches the daemon. Name parts are sanitised
(statsd treats ``.`` as hierarchy and ``:``, ``|``, ``@`` as syntax).
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Callable

from smartstack.logs import event
from smartstack.modelbase import ConfigModel, Field

log = logging.getLogger("smartstack.statsd")

_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


class StatsdConfig(ConfigModel):
    """Airbnb: ``{host, port}`` (``sample_rate``: metric name -> rate, as Airbnb synapse);
    ours: ``prefix``, put before every metric name (e.g. ``prod.web-1``)."""

    host: str = "localhost"
    port: int = Field(default=8125, ge=1, le=65535)
    prefix: str | None = None
    sample_rate: dict[str, float] = Field(default_factory=dict)


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
    """A real ``statsd.StatsClient`` behind the same three calls."""

    enabled = True

    def __init__(self, config: StatsdConfig) -> None:
        self.config = config
        self._rates = config.sample_rate
        prefix = config.prefix.strip(".") if config.prefix else None
        import statsd  # here: a daemon without a statsd block never loads the client

        self._client = statsd.StatsClient(config.host, config.port, prefix=prefix or None)
        # The client's socket blocks by default; a UDP send only blocks on a full buffer,
        # and then dropping the datagram is right (the client swallows the error).
        self._client._sock.setblocking(False)

    def incr(self, *parts: str, count: int = 1) -> None:
        name = metric_name(parts)
        self._send(self._client.incr, name, count, self._rates.get(name, 1))

    def timing(self, *parts: str, seconds: float) -> None:
        name = metric_name(parts)
        self._send(self._client.timing, name, seconds * 1000.0, self._rates.get(name, 1))

    def gauge(self, *parts: str, value: float) -> None:
        self._send(self._client.gauge, metric_name(parts), value)

    def close(self) -> None:
        self._send(self._client.close)

    @staticmethod
    def _send(call: Callable[..., object], *args: object) -> None:
        # Statistics must never disturb the daemon: any error of the client is dropped.
        with contextlib.suppress(Exception):
            call(*args)


def make_stats(config: StatsdConfig | None) -> Stats:
    """A client for the config's ``statsd`` block, or the no-op. An unresolvable host is
    logged and gives the no-op: the daemon runs on without statistics."""
    if config is None:
        return NULL_STATS
    try:
        stats = StatsdStats(config)
    except OSError as exc:
        event(log, "statsd_unavailable", level=logging.ERROR, host=config.host,
              port=config.port, error=str(exc)[:160])  # fmt: skip
        return NULL_STATS
    event(log, "statsd_configured", host=config.host, port=config.port, prefix=config.prefix)
    return stats
