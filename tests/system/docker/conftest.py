"""A private dockerd for the Docker tests (session-scoped), its busybox test image and helpers.

The daemon has its own socket, data root and exec root in a temp dir, no default bridge and
no iptables rules; containers join the session's user-defined network, and the host reaches
them through ports published on 127.0.0.1. If dockerd cannot start on this machine, every
test in this directory is skipped with the reason (and nothing else is).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from testbed.dockerd import DockerDaemon, DockerUnavailable, unavailable_reason
from testbed.image_prebuild import Prebuild, saved_image
from testbed.images import busybox_image

NETWORK = "smartstack-test"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.fspath).parents:
            item.add_marker(pytest.mark.docker)


_prebuild: list[Prebuild] = []  # the background build of the project image, if started


def pytest_collection_finish(session: pytest.Session) -> None:
    """A run with tests that need the project image builds it in the background from now
    on (testbed/image_prebuild.py): its first build took 75-90 s of the run's end."""
    if not any("prebuilt_image" in getattr(item, "fixturenames", ()) for item in session.items):
        return
    if saved_image().exists() or unavailable_reason():
        return  # (loaded in seconds; or no dockerd: the dockerd fixture skips the tests)
    _prebuild.append(Prebuild())
    _prebuild[0].start()


def pytest_unconfigure(config: pytest.Config) -> None:
    for prebuild in _prebuild:
        prebuild.stop()  # (a run cut short: the build and its dockerd stop too)


@pytest.fixture(scope="session")
def prebuilt_image() -> None:
    """Wait for the background build, if one was started; a failed one fails every test
    that needs the image, with its log (the image fixtures then load the saved image)."""
    for prebuild in _prebuild:
        failure = prebuild.wait(timeout=540)
        if failure:
            pytest.fail(failure)


@pytest.fixture(scope="session")
def dockerd() -> Iterator[DockerDaemon]:
    reason = unavailable_reason()
    if reason:
        pytest.skip(f"no private dockerd on this machine: {reason}")
    # A short path: the socket path must fit in a unix socket address.
    workdir = Path(tempfile.mkdtemp(prefix="smst-dockerd-"))
    daemon = DockerDaemon(workdir)
    try:
        daemon.start()
    except DockerUnavailable as exc:
        pytest.skip(f"dockerd cannot run on this machine: {str(exc).splitlines()[0]}")
    yield daemon
    daemon.stop()
    leftovers = daemon.leftovers()
    shutil.rmtree(workdir, ignore_errors=True)
    assert not leftovers, f"the private dockerd left things behind: {leftovers}"


@pytest.fixture(scope="session")
def docker_client(dockerd: DockerDaemon) -> Iterator[Any]:
    client = dockerd.client()
    yield client
    client.close()


@pytest.fixture(scope="session")
def busybox(docker_client: Any) -> str:
    return busybox_image(docker_client)


@pytest.fixture(scope="session")
def network(docker_client: Any) -> str:
    docker_client.networks.create(NETWORK, driver="bridge")
    return NETWORK


ContainerFactory = Callable[..., Any]


@pytest.fixture
def container_factory(docker_client: Any, busybox: str, network: str) -> Iterator[ContainerFactory]:
    """Start busybox HTTP containers on the test network; all are removed at teardown.

    `container_factory(name, labels={}, healthcheck=None, publish=True, **run_kwargs)`:
    port 80 is published on a free 127.0.0.1 port unless publish=False.
    """
    started: list[Any] = []

    def start(
        name: str,
        labels: dict[str, str] | None = None,
        healthcheck: dict[str, Any] | None = None,
        publish: bool = True,
        **kwargs: Any,
    ) -> Any:
        container = docker_client.containers.run(
            busybox,
            detach=True,
            name=name,
            network=network,
            labels=labels or {},
            healthcheck=healthcheck,
            environment={"NAME": name, **kwargs.pop("environment", {})},
            **{"ports": {"80/tcp": ("127.0.0.1", None)} if publish else {}, **kwargs},
        )
        started.append(container)
        container.reload()
        return container

    yield start

    for container in started:
        try:
            container.remove(force=True)
        except Exception as exc:  # already removed by the test
            if "No such container" not in str(exc) and "404" not in str(exc):
                raise
