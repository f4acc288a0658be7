"""What is running: ``--version`` and the ``<daemon>_build_info`` metric, plus the
standard process metrics every Prometheus user expects next to them."""

from __future__ import annotations

import functools
import json
import os
import platform
import sys
from pathlib import Path

from prometheus_client import (
    CollectorRegistry,
    Gauge,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
)
from prometheus_client.metrics_core import CounterMetricFamily

from smartstack import logs

DISTRIBUTION = "smartstack"


@functools.cache
def _dist_info() -> Path | None:
    """Our installed distribution's ``smartstack-<version>.dist-info``, looked up on sys.path
    the way importlib.metadata does, without importing it: it brings zipfile, csv and email
    parsing, ~0.7 MB of RSS in every daemon on every host, for one line of one file."""
    prefix = f"{DISTRIBUTION}-"
    for entry in sys.path:
        try:
            with os.scandir(entry or ".") as found:
                for item in found:
                    if item.name.startswith(prefix) and item.name.endswith(".dist-info"):
                        return Path(item.path)
        except OSError:  # a missing or zipped path entry
            continue
    return None


def _metadata_text(name: str) -> str | None:
    """A file of our distribution's metadata; importlib.metadata only for an install this
    lookup does not know (an .egg-info, a zip)."""
    found = _dist_info()
    if found is not None:
        try:
            return (found / name).read_text(encoding="utf-8")
        except OSError:
            return None
    from importlib import metadata

    try:
        return metadata.distribution(DISTRIBUTION).read_text(name)
    except metadata.PackageNotFoundError:  # run from a source tree without installing
        return None


@functools.cache
def version() -> str:
    for line in (_metadata_text("METADATA") or _metadata_text("PKG-INFO") or "").splitlines():
        if line.startswith("Version:"):
            return line.split(":", 1)[1].strip()
        if not line:  # the headers end at the first blank line
            break
    return "unknown"


@functools.cache
def revision() -> str:
    """The source revision, when known: $SMARTSTACK_REVISION (set by image builds), the
    commit pip recorded for a VCS install, or the git checkout of an editable install."""
    if os.environ.get("SMARTSTACK_REVISION"):
        return os.environ["SMARTSTACK_REVISION"]
    direct = _metadata_text("direct_url.json")
    commit = (json.loads(direct).get("vcs_info") or {}).get("commit_id") if direct else None
    if commit:
        return str(commit)
    return _git_head(Path(__file__).resolve().parents[1] / ".git")


def _git_head(git: Path) -> str:
    """The checkout's commit, read from the files (no git process: this runs in every
    daemon start and in unit tests). A worktree's ``.git`` is a file naming its git dir."""
    try:
        if git.is_file():
            git = Path(git.read_text().split("gitdir:", 1)[1].strip())
        head = (git / "HEAD").read_text().strip()
        if not head.startswith("ref: "):
            return head[:12]
        ref = head[5:]
        common = git / "commondir"
        base = (git / common.read_text().strip()).resolve() if common.exists() else git
        for root in (git, base):
            if (root / ref).exists():
                return (root / ref).read_text().strip()[:12]
        packed = base / "packed-refs"
        for line in packed.read_text().splitlines() if packed.exists() else ():
            if line.endswith(" " + ref):
                return line.split()[0][:12]
    except (OSError, IndexError):
        pass
    return ""


def version_line(program: str) -> str:
    rev = revision()
    built = f" ({rev})" if rev else ""
    return (
        f"{program} {version()}{built}, {platform.python_implementation()} "
        f"{platform.python_version()}, {platform.platform()}"
    )


def instrument(registry: CollectorRegistry, daemon: str) -> None:
    """``<daemon>_build_info`` and the process/platform collectors on ``registry``.

    ``_created`` series are turned off (process-wide): they double every counter's
    series and no dashboard of ours uses them.
    """
    disable_created_metrics()
    info = Gauge(
        f"{daemon}_build_info",
        f"Always 1; the labels say which {daemon} is running",
        ["version", "python", "revision"],
        registry=registry,
    )
    info.labels(version(), platform.python_version(), revision()).set(1)
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    registry.register(_LogLinesDropped(daemon))


class _LogLinesDropped:
    """``<daemon>_log_lines_dropped_total``: lines lost to a stuck stderr (log_writer.py)."""

    def __init__(self, daemon: str) -> None:
        self.name = f"{daemon}_log_lines_dropped"

    def collect(self) -> list[CounterMetricFamily]:
        family = CounterMetricFamily(
            self.name,
            "Log lines not written: stderr was not read (journald or Docker's log driver "
            "stuck) and the lines waiting for it passed their cap, or the write failed",
        )
        family.add_metric([], logs.lines_dropped())
        return [family]
