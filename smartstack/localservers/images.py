"""Images made locally, with no registry: a busybox test image and the project image.

- `busybox_image(client)`: `docker import` of a rootfs holding Debian's static busybox (from the
  busybox-static package) and a `serve` script: a container of it answers HTTP with its own name.
  Tagged with a hash of its content, so it is imported once per daemon.
- `project_image(client)`: the repo's Dockerfile built on a base made by
  scripts/build-base-image.sh (debootstrap, imported as smartstack-base:bookworm). The built image
  is saved under .cache/images/ keyed by a hash of the build context, so later runs (tests,
  `make compose-demo`) load it in seconds instead of building again.

`python -m smartstack.localservers.images project` builds/loads the project image into the dockerd
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
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
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
# sh as PID 1 gets no default SIGTERM action: the trap makes `docker stop` quick and clean.
SERVE_SCRIPT = """#!/bin/sh
mkdir -p /www
echo "${NAME:-$(hostname)}" > /www/index.html
echo ok > /www/healthy
trap 'kill $child 2>/dev/null; exit 0' TERM INT
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
        _add_file(tar, "etc/passwd", b"root:x:0:0:root:/:/bin/sh\nnobody:x:65534:65534::/:/bin/false\n")
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
    return tag


# --------------------------------------------------------------------------- project image


def _context_files() -> Iterator[Path]:
    for name in CONTEXT_PATHS:
        path = REPO / name
        if path.is_file():
            yield path
        elif path.is_dir():
            for sub in sorted(path.rglob("*")):
                if sub.is_file() and "__pycache__" not in sub.parts and sub.suffix != ".pyc":
                    yield sub


def build_context() -> tuple[bytes, str]:
    """The build context tar (only CONTEXT_PATHS) and its content hash."""
    out = io.BytesIO()
    digest = hashlib.sha256()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for path in _context_files():
            rel = path.relative_to(REPO).as_posix()
            data = path.read_bytes()
            digest.update(rel.encode() + b"\0" + data + b"\0")
            _add_file(tar, rel, data, 0o755 if os.access(path, os.X_OK) else 0o644)
    return out.getvalue(), digest.hexdigest()[:12]


def ensure_base_image(client_env: dict[str, str]) -> str:
    """Run scripts/build-base-image.sh (debootstrap once, cached; import if missing)."""
    env = dict(os.environ, **client_env)
    subprocess.run(["bash", str(REPO / "scripts" / "build-base-image.sh")], env=env, check=True)
    return BASE_IMAGE


def project_image(client: Any, client_env: dict[str, str], base: str = BASE_IMAGE) -> str:
    """The project image in `client`'s daemon: loaded from .cache/images or built, then saved."""
    context, digest = build_context()
    tag = f"{PROJECT_REPO}:{digest}"
    if _has_image(client, tag):
        return tag
    saved = CACHE / "images" / f"{PROJECT_REPO}-{digest}.tar"
    if saved.exists():
        with saved.open("rb") as f:
            client.images.load(f)
        return tag
    if base == BASE_IMAGE:
        ensure_base_image(client_env)
    # Host network for the build: the private dockerd has no NAT, apt/pip need Debian and PyPI.
    image, _logs = client.images.build(
        fileobj=io.BytesIO(context),
        custom_context=True,
        tag=tag,
        buildargs={"BASE_IMAGE": base},
        network_mode="host",
        rm=True,
        forcerm=True,
    )
    saved.parent.mkdir(parents=True, exist_ok=True)
    for old in saved.parent.glob(f"{PROJECT_REPO}-*.tar"):
        old.unlink()  # one cached build is enough
    tmp = saved.with_suffix(".tmp")
    with tmp.open("wb") as f:
        for chunk in image.save(named=True):
            f.write(chunk)
    tmp.rename(saved)
    return tag


def main(argv: list[str]) -> int:
    import docker

    if argv[:1] not in (["project"], ["busybox"]):
        print("usage: python -m smartstack.localservers.images project|busybox", file=sys.stderr)
        return 2
    client = docker.from_env(version="auto", timeout=600)
    env = {"DOCKER_HOST": os.environ.get("DOCKER_HOST", "")}
    tag = project_image(client, env) if argv[0] == "project" else busybox_image(client)
    print(tag)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
