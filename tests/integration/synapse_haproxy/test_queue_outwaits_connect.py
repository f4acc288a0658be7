"""A request queued behind a server's ``maxconn`` waits for it on a real HAProxy 2.6
(synapse.haproxy.queue_wait): one server at ``maxconn 1`` answering after SLOW_S, longer
than ``timeout connect`` (1 s). Before, HAProxy's queue wait fell back to ``timeout
connect``: the requests queued behind the first got a 503 after 1.0 s."""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from haproxy_helpers import DEFAULTS, haproxy_config, server, service
from synapse_e2e import http_get

from synapse.haproxy.render import Renderer
from testbed.haproxy import check_config
from testbed.process import free_port

SLOW_S = 1.3  # each answer: longer than `timeout connect 1s`
CLIENTS = 3  # the last waits ~2 x SLOW_S in HAProxy's queue


class _Slow(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        time.sleep(SLOW_S)
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def slow_backend() -> Iterator[int]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Slow)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd.server_address[1]
    httpd.shutdown()
    httpd.server_close()


def get(port: int) -> tuple[int, float]:
    """(HTTP status, seconds it took)."""
    start = time.monotonic()
    status, _ = http_get(port, timeout=15)
    return status, time.monotonic() - start


def answers(
    sockdir: Path, haproxy_factory, backend_port: int, record_maxconn: bool = False, **config: Any
) -> list[tuple[int, float]]:
    """CLIENTS requests at once through a real HAProxy to the one server at ``maxconn 1``
    (the service's key; with ``record_maxconn``, the record's ``haproxy_server_options``)."""
    port = free_port()
    if record_maxconn:
        one = server("127.0.0.1", backend_port, "a", registry_options="maxconn 1")
        web = service("web", [one], port=port)
    else:
        web = service("web", [server("127.0.0.1", backend_port, "a")], port=port, maxconn=1)
    admin = f"stats socket {sockdir}/admin.sock mode 600 level admin"
    config = haproxy_config(config_file_path=str(sockdir / "haproxy.cfg"),
                            **{"global": [admin, "maxconn 256"]}, **config)  # fmt: skip
    path = Path(config.config_file_path or "")
    path.write_text(Renderer(config).render([web]).text)
    check_config(path)
    haproxy_factory(config_path=path, workdir=sockdir)
    with ThreadPoolExecutor(CLIENTS) as pool:
        return list(pool.map(get, [port] * CLIENTS))


def test_a_queued_request_outwaits_timeout_connect(haproxy_factory, sockdir: Path,
                                                   slow_backend: int) -> None:  # fmt: skip
    assert "timeout connect 1s" in DEFAULTS
    got = answers(sockdir, haproxy_factory, slow_backend)
    assert [status for status, _ in got] == [200] * CLIENTS, got
    # the last one was served after waiting in the queue longer than `timeout connect`
    assert max(took for _, took in got) > 2 * SLOW_S, got


def test_the_queue_outwaits_a_timeout_server_shorter_than_connect(
    haproxy_factory, sockdir: Path, slow_backend: int
) -> None:
    """``timeout connect 3s``, ``timeout server 2s``: HAProxy's own fallback let the last
    request wait ~2.6 s in the queue; ``timeout queue 2s`` gave it a 503 at 2.0 s."""
    defaults = ["mode http", "timeout connect 3s", "timeout client 10s", "timeout server 2s"]
    got = answers(sockdir, haproxy_factory, slow_backend, defaults=defaults)
    assert [status for status, _ in got] == [200] * CLIENTS, got
    assert max(took for _, took in got) > 2 * SLOW_S, got


def test_a_records_maxconn_queues_as_long(haproxy_factory, sockdir: Path,
                                          slow_backend: int) -> None:  # fmt: skip
    """The ``maxconn`` only a record carries (``registry_server_options`` allowing it):
    before, no ``timeout queue`` was written for it and the queued requests got a 503 at
    ``timeout connect``."""
    policy = {"allow": True}
    got = answers(sockdir, haproxy_factory, slow_backend, record_maxconn=True,
                  registry_server_options=policy)  # fmt: skip
    assert [status for status, _ in got] == [200] * CLIENTS, got
    assert max(took for _, took in got) > 2 * SLOW_S, got
