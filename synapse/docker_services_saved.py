"""docker_services: the containers' services, saved beside the state file for the next start.

A synapse restarted while dockerd is down (live-restore: the containers keep running) knew
no container service until dockerd answered, so its first apply removed them from the
adopted HAProxy (404, then 503). With dockerd up the first apply still lacked them: one
reload without them and one with them, ~1 s of 404/503. From this file they are in the
config the reconciler starts with; the state file holds their servers, as for a service
from the config file. Docker's first answer replaces them (a service gone meanwhile is
removed then).

Saved: the blocks ``docker_services`` merges into the config (discovery: the engine, the
label selector, the container port; the routes): labels and the engine's address, no
credential. Written atomically (by rename, mode 0600) when the services change; a file
that cannot be read or parsed, or saved for another engine or label prefix or version,
is ignored (``docker_services_saved_ignored``).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from smartstack.logs import event
from synapse.atomic import write_atomic
from synapse.config import ServiceConfig, SynapseConfig
from synapse.daemon_parts import state_key
from synapse.edge_config import DockerServicesConfig

log = logging.getLogger("synapse.docker_services")

VERSION = 1
Blocks = dict[str, dict[str, Any]]  # service name -> its config document


def saved_path(config: SynapseConfig) -> Path | None:
    """Beside the state file (managed HAProxy: always one); None without a state file."""
    path = state_key(config)[0]
    if path is None:
        return None
    state = Path(path)
    return state.with_name(f"{state.stem}.docker-services.json")


class SavedBlocks:
    """The file at ``path`` (None: nothing saved, nothing restored)."""

    def __init__(self, path: Path | None, config: DockerServicesConfig) -> None:
        self.path = path
        self._key = {"version": VERSION, "engine": config.engine, "prefix": config.label_prefix}
        self._text: str | None = None  # what the file holds once the writes under way end
        self._error: str | None = None  # the last write's failure, logged once

    def load(self) -> dict[str, ServiceConfig]:
        """The services saved by the previous run (empty: none, or the file was ignored)."""
        if self.path is None or not self.path.exists():
            return {}
        try:
            text = self.path.read_text(encoding="utf-8")
            raw = json.loads(text)
            wrong = [
                f"{k} {raw.get(k)!r}, not {v!r}" for k, v in self._key.items() if raw.get(k) != v
            ]
            if wrong:
                return self._ignored(wrong[0])
            blocks = dict(raw["blocks"])
            services = {str(name): ServiceConfig.model_validate(b) for name, b in blocks.items()}
        except (OSError, AttributeError, KeyError, TypeError, ValueError, ValidationError) as exc:
            return self._ignored(f"malformed: {type(exc).__name__}: {exc}"[:300])
        self._text = text
        event(log, "docker_services_restored", path=str(self.path), services=sorted(services))
        return services

    def _ignored(self, reason: str) -> dict[str, ServiceConfig]:
        event(log, "docker_services_saved_ignored", level=logging.WARNING,
              path=str(self.path), reason=reason)  # fmt: skip
        return {}

    def text(self, blocks: Blocks) -> str | None:
        """What to write for ``blocks`` (then ``write`` it, in order); None when the file
        holds it already, or will once the writes under way end."""
        if self.path is None:
            return None
        text = json.dumps({**self._key, "blocks": blocks}, sort_keys=True) + "\n"
        if text == self._text:
            return None
        self._text = text
        return text

    def write(self, text: str) -> None:
        """Write ``text`` (from ``text()``; run in a thread: it fsyncs). A failure is logged
        once per distinct error, not raised: it only costs the next start its head start."""
        assert self.path is not None
        try:
            write_atomic(self.path, text, 0o600)
        except OSError as exc:
            error = f"{type(exc).__name__}: {exc}"[:300]
            if error != self._error:
                event(log, "docker_services_not_saved", level=logging.WARNING,
                      path=str(self.path), error=error)  # fmt: skip
            self._error, self._text = error, None  # the next answer tries again
            return
        self._error = None
