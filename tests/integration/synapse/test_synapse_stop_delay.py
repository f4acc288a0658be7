"""``managed.stop_delay``: after SIGTERM a synapse that takes its HAProxy down keeps it
serving for that many seconds (an app stopped at the same time drains through it), then
soft-stops it (``stop_grace`` after that).

Before: the soft stop closed HAProxy's listeners at the signal, so an app stopped together
with its sidecar (a parallel ``docker stop``, a pod's end) had every request it sent while it
drained refused (500 of 500 in a 5 s drain; /tmp/rev/s28/sidecar, HIGH 3).
"""

from __future__ import annotations

import http.server
import signal
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from stall_witness import beating, held_for
from synapse_e2e import Synapse, ask_until, processes_using, refused, wait_serving

from testbed.process import free_port, wait_until

DELAY, GRACE = 2.5, 1.0


class _Answer(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/slow":  # (in flight when synapse is made to end at once)
            time.sleep(3)
        self.send_response(200)
        self.send_header("Content-Length", "1")
        self.end_headers()
        self.wfile.write(b"b")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def backend() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), _Answer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def health(syn: Synapse) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{syn.admin_port}/health", timeout=3) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def test_haproxy_serves_new_connections_for_the_stop_delay_then_stops(backend) -> None:
    port = free_port()
    service = {
        "discovery": {"method": "base"},
        "default_servers": [{"name": "b", "host": "127.0.0.1", "port": backend}],
        "haproxy": {"port": port, "bind_address": "127.0.0.1"},
    }
    managed = {"stop_on_exit": True, "stop_delay": DELAY, "stop_grace": GRACE}
    syn = Synapse({"web": service}, startup_wait=0)
    syn.config["haproxy"]["managed"].update(managed)
    syn.write_config()
    syn.start()
    wait_serving(port, {"b"})
    window, again = DELAY - 0.4, []

    def repeat() -> None:  # a repeated stop signal, once: logged
        if not again and time.monotonic() - began > 0.5:
            syn.signal(signal.SIGTERM)
            again.append(True)

    with beating() as held:
        began = time.monotonic()
        syn.signal(signal.SIGTERM)
        wait_until(lambda: "event=haproxy_stop_delayed" in syn.log(200), 2, interval=0.02,
                   what="haproxy_stop_delayed")  # fmt: skip
        assert health(syn)[0] == 503 and "stopping" in health(syn)[1]  # (out of rotation)
        answers, failed = ask_until(port, began, window, repeat)
        ran = time.monotonic() - began
    # More than 10 in the window (0.05 s apart); fewer by the share of it a stall of this
    # loaded process took (flake hunt s39), and only one it held past the soft stop refused
    share = min(1.0, (ran - held_for(held, began, began + ran)) / window)
    assert len(answers) > 10 * share and set(answers) == {200}, (answers, held)
    assert all(end - began >= DELAY - 0.1 and held_for(held, at, end)
               for at, end in failed), (failed, held)  # fmt: skip
    wait_until(lambda: refused(port), GRACE + 5.0, interval=0.05, what="the soft stop")
    assert time.monotonic() - began >= DELAY
    assert syn.process.wait(15) == 0
    log = syn.log(400)
    assert f"delay_s={DELAY}" in log and "how=soft" in log, log
    assert log.count("event=signal_while_stopping") == 1, log
    assert log.index("event=haproxy_stop_delayed") < log.index("event=haproxy_stopped")


def test_a_forcing_signal_during_the_delay_soft_stops_haproxy_first(backend) -> None:
    """A third stop signal (the second during the stop) ends synapse at once. During the
    delay HAProxy had been sent nothing yet: it ran on for good, holding its port (a host,
    stop_on_exit true, delay 4: master and worker still ran 8 s later). Now the master gets
    SIGUSR1 first: it ends once its in-flight request is done."""
    port = free_port()
    service = {
        "discovery": {"method": "base"},
        "default_servers": [{"name": "b", "host": "127.0.0.1", "port": backend}],
        "haproxy": {"port": port, "bind_address": "127.0.0.1"},
    }
    syn = Synapse({"web": service}, startup_wait=0)
    managed = {"stop_on_exit": True, "stop_delay": 4, "stop_grace": 6}
    syn.config["haproxy"]["managed"].update(managed)
    syn.write_config()
    syn.start()
    wait_serving(port, {"b"})
    slow: list[object] = []

    def ask_slow() -> None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/slow", timeout=10) as r:
                slow.append(r.status)
        except OSError as err:
            slow.append(repr(err))

    asker = threading.Thread(target=ask_slow)
    asker.start()
    time.sleep(0.3)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGTERM):
        syn.signal(sig)
        time.sleep(0.5)
    assert syn.process.wait(10) == -signal.SIGTERM
    asker.join(10)
    assert slow == [200]  # the soft stop let it finish
    wait_until(lambda: not processes_using(syn.dir), 5, interval=0.1, what="HAProxy's end")
    assert refused(port)
