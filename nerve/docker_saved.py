"""Docker mode: the containers nerve last registered, saved in ``state_dir`` for its next start.

A nerve restarted while dockerd is down (live-restore: the containers keep running) knows no
container until dockerd answers, so it had no Service for them: its previous run's
registrations (ephemeral znodes, leased etcd keys) expired and healthy containers were
withdrawn for the whole outage. From this file the DockerSource builds their Services at once;
their own checks (they probe the containers' addresses, not dockerd) and the reporters'
leftover holding decide, and the watch's first full listing reconciles them as usual.

Saved: each serving container's inspect state as read (id, name, StartedAt, labels, addresses,
ports), not the services made of it: the current config applies, and no credential of
``service_defaults`` reaches the disk. Written (atomically, by rename) whenever it changes; a
file that cannot be read or parsed, or of another version or engine, is ignored (logged).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from smartstack.docker_events import ContainerInfo, PortBinding
from smartstack.logs import event

log = logging.getLogger("nerve.docker")

FILE = "docker-containers.state"  # (not *.json: those are the maintenance flags)
VERSION = 1


def to_json(info: ContainerInfo) -> dict[str, Any]:
    ports = {
        key: [[b.host_ip, b.host_port] for b in bindings] for key, bindings in info.ports.items()
    }
    return {"id": info.id, "name": info.name, "image": info.image, "labels": info.labels,
            "health": info.health, "started_at": info.started_at, "networks": info.networks,
            "ports": ports, "stop_signal": info.stop_signal,
            "stop_timeout": info.stop_timeout}  # fmt: skip


def from_json(raw: dict[str, Any]) -> ContainerInfo:
    """A saved (serving, so running) container; KeyError/TypeError/ValueError when malformed."""
    ports = {str(key): tuple(PortBinding(str(ip), int(port)) for ip, port in bindings)
             for key, bindings in dict(raw["ports"]).items()}  # fmt: skip
    health = raw["health"]
    if health not in (None, "healthy"):
        raise ValueError(f"health {health!r}: not serving")
    return ContainerInfo(
        id=str(raw["id"]),
        name=str(raw["name"]),
        image=str(raw["image"]),
        labels={str(k): str(v) for k, v in dict(raw["labels"]).items()},
        running=True,
        health=health,
        started_at=str(raw["started_at"]),
        networks={str(k): str(v) for k, v in dict(raw["networks"]).items()},
        ports=ports,
        stop_signal=_int_or_none(raw.get("stop_signal")),
        stop_timeout=_int_or_none(raw.get("stop_timeout")),
    )


def _int_or_none(value: Any) -> int | None:
    return None if value is None else int(value)


class SavedContainers:
    """The file in ``directory`` (None: nothing saved, nothing restored)."""

    def __init__(self, directory: Path | None, engine: str) -> None:
        self.path = directory / FILE if directory is not None else None
        self.engine = engine
        self._text: str | None = None  # what the file holds (as far as we know)
        self._error: str | None = None  # the last write's failure, logged once

    def load(self) -> dict[str, ContainerInfo]:
        """The containers saved by a previous run for this engine (empty: none, or ignored)."""
        if self.path is None:
            return {}
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        except OSError as exc:
            return self._ignored(f"{type(exc).__name__}: {exc}")
        try:
            raw = json.loads(text)
            if raw.get("version") != VERSION:
                return self._ignored(f"version {raw.get('version')!r}, not {VERSION}")
            if raw.get("engine") != self.engine:
                return self._ignored(f"saved for engine {raw.get('engine')!r}")
            containers = [from_json(c) for c in raw["containers"]]
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            return self._ignored(f"malformed: {type(exc).__name__}: {exc}"[:300])
        self._text = text
        return {info.id: info for info in containers}

    def _ignored(self, reason: str) -> dict[str, ContainerInfo]:
        event(log, "docker_state_ignored", level=logging.WARNING, path=str(self.path),
              reason=reason)  # fmt: skip
        return {}

    def save(self, containers: Iterable[ContainerInfo]) -> None:
        """Write the serving containers if they changed (a failure is logged, not raised:
        it only costs the next start's head start)."""
        if self.path is None:
            return
        saved = [to_json(info) for info in sorted(containers, key=lambda c: c.id)]
        text = json.dumps({"version": VERSION, "engine": self.engine, "containers": saved},
                          sort_keys=True) + "\n"  # fmt: skip
        if text == self._text:
            return
        tmp = self.path.with_name(FILE + ".tmp")
        try:
            if not saved:  # nothing to restore: no file (state_dir keeps only what matters)
                self.path.unlink(missing_ok=True)
                self._text, self._error = text, None
                return
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # labels: not public
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                out.write(text)
            tmp.replace(self.path)  # atomic: a crash never leaves half a file
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            error = f"{type(exc).__name__}: {exc}"[:300]
            if error != self._error:
                event(log, "docker_state_not_saved", level=logging.WARNING,
                      path=str(self.path), error=error)  # fmt: skip
            self._error = error
            return
        self._text, self._error = text, None
