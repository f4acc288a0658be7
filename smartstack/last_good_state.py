"""What a daemon runs on: its config file, or the last good copy of it (smartstack.last_good),
for its log, /status, /health and metric."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from smartstack.last_good import age_text, aged, promote
from smartstack.logs import event


class LastGood:
    """What the daemon runs on: the file, or its last good copy (/status, /health, metric)."""

    def __init__(self, path: str, enabled: bool, log: logging.Logger) -> None:
        self.path, self.enabled, self.log = path, enabled, log
        self.info: dict[str, Any] | None = None  # running on the copy: which, why
        # why the copy of the start's file was not written: said once the start's own checks
        # of this host passed (``running``), not before their error (a wrong state path)
        self.unsaved: dict[str, str] | None = None
        self.started = False
        # the last load's copy, kept once HAProxy runs its config (``accepted``), or None
        self.pending: str | None = None

    def taken(self, answer: dict[str, Any]) -> None:
        """A validated answer (start or SIGHUP): the copy in use said so, or the file's
        copy kept (or why not)."""
        info = answer.get("last_good")
        if info is not None:
            self.info, self.pending = info, None
            now, written = time.time(), info["written_at"]
            why = info.get("why", "the config file is invalid")
            event(self.log, "config_last_good_used", level=logging.ERROR, file=self.path,
                  errors=" | ".join(info["errors"]), copy=info["copy"], since=info["since"],
                  **aged(written, now), detail=f"{why}: running the last good config "
                  f"{age_text(written, now)}; fix the file and reload")  # fmt: skip
            return
        if self.info is not None:
            event(self.log, "config_last_good_left", file=self.path, since=self.info["since"])
            self.info = None
        self.unsaved, self.pending = answer.get("unsaved"), answer.get("pending")
        if self.started:
            self.running()

    def status(self) -> dict[str, Any] | None:
        """/status: the copy in use (``info``) and its age now (``aged``), or None."""
        info = self.info
        return None if info is None else {**info, **aged(info["written_at"], time.time())}

    def running(self) -> None:
        """The daemon runs (its start's checks passed): a copy not written is said now."""
        self.started = True
        if self.unsaved:  # (a start or reload goes on: only the fallback is lost)
            event(self.log, "config_last_good_unsaved", level=logging.WARNING, file=self.path,
                  **self.unsaved)  # fmt: skip
            self.unsaved = None

    def accepted(self, pending: str | None) -> None:
        """HAProxy runs the config of the load that wrote ``pending``: it is the copy now."""
        if pending is None:
            return
        if pending == self.pending:
            self.pending = None
        try:
            promote(Path(pending))
        except FileNotFoundError:  # (a newer load's pending copy swept it: that one waits)
            return
        except OSError as exc:
            event(self.log, "config_last_good_unsaved", level=logging.WARNING, file=self.path,
                  directory=str(Path(pending).parent), error=exc.strerror or str(exc))  # fmt: skip
