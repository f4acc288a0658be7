"""`make compose-demo`: examples/docker-compose.yml end to end, checked, then cleaned up.

1. a Docker engine: the one at DOCKER_HOST / /var/run/docker.sock if it answers, else a private
   dockerd started here (own socket and data root, stopped and unmounted at the end);
2. images, without any registry: the busybox app image (docker import), the project image and
   the etcd image (built from the debootstrap base, cached in .cache/images);
3. `docker-compose up`: etcd, three apps with a nerve sidecar each, synapse + HAProxy, a client;
4. checks, from the host through synapse's HAProxy: requests are spread over the three apps;
   `docker-compose stop app2` under steady traffic removes app2 with no failed request; app2
   started again gets traffic again;
5. `docker-compose down`, private dockerd stopped. Exit 0 when every check passed.

--keep: leave everything running after the checks and print the URLs (Ctrl-C to clean up).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from testbed.dockerd import DockerDaemon  # noqa: E402
from testbed.images import ETCD, PROJECT, built_image, busybox_image  # noqa: E402

PROJECT_NAME = "smartstack-demo"
COMPOSE_FILE = REPO / "examples" / "docker-compose.yml"
APPS = ("app1", "app2", "app3")
SYSTEM_SOCKET = Path("/var/run/docker.sock")


def say(text: str) -> None:
    print(f"compose-demo: {text}", flush=True)


def get(port: int, timeout: float = 2.0) -> str:
    """One request on a new connection (so HAProxy balances each one); the answering app."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.settimeout(timeout)
        sock.sendall(b"GET / HTTP/1.0\r\nHost: demo\r\n\r\n")
        data = b""
        while chunk := sock.recv(4096):
            data += chunk
    head, _, body = data.decode(errors="replace").partition("\r\n\r\n")
    status = head.split("\r\n", 1)[0]
    if " 200 " not in status:
        raise OSError(status or "empty answer")
    return body.strip()


class Traffic(threading.Thread):
    """Steady requests (one every `interval` s) in the background, bounded by `limit`."""

    def __init__(self, port: int, interval: float = 0.02, limit: float = 120.0) -> None:
        super().__init__(daemon=True)
        self.port, self.interval, self.limit = port, interval, limit
        self.answers: list[tuple[float, str]] = []
        self.failures: list[str] = []
        self._halt = threading.Event()

    def run(self) -> None:
        deadline = time.monotonic() + self.limit
        while not self._halt.is_set() and time.monotonic() < deadline:
            try:
                self.answers.append((time.monotonic(), get(self.port)))
            except OSError as exc:
                self.failures.append(str(exc))
            self._halt.wait(self.interval)

    def stop(self) -> None:
        self._halt.set()
        self.join(10)


def wait_for(predicate: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(Exception):
            value = predicate()
            if value:
                return value
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.2)


