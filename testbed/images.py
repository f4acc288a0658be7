"""Images made locally, with no registry: a busybox test image and the project image.

- `busybox_image(client)`: `docker import` of a rootfs holding Debian's static busybox (from the
  busybox-static package) and a `serve` script: a container of it answers HTTP with its own name.
  Tagged with a hash of its content, so it is imported once per daemon.
- `project_image(client)`: the repo's Dockerfile built on a base made by
  scripts/build-base-image.sh (debootstrap, imported as smartstack-base:bookworm). The built image
  is saved under .cache/images/ keyed by a hash of the build context, so later runs (tests,
  `make compose-demo`) load it in seconds instead of building again.

`python -m testbed.images project` builds/loads the project image into the dockerd
named by DOCKER_HOST and prints its tag (used by scripts/compose-demo.sh).
"""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
CACHE = REPO / ".cache"
BUSYBOX = Path("/bin/busybox")
BUSYBOX_REPO = "smartstack-busybox"
PROJECT_REPO = "smartstack"
BASE_IMAGE = "smartstack-base:bookworm"
# Applets linked in the test image (busybox's wget crashes in the static build: use nc).
APPLETS = (
    "sh", "httpd", "nc", "cat", "echo", "ls", "ps", "kill", "sleep", "test", "touch",
    "rm", "mkdir", "hostname", "grep", "sed", "env", "true", "false", "date", "wc",
)  # fmt: skip

# Run as the container's command: answer HTTP on $PORT (default 80) with $NAME (default the
# hostname); /www/healthy exists while the container should count as healthy (tests remove it).
# sh as PID 1 gets no default SIGTERM action: the trap makes `docker stop` quick and clean;
# STOP_DELAY seconds of serving after SIGTERM play an app draining its connections.
SERVE_SCRIPT = """#!/bin/sh
mkdir -p /www
echo "${NAME:-$(hostname)}" > /www/index.html
echo ok > /www/healthy
trap 'sleep "${STOP_DELAY:-0}"; kill $child 2>/dev/null; exit 0' TERM INT
httpd -f -p "${PORT:-80}" -h /www &
child=$!
wait $child
"""

# Files of the repo that make the project image's build context (mirrored by .dockerignore).
CONTEXT_PATHS = ("Dockerfile", "pyproject.toml", "README.md", "docker", "smartstack", "nerve",
                 "synapse", "templates")  # fmt: skip


def _add_file(tar: tarfile.TarFile, name: str, data: bytes, mode: int = 0o644) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), mode, 0
    tar.addfile(info, io.BytesIO(data))


def _add_entry(tar: tarfile.TarFile, name: str, kind: bytes, mode: int, link: str = "") -> None:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.mtime, info.linkname = kind, mode, 0, link
    tar.addfile(info)


def busybox_rootfs() -> bytes:
    """A deterministic tar of the test image's root filesystem."""
    if not BUSYBOX.exists():
        raise FileNotFoundError(f"{BUSYBOX} missing: install busybox-static")
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for directory, mode in (("bin", 0o755), ("etc", 0o755), ("www", 0o755), ("tmp", 0o1777)):
            _add_entry(tar, directory, tarfile.DIRTYPE, mode)
        _add_file(tar, "bin/busybox", BUSYBOX.read_bytes(), 0o755)
        for applet in APPLETS:
            _add_entry(tar, f"bin/{applet}", tarfile.SYMTYPE, 0o777, "busybox")
        _add_file(tar, "bin/serve", SERVE_SCRIPT.encode(), 0o755)
        passwd = b"root:x:0:0:root:/:/bin/sh\nnobody:x:65534:65534::/:/bin/false\n"
        _add_file(tar, "etc/passwd", passwd)
        _add_file(tar, "etc/group", b"root:x:0:\nnogroup:x:65534:\n")
    return out.getvalue()


def _has_image(client: Any, tag: str) -> bool:
    import docker.errors

    try:
        client.images.get(tag)
    except docker.errors.ImageNotFound:
        return False
    return True


def busybox_image(client: Any) -> str:
    """Import the busybox test image into `client`'s daemon (once) and return its tag."""
    rootfs = busybox_rootfs()
    tag = f"{BUSYBOX_REPO}:{hashlib.sha256(rootfs).hexdigest()[:12]}"
    if not _has_image(client, tag):
        repo, _, version = tag.partition(":")
        client.api.import_image_from_data(
            rootfs, repository=repo, tag=version, changes=['CMD ["/bin/serve"]', "EXPOSE 80"]
        )
        client.images.get(tag).tag(BUSYBOX_REPO, "latest")  # the compose demo's apps
    return tag


# --------------------------------------------------------------------------- built images


@dataclass(frozen=True)
class ImageSpec:
    """A Dockerfile of the repo and the repo paths its build context holds."""

    repo: str
    dockerfile: str
    paths: tuple[str, ...]
    wheels: bool = False  # add the host-built wheelhouse as wheels/ (no PyPI in the build)


PROJECT = ImageSpec(PROJECT_REPO, "Dockerfile", CONTEXT_PATHS, wheels=True)
# The registry for the compose demo (etcd from Debian's package).
ETCD = ImageSpec("smartstack-etcd", "examples/compose/etcd.Dockerfile",
                 ("examples/compose/etcd.Dockerfile",))  # fmt: skip


