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


def test_a_queued_request_outwaits_timeout_connect(haproxy_factory, sockdir: Path,
                                                   slow_backend: int) -> None:  # fmt: skip
    assert "timeout connect 1s" in DEFAULTS
    port = free_port()
    web = service("web", [server("127.0.0.1", slow_backend, "a")], port=port, maxconn=1)
    admin = f"stats socket {sockdir}/admin.sock mode 600 level admin"
    config = haproxy_config(config_file_path=str(sockdir / "haproxy.cfg"),
                            **{"global": [admin, "maxconn 256"]})  # fmt: skip
    path = Path(config.config_file_path or "")
    path.write_text(Renderer(config).render([web]).text)
    check_config(path)
    haproxy_factory(config_path=path, workdir=sockdir)
    with ThreadPoolExecutor(CLIENTS) as pool:
        answers = list(pool.map(get, [port] * CLIENTS))
    assert [status for status, _ in answers] == [200] * CLIENTS, answers
    # the last one was served after waiting in the queue longer than `timeout connect`
    assert max(took for _, took in answers) > 2 * SLOW_S, answers