class Demo:
    def __init__(self, keep: bool) -> None:
        self.keep = keep
        self.daemon: DockerDaemon | None = None
        self.env = dict(os.environ)
        self.client: Any = None

    # --- engine and images ---------------------------------------------------------------

    def engine(self) -> None:
        import docker

        url = os.environ.get("DOCKER_HOST") or f"unix://{SYSTEM_SOCKET}"
        with contextlib.suppress(Exception):
            probe = docker.DockerClient(base_url=url, version="auto", timeout=5)
            probe.ping()
            self.client = probe
            say(f"using the running Docker engine at {url}")
        if self.client is None:
            workdir = Path(tempfile.mkdtemp(prefix="smst-demo-"))
            say(f"no Docker engine running: starting a private dockerd in {workdir}")
            self.daemon = DockerDaemon(workdir).start()
            url = self.daemon.base_url
            self.client = self.daemon.client(timeout=900)
        socket_path = url.removeprefix("unix://")
        self.env.update(DOCKER_HOST=url, DOCKER_SOCKET=socket_path,
                        DOCKER_GID=str(os.stat(socket_path).st_gid),
                        COMPOSE_PROJECT_NAME=PROJECT_NAME)  # fmt: skip

    def images(self) -> None:
        started = time.monotonic()
        say("images: busybox app (docker import), smartstack and etcd (cached builds)")
        env = {"DOCKER_HOST": self.env["DOCKER_HOST"]}
        tags = [busybox_image(self.client), built_image(self.client, env, PROJECT),
                built_image(self.client, env, ETCD)]  # fmt: skip
        say(f"images ready in {time.monotonic() - started:.0f}s: {', '.join(tags)}")

    # --- compose ---------------------------------------------------------------------------

    def compose(self, *args: str, check: bool = True, timeout: float = 180,
                quiet: bool = True) -> None:  # fmt: skip
        cmd = ["docker-compose", "-p", PROJECT_NAME, "-f", str(COMPOSE_FILE), *args]
        out = subprocess.DEVNULL if quiet and not self.keep else None
        subprocess.run(cmd, env=self.env, check=check, timeout=timeout, stdout=out, stderr=out)

    def published(self, service: str, port: int) -> int:
        [container] = self.client.containers.list(
            filters={"label": [f"com.docker.compose.project={PROJECT_NAME}",
                               f"com.docker.compose.service={service}"]})  # fmt: skip
        return int(container.ports[f"{port}/tcp"][0]["HostPort"])

    # --- the checks ------------------------------------------------------------------------

    def spread(self, port: int, count: int = 60) -> Counter[str]:
        return Counter(get(port) for _ in range(count))

    def run_checks(self) -> None:
        port = self.published("synapse", 8080)
        say(f"waiting for the three apps behind synapse's HAProxy (127.0.0.1:{port})")
        wait_for(lambda: set(self.spread(port, 12)) == set(APPS), 120, "all three apps")
        counts = self.spread(port)
        say(f"60 requests: {dict(sorted(counts.items()))}")
        if set(counts) != set(APPS) or min(counts.values()) < 10:
            raise RuntimeError(f"traffic is not spread over the three apps: {counts}")

        say("stopping app2 (SIGTERM; it serves 1 s more while nerve withdraws it) under traffic")
        traffic = Traffic(port)
        traffic.start()
        wait_for(lambda: len(traffic.answers) > 20, 30, "traffic")
        self.compose("stop", "app2")
        stopped_at = time.monotonic()
        wait_for(lambda: time.monotonic() - stopped_at > 2, 10, "two more seconds of traffic")
        traffic.stop()
        after = Counter(app for at, app in traffic.answers if at > stopped_at)
        say(f"{len(traffic.answers)} requests, {len(traffic.failures)} failed; "
            f"after the stop: {dict(sorted(after.items()))}")  # fmt: skip
        if traffic.failures:
            raise RuntimeError(f"failed requests while app2 stopped: {traffic.failures[:5]}")
        if "app2" in after or set(after) != {"app1", "app3"}:
            raise RuntimeError(f"app2 should be gone and app1/app3 serve: {after}")

        say("starting app2 again")
        self.compose("start", "app2")
        wait_for(lambda: "app2" in self.spread(port, 12), 60, "app2 to get traffic again")
        say(f"60 requests: {dict(sorted(self.spread(port).items()))}")

    def show_urls(self) -> None:
        say("running; Ctrl-C to stop and clean up")
        say(f"  web via HAProxy:  http://127.0.0.1:{self.published('synapse', 8080)}/")
        say(f"  HAProxy stats:    http://127.0.0.1:{self.published('synapse', 8404)}/")
        say(f"  synapse status:   http://127.0.0.1:{self.published('synapse', 3212)}/status")
        say(f"  docker-compose:   DOCKER_HOST={self.env['DOCKER_HOST']} docker-compose "
            f"-p {PROJECT_NAME} -f {COMPOSE_FILE} logs -f")  # fmt: skip
        with contextlib.suppress(KeyboardInterrupt):
            while True:
                time.sleep(3600)

    def cleanup(self) -> None:
        say("cleaning up: docker-compose down")
        if self.client is not None:
            with contextlib.suppress(Exception):
                self.compose("down", "--volumes", "--remove-orphans", "--timeout", "3",
                             check=False, timeout=120)  # fmt: skip
            with contextlib.suppress(Exception):
                self.client.close()
        if self.daemon is not None:
            say("stopping the private dockerd")
            self.daemon.stop()
            leftovers = self.daemon.leftovers()
            if leftovers:
                raise RuntimeError(f"the private dockerd left: {leftovers}")
            with contextlib.suppress(OSError):
                for name in ("dockerd.log", "daemon.json"):
                    (self.daemon.workdir / name).unlink(missing_ok=True)
                self.daemon.workdir.rmdir()


def _interrupt(signum: int, _frame: Any) -> None:
    # SIGTERM / SIGHUP (a supervisor, a closed terminal) clean up exactly like Ctrl-C; by
    # default they would end the process without `finally`, leaving the private dockerd.
    raise KeyboardInterrupt(signal.Signals(signum).name)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="keep it running after the checks")
    args = parser.parse_args(argv)
    # SIGINT too: a shell starts background jobs with SIGINT ignored, and Python then
    # leaves it ignored (no KeyboardInterrupt: the demo could not be stopped).
    for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(signum, _interrupt)
    demo = Demo(args.keep)
    started = time.monotonic()
    ok = False
    try:
        demo.engine()
        demo.images()
        say("docker-compose up")
        demo.compose("up", "-d", "--no-build")
        demo.run_checks()
        ok = True
        if args.keep:
            demo.show_urls()
    except (RuntimeError, subprocess.SubprocessError, OSError) as exc:
        say(f"FAILED: {exc}")
        with contextlib.suppress(Exception):
            demo.compose("logs", "--tail", "20", check=False, timeout=60, quiet=False)
    except KeyboardInterrupt as exc:
        say(f"interrupted ({str(exc) or 'SIGINT'})")
    finally:
        for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
            signal.signal(signum, signal.SIG_IGN)  # a second signal must not cut the cleanup
        demo.cleanup()
    say(f"{'passed' if ok else 'failed'} in {time.monotonic() - started:.0f}s")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
