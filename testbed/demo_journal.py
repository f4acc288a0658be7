"""``make demo``'s stuck-journal act: one instance's nerve writes its log into a pipe that
nobody reads any more (journald stuck behind a slow disk, a busy dockerd's log driver, a
terminal paused with Ctrl-S), and its app turns unhealthy meanwhile.

nerve writes its lines from a thread of its own (smartstack/log_writer.py), so it goes on
checking and withdraws the instance as always; its lines come out once the pipe is read
again. Before review s30 its first line into the full pipe froze it: the unhealthy app
stayed registered (and in every consumer's HAProxy) for as long as the pipe was full.
"""

from __future__ import annotations

import json
import os
import signal
import time
import urllib.request
from collections.abc import Callable
from typing import TYPE_CHECKING

from testbed.process import ManagedProcess, wait_until
from testbed.stuck_pipe import StuckPipe

if TYPE_CHECKING:
    from testbed.demo import Demo


def checked_up(demo: Demo, name: str) -> bool:
    """Whether ``name``'s nerve says its service is up by its own checks (admin
    ``/health/<service>`` 200): ``rise`` passed, the start's hold of the previous run's
    registration over. Until then one failed check withdraws that leftover at once,
    without a ``service_withdrawn`` line (nerve/service.py ``_end_hold``)."""
    config = json.loads((demo.workdir / f"nerve-{name}.json").read_text())
    [service] = config["services"]
    url = f"http://127.0.0.1:{config['admin']['port']}/health/{service}"
    try:
        with urllib.request.urlopen(url, timeout=2) as answer:
            return answer.status == 200 and json.load(answer)["state"] == "up"
    except OSError:  # still starting (refused), or 503: not up yet
        return False


def journal_act(demo: Demo, name: str, say: Callable[[str], None],
                detail: Callable[[str], None]) -> float:  # fmt: skip
    """``name``'s nerve, its stderr a pipe nobody reads, while its app turns unhealthy;
    seconds until the instance left HAProxy."""
    nerve: ManagedProcess = demo.nerves[name]
    backend = demo.backends[name]

    def serving() -> bool:
        return demo._in_rotation(backend.port)

    say(f"{name}'s journal gets stuck (its nerve's stderr a pipe nobody reads, as journald "
        f"behind a slow disk), and {name} turns unhealthy meanwhile")  # fmt: skip
    journal, log = StuckPipe(demo.workdir / f"{name}.journal"), nerve.log_path
    os.kill(nerve.pid, signal.SIGUSR2)  # the restart stop: the registration stays
    if nerve.wait(10) != 0:
        raise RuntimeError(f"the restart stop failed:\n{nerve.log_tail()}")
    nerve.kill()
    nerve.log_path = journal.path  # (ManagedProcess opens it as the new nerve's stderr)
    nerve.start()
    nerve.log_path = log
    # Its own verdict first: a fixed 1 s was not enough on a busy host (the app turned
    # unhealthy while the new nerve still held the old registration: withdrawn at once, and
    # no service_withdrawn line to wait for).
    wait_until(lambda: checked_up(demo, name), timeout=20, what=f"{name}'s new nerve up",
               interval=0.05)  # fmt: skip
    journal.fill()
    started = time.monotonic()
    detail(f"nerve pid {nerve.pid} writes into the pipe; the pipe is full, nobody reads it")
    backend.set_healthy(False)
    wait_until(lambda: not serving(), timeout=20, what=f"{name} withdrawn", interval=0.01)
    out = time.monotonic() - started
    detail(f"{name} out of HAProxy {out:.2f} s after it turned unhealthy (the journal still "
           "stuck: nerve writes its lines from a thread of its own)")  # fmt: skip
    size = log.stat().st_size
    journal.read_into(log)
    wait_until(lambda: "service_withdrawn" in log.read_text()[size:], timeout=10,
               what="nerve's lines once the journal reads again", interval=0.05)  # fmt: skip
    detail("the journal reads again: nerve's lines come out, service_withdrawn among them")
    backend.set_healthy(True)
    wait_until(serving, timeout=20, what=f"{name} back in rotation", interval=0.02)
    failed = sum(1 for s in demo.client.since(started) if s.backend is None)
    detail(f"journal act: failed requests {failed}")
    return out
