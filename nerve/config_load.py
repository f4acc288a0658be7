"""How the nerve daemon gets its config: validated by a child, held as plain objects.

nerve runs on every host; pydantic and its schemas cost it ~9 MB of RSS to validate a
file it reads once. So, as synapse does (``synapse.config_load``): at start (``nerve -c
FILE``, not ``-k``) a forked child validates the file before any thread exists while this
process selects the plain model base (``smartstack.modelbase``) and imports the daemon's
modules; the child's config is unpickled into plain instances of the same classes. A SIGHUP
runs ``python -m nerve.config_child``. Errors are the child's ConfigError lines, word for
word what ``nerve -k`` prints.

Docker mode (``docker``) validates each container's labels as a service at runtime, which
needs pydantic in the daemon: the process starts itself again (exec, with
``NERVE_CONFIG_IN_PROCESS=1``), validates in-process and SIGHUP does too.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
from typing import TYPE_CHECKING, Any

from nerve.config_child import ForkedValidation, child_command, validate_file
from smartstack import modelbase
from smartstack.config_child import answer_lines, child_answer
from smartstack.config_errors import ConfigError
from smartstack.early_signals import ignore_sighup_across_exec
from smartstack.last_good_state import LastGood

if TYPE_CHECKING:
    from nerve.config import NerveConfig

# Set (to "1") when the config needs pydantic in the daemon (Docker mode).
IN_PROCESS_ENV = "NERVE_CONFIG_IN_PROCESS"
# What the daemon imports next anyway, imported while the child validates.
WARM_IMPORTS = ("nerve.config", "nerve.preflight", "nerve.daemon", "nerve.main")


class ConfigSource:
    """The daemon's config file: loaded at start and on every SIGHUP; at a start, its last
    good copy when it is invalid (``last_good``: nerve.last_good)."""

    def __init__(
        self, path: str, instance_id: str | None = None, strict: bool = False,
        last_good: bool = True,
    ) -> None:  # fmt: skip
        self.path, self.instance_id, self.strict = path, instance_id, strict
        self.plain = False  # the config is plain objects validated by a child
        self.last_good = LastGood(path, last_good, logging.getLogger("nerve"))

    def first(self) -> tuple[NerveConfig, list[str]]:
        """Validate in a forked child; ConfigError with its lines when the file is bad."""
        fallback = self.last_good.enabled
        if os.environ.get(IN_PROCESS_ENV) == "1":
            return self._taken(validate_file(self.path, self.instance_id, self.strict, fallback))
        child = ForkedValidation(self.path, self.instance_id, self.strict, fallback)
        modelbase.select_plain()
        self.plain = True
        for module in WARM_IMPORTS:
            importlib.import_module(module)
        answer = child.answer()
        if answer.get("ok") and not answer["plain"]:  # Docker mode: pydantic in the daemon,
            os.environ[IN_PROCESS_ENV] = "1"  # from a fresh start
            ignore_sighup_across_exec()
            os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])
        return self._taken(answer)

    def _taken(self, answer: dict[str, Any]) -> tuple[NerveConfig, list[str]]:
        if not answer.get("ok"):
            raise ConfigError(answer_lines(answer))
        self.last_good.taken(answer)
        return answer["config"], list(answer["warnings"])

    async def reload(self) -> tuple[NerveConfig, list[str]]:
        """The file again (SIGHUP); ConfigError with the child's lines when it is bad. (A
        ``docker`` block turned on waits for a restart, on either base: the daemon says so.)"""
        if not self.plain:
            return self._taken(validate_file(self.path, self.instance_id, self.strict))
        answer = await child_answer(
            lambda fd: child_command(self.path, self.instance_id, self.strict, fd), b"", "nerve"
        )
        return self._taken(answer)
