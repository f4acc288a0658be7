"""statsd's host is resolved off the event loop (nerve's and synapse's ``make_stats``): a
resolver we control (``socket.getaddrinfo`` hangs or fails for some names, answers
127.0.0.1 for them afterwards) and a real UDP listener on 127.0.0.1."""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from smartstack import statsd
from smartstack.statsd import StatsdConfig, StatsdStats, make_stats
from testbed.process import wait_until
from testbed.statsd import StatsdListener


class Dns:
    """``slow.test`` hangs until ``release``; ``flaky.test`` fails ``failures`` times;
    both then answer 127.0.0.1."""

    def __init__(self) -> None:
        self.real = socket.getaddrinfo
        self.release = threading.Event()
        self.failures = 2

    def getaddrinfo(self, host, port, *args, **kwargs):  # type: ignore[no-untyped-def]
        if host == "slow.test":
            self.release.wait(30)
        elif host == "flaky.test" and self.failures > 0:
            self.failures -= 1
            raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
        if host in ("slow.test", "flaky.test"):
            host = "127.0.0.1"
        return self.real(host, port, *args, **kwargs)


@pytest.fixture
def dns(monkeypatch: pytest.MonkeyPatch) -> Iterator[Dns]:
    fake = Dns()
    monkeypatch.setattr(socket, "getaddrinfo", fake.getaddrinfo)
    monkeypatch.setattr(statsd, "RETRY_SECONDS", 0.05)
    yield fake
    fake.release.set()


def events(caplog: pytest.LogCaptureFixture, name: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.getMessage() == name]


def test_a_slow_statsd_lookup_never_blocks_the_caller(dns: Dns) -> None:
    with StatsdListener() as sink:
        started = time.monotonic()
        stats = make_stats(StatsdConfig(host="slow.test", port=sink.port, prefix="p"))
        took = time.monotonic() - started
        assert took < 0.5, f"make_stats blocked {took:.2f}s on the lookup"  # old: 30 s
        assert isinstance(stats, StatsdStats) and not stats.ready
        stats.incr("nerve", "early")  # before the address is known: dropped, no error
        dns.release.set()
        wait_until(lambda: stats.ready, 5, what="the statsd lookup")
        stats.incr("nerve", "late")
        sink.wait_for("p.nerve.late")
        stats.close()
        assert "p.nerve.early" not in sink.names()


def test_a_name_that_does_not_resolve_is_logged_once_and_tried_again(
    dns: Dns, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="smartstack.statsd")
    with StatsdListener() as sink:
        stats = make_stats(StatsdConfig(host="flaky.test", port=sink.port))
        wait_until(lambda: stats.ready, 5, what="the statsd lookup, tried again")
        stats.incr("nerve", "sent")
        sink.wait_for("nerve.sent")
        stats.close()
    assert len(events(caplog, "statsd_unavailable")) == 1  # two failures, one line
    assert len(events(caplog, "statsd_recovered")) == 1


def test_closed_before_the_lookup_answered_sends_nothing(dns: Dns) -> None:
    with StatsdListener() as sink:
        stats = make_stats(StatsdConfig(host="slow.test", port=sink.port))
        assert isinstance(stats, StatsdStats)
        stats.close()  # a SIGHUP replaced it while its lookup hung
        dns.release.set()
        stats._resolving.join(5)
        stats.incr("nerve", "after_close")
        time.sleep(0.2)
        assert "nerve.after_close" not in sink.names()