def _context_files(paths: tuple[str, ...]) -> Iterator[Path]:
    for name in paths:
        path = REPO / name
        if path.is_file():
            yield path
        elif path.is_dir():
            for sub in sorted(path.rglob("*")):
                if sub.is_file() and "__pycache__" not in sub.parts and sub.suffix != ".pyc":
                    yield sub


def wheelhouse() -> Path:
    """Wheels of the project's dependencies (and its build backend), made on the host once.

    The private dockerd's builds reach no index (and PyPI's TLS here needs the host's pip
    setup), so the image installs from these. Versions are those of the repo's .venv.
    """
    pyproject = (REPO / "pyproject.toml").read_bytes()
    key = hashlib.sha256(pyproject).hexdigest()[:12]
    target = CACHE / "wheels" / key
    if (target / ".complete").exists():
        return target
    import tomllib

    deps = tomllib.loads(pyproject.decode())["project"]["dependencies"]
    build = tomllib.loads(pyproject.decode())["build-system"]["requires"]
    target.mkdir(parents=True, exist_ok=True)
    frozen = subprocess.run(
        [sys.executable, "-m", "pip", "freeze", "--exclude-editable"],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    constraints = target / "constraints.txt"
    constraints.write_text(frozen)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--disable-pip-version-check",
         "-w", str(target), "-c", str(constraints), *deps, *build],
        check=True,
    )  # fmt: skip
    constraints.unlink()
    (target / ".complete").touch()
    return target


def build_context(spec: ImageSpec, wheels: Path | None = None) -> tuple[bytes, str]:
    """The build context tar (the spec's paths, plus `wheels` as wheels/) and its hash.

    The hash covers the repo's files only: the wheels follow from pyproject.toml.
    """
    out = io.BytesIO()
    digest = hashlib.sha256()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for path in _context_files(spec.paths):
            rel = path.relative_to(REPO).as_posix()
            data = path.read_bytes()
            digest.update(rel.encode() + b"\0" + data + b"\0")
            _add_file(tar, rel, data, 0o755 if os.access(path, os.X_OK) else 0o644)
        for wheel in sorted(wheels.glob("*.whl")) if wheels else []:
            _add_file(tar, f"wheels/{wheel.name}", wheel.read_bytes())
    return out.getvalue(), digest.hexdigest()[:12]


def ensure_base_image(client_env: dict[str, str]) -> str:
    """Run scripts/build-base-image.sh (debootstrap once, cached; import if missing)."""
    env = dict(os.environ, **client_env)
    subprocess.run(["bash", str(REPO / "scripts" / "build-base-image.sh")], env=env, check=True)
    return BASE_IMAGE


def built_image(
    client: Any, client_env: dict[str, str], spec: ImageSpec = PROJECT, base: str = BASE_IMAGE
) -> str:
    """The spec's image in `client`'s daemon, tagged <repo>:<content hash> and <repo>:latest:
    already there, loaded from .cache/images, or built (then saved there)."""
    _, digest = build_context(spec)
    tag = f"{spec.repo}:{digest}"
    if not _has_image(client, tag):
        _load_or_build(client, client_env, spec, base, tag)
    client.images.get(tag).tag(spec.repo, "latest")  # the compose file uses :latest
    return tag


def project_image(client: Any, client_env: dict[str, str], base: str = BASE_IMAGE) -> str:
    return built_image(client, client_env, PROJECT, base)


def _load_or_build(
    client: Any, client_env: dict[str, str], spec: ImageSpec, base: str, tag: str
) -> None:
    saved = CACHE / "images" / f"{tag.replace(':', '-')}.tar"
    if saved.exists():
        with saved.open("rb") as f:
            client.images.load(f)
        return
    if base == BASE_IMAGE:
        ensure_base_image(client_env)
    context, _ = build_context(spec, wheelhouse() if spec.wheels else None)
    # Host network for the build: the private dockerd has no NAT, and apt needs Debian's archive.
    image, _logs = client.images.build(
        fileobj=io.BytesIO(context),
        custom_context=True,
        dockerfile=spec.dockerfile,
        tag=tag,
        buildargs={"BASE_IMAGE": base},
        network_mode="host",
        rm=True,
        forcerm=True,
    )
    saved.parent.mkdir(parents=True, exist_ok=True)
    for old in saved.parent.glob(f"{spec.repo}-*.tar"):
        old.unlink()  # one cached build per image is enough
    tmp = saved.with_suffix(".tmp")
    with tmp.open("wb") as f:
        for chunk in image.save(named=True):
            f.write(chunk)
    tmp.rename(saved)


def main(argv: list[str]) -> int:
    import docker

    specs = {"project": PROJECT, "etcd": ETCD}
    if len(argv) != 1 or argv[0] not in (*specs, "busybox"):
        print("usage: python -m testbed.images project|etcd|busybox",
              file=sys.stderr)  # fmt: skip
        return 2
    client = docker.from_env(version="auto", timeout=900)
    env = {"DOCKER_HOST": os.environ.get("DOCKER_HOST", "")}
    if argv[0] == "busybox":
        print(busybox_image(client))
    else:
        print(built_image(client, env, specs[argv[0]]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
