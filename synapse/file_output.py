"""Airbnb's ``file_output``: one JSON file per service with its current servers.

``<output_directory>/<service>.json`` holds a list of backend records
(``{"host", "port", "name", ...}``, as Airbnb synapse writes them) for tools that
do not speak HAProxy. Files are replaced atomically and only when their content
changes; files of services that are no longer configured (or have
``file_output.disabled``) are removed. A file that cannot be written or removed (a full
or read-only disk) is reported (``file_output_failed``) and tried again later; it never
stops synapse.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from pathlib import Path

from smartstack.logs import event
from synapse.atomic import read_text, write_atomic
from synapse.selection import Selection

log = logging.getLogger("synapse.file_output")

SUFFIX = ".json"


def render(selection: Selection) -> str:
    """A service file's content: records sorted for stable output."""
    records = sorted(selection.records, key=lambda r: (str(r["host"]), r["port"], str(r["name"])))
    return json.dumps(records, indent=2, sort_keys=True) + "\n"


class FileOutput:
    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self._written: dict[str, str] = {}  # service -> content known to be on disk
        self._cleaned_for: set[str] | None = None  # service set of the last whole sweep
        self._unremoved: set[str] = set()  # stale files whose removal failed (logged once)
        self.last_error: str | None = None

    def path_for(self, service: str) -> Path:
        return self.directory / f"{service}{SUFFIX}"

    def update(self, selections: Mapping[str, Selection], enabled: Iterable[str]) -> list[str]:
        """Write the changed files of ``enabled`` services; remove the others' files.

        Returns the services whose file was written.
        """
        wanted = set(enabled)
        written = []
        for service in sorted(wanted & selections.keys()):
            content = render(selections[service])
            if self._written.get(service) == content:
                continue
            path = self.path_for(service)
            if read_text(path) != content:  # a restart must not rewrite identical files
                try:
                    write_atomic(path, content)
                except OSError as exc:
                    self._fail(service, str(exc))
                    continue
                written.append(service)
            self._written[service] = content
        if wanted != self._cleaned_for:  # first run or the configured services changed
            # (a removal that failed: not marked clean, the next update sweeps again)
            self._cleaned_for = wanted if self.remove_stale(wanted) else None
        return written

    def remove_stale(self, wanted: set[str]) -> bool:
        """Delete ``<name>.json`` files in the directory that belong to no enabled service;
        False when one could not be deleted (or the directory not listed)."""
        try:
            files = list(self.directory.glob(f"*{SUFFIX}"))
        except OSError:
            return False
        failing: set[str] = set()
        for path in files:
            service = path.name[: -len(SUFFIX)]
            if service in wanted:
                continue
            self._written.pop(service, None)
            try:
                path.unlink()
            except FileNotFoundError:
                continue
            except OSError as exc:  # (read-only disk: retried at each sweep, said once)
                failing.add(service)
                if service not in self._unremoved:
                    self._fail(service, f"cannot remove {path}: {exc.strerror or exc}")
                continue
            event(log, "file_output_removed", path=str(path))
        self._unremoved = failing
        return not failing

    def _fail(self, service: str, reason: str) -> None:
        self.last_error = f"{service}: {reason}"
        event(log, "file_output_failed", level=logging.WARNING, service=service, reason=reason)
