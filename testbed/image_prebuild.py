"""The project image built in the background while the rest of a test run goes on.

Its first build (debootstrap, the wheelhouse, the Dockerfile) takes 75-90 s, which the Docker
tests' fixture used to wait out at the end of `make test`. `Prebuild.start()` (at the end of
collection) runs `python -m testbed.image_prebuild` beside the unit tier: its own private
dockerd builds the image and saves it to .cache/images, then stops. The fixture then only
waits for it (`Prebuild.wait()`: a failed build fails the tests that need the image, with
the build's log) and loads the saved image into the session's dockerd (about 5 s).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType

from testbed.dockerd import DockerDaemon, DockerUnavailable, unavailable_reason
from testbed.images import CACHE, PROJECT, REPO, build_context, project_image

UNAVAILABLE = 3  # exit code: no private dockerd here (the fixture then goes its own way)


def saved_image() -> Path:
    """Where `project_image` saves the current tree's image (as testbed.images names it)."""
    _, digest = build_context(PROJECT)
    return CACHE / "images" / f"{PROJECT.repo}-{digest}.tar"


class Prebuild:
    """The background build's process, started once per test run."""

    def __init__(self) -> None:
        self.log = Path(tempfile.mkdtemp(prefix="smst-prebuild-log-")) / "prebuild.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self.code: int | None = None

    def start(self) -> None:
        with self.log.open("wb") as out:  # (a file, not a pipe: it cannot block on a full one)
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "testbed.image_prebuild"],
                cwd=REPO, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip

    def wait(self, timeout: float) -> str | None:
        """Wait for the build; None if the image is saved (or no dockerd could run it: then
        the fixture's own build has the verdict), else why it failed, with its log's tail."""
        if self._proc is None:
            return None
        try:
            self.code = self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            return f"the background image build still ran after {timeout:.0f} s\n{self.tail()}"
        if self.code in (0, UNAVAILABLE):
            return None
        return f"the background image build failed (exit {self.code})\n{self.tail()}"

    def tail(self, chars: int = 6000) -> str:
        return self.log.read_text(errors="replace")[-chars:]

    def stop(self, timeout: float = 60.0) -> None:
        """End the build if it still runs (a run cut short): SIGTERM lets it stop its dockerd;
        then whatever is left of its process group is killed. Its log goes too."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout)
        if proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # (debootstrap, docker CLI: same group)
            proc.wait()
        shutil.rmtree(self.log.parent, ignore_errors=True)


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(f"signal {signum}")  # unwinds through main's finally: dockerd stops


def main() -> int:
    signal.signal(signal.SIGTERM, _terminate)
    reason = unavailable_reason()
    if reason:
        print(f"no private dockerd here: {reason}", flush=True)
        return UNAVAILABLE
    began = time.monotonic()
    daemon = DockerDaemon(tempfile.mkdtemp(prefix="smst-prebuild-"))  # (a short socket path)
    try:
        try:
            daemon.start()
        except DockerUnavailable as exc:
            print(f"dockerd cannot run here: {exc}", flush=True)
            return UNAVAILABLE
        client = daemon.client()
        try:
            tag = project_image(client, daemon.env())
        finally:
            client.close()
    finally:
        daemon.stop()
        leftovers = daemon.leftovers()
        shutil.rmtree(daemon.workdir, ignore_errors=True)
    if leftovers:
        print(f"the prebuild's dockerd left things behind: {leftovers}", flush=True)
        return 1
    print(f"{tag} saved to {saved_image()} in {time.monotonic() - began:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
