"""How the synapse daemon gets its config: validated by a child, held as plain objects.

At start (``synapse -c FILE``, not ``-k``) a forked child validates the file with pydantic
before any thread exists (``synapse.config_child.ForkedValidation``) while this process
selects the plain model base (``smartstack.modelbase``) and imports its own modules; the
child's config is unpickled into plain instances of the same classes, so this process
never imports pydantic (~9 MB of a sidecar's RSS, issue 15). A SIGHUP runs
``python -m synapse.config_child`` (the daemon has threads by then: no fork); a service
equal to the running one is kept as the same object (the reconciler skips it by
identity, as with ``SectionCache``). Errors are the child's ConfigError lines, word for
word what ``synapse -k`` prints.

A config with ``docker_services`` enabled turns container labels into services at
runtime, which needs pydantic in the daemon: the process starts itself again (exec, with
``SYNAPSE_CONFIG_IN_PROCESS=1``), validates in-process and SIGHUP does too, as before. So
does an edge (a service with ``haproxy.routes``): its SIGHUP is its route change, and a
new child (a Python start, pydantic's import, the whole file) took ~230 ms where the
in-process re-read of what changed takes ~10 ms (docs/edge.md, the edge benchmark); the
~9 MB that pydantic costs matter on a sidecar on every host, not on an edge. A daemon that
gains routes by a SIGHUP keeps its children until its next start.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import sys
from typing import TYPE_CHECKING, Any

from smartstack import modelbase
from smartstack.config_child import answer_lines, child_answer
from smartstack.config_errors import ConfigError
from smartstack.early_signals import ignore_sighup_across_exec
from smartstack.last_good_state import LastGood
from smartstack.modelbase import same_model
from synapse.config_child import ForkedValidation, child_command
from synapse.warm_imports import warm

# Set (to "1") when the config needs pydantic in the daemon: the process is started again
# with it and validates in-process, as ``synapse -k`` does.
IN_PROCESS_ENV = "SYNAPSE_CONFIG_IN_PROCESS"
# What both need and does not depend on the model base: imported before the fork, so the
# child (on the start's critical path) has them already.
SHARED_IMPORTS = (
    "smartstack.configfile", "smartstack.config_sections", "smartstack.config_share",
    "synapse.config_legacy", "synapse.port_clash", "synapse.haproxy.routes",
)  # fmt: skip
# What the daemon imports next anyway, imported while the child validates (and
# ``synapse.warm_imports``: what this config's daemon imports after it, guessed).
WARM_IMPORTS = ("synapse.config", "synapse.preflight", "synapse.daemon")

if TYPE_CHECKING:
    from smartstack.config_sections import SectionCache
    from synapse.config import SynapseConfig


def _docker_on(config: SynapseConfig) -> bool:
    docker = config.docker_services
    return docker is not None and docker.enabled


class ConfigSource:
    """The daemon's config file: loaded at start and on every SIGHUP; at a start, its last
    good copy when it is invalid (``last_good``: synapse.last_good)."""

    def __init__(
        self, path: str, zone: str | None = None, strict: bool = False, last_good: bool = True
    ) -> None:
        self.path, self.zone, self.strict = path, zone, strict
        # at a start, the last good copy when the file is invalid (synapse.last_good)
        self.last_good = LastGood(path, last_good, logging.getLogger("synapse.daemon"))
        self.plain = False  # the config is plain objects validated by a child
        self.cache: SectionCache | None = None  # pydantic in-process: per-service results
        self._services: dict[str, Any] = {}  # the services of the last load
        self._digests: dict[str, str] = {}  # and their digests (SectionCache.digests)
        self.docker_at_start = False  # docker_services on in the first config: its source runs

    def first(self) -> tuple[SynapseConfig, list[str]]:
        """Validate in a forked child; ConfigError with its lines when the file is bad.
        Meanwhile this process imports the daemon's modules on the plain base (2 cores: the
        two run side by side, so the start is no slower than validating here)."""
        if os.environ.get(IN_PROCESS_ENV) == "1":
            config, warnings, copy = self._in_process(self.last_good.enabled)
            self.last_good.taken(copy)
            self.docker_at_start = _docker_on(config)
            return config, warnings
        for module in SHARED_IMPORTS:
            importlib.import_module(module)
        child = ForkedValidation(self.path, self.zone, self.strict, self.last_good.enabled)
        modelbase.select_plain()
        self.plain = True
        for module in WARM_IMPORTS:
            importlib.import_module(module)
        warm(self.path, child.ready)  # what it imports after the config, while the child works
        answer = child.answer()
        if not answer.get("ok"):
            raise ConfigError(answer_lines(answer))
        if not answer["plain"] or answer.get("routed"):  # docker_services; an edge
            os.environ[IN_PROCESS_ENV] = "1"
            ignore_sighup_across_exec()
            os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])
        self.last_good.taken(answer)
        return self._kept(answer), list(answer["warnings"])

    def _in_process(
        self, fallback: bool = False, refused: list[str] | None = None, write: bool = True
    ) -> tuple[SynapseConfig, list[str], dict[str, Any]]:
        from synapse.config import service_cache
        from synapse.last_good import load_or_copy

        self.cache = self.cache or service_cache()
        return load_or_copy(self.path, self.zone, self.strict, self.cache, fallback, refused,
                            write)  # fmt: skip

    async def reload(self, refused: list[str] | None = None) -> tuple[SynapseConfig, list[str]]:
        """The file again (SIGHUP); ConfigError with the child's lines when it is bad.
        ``refused``: HAProxy refused the start's config, the last good copy's instead."""
        if not self.plain:
            return await self._reload_in_process(refused)
        known = json.dumps(self._digests).encode()
        answer = await child_answer(
            lambda fd: child_command(self.path, self.zone, self.strict, fd, refused),
            known,
            "synapse",
        )
        if not answer.get("ok"):
            raise ConfigError(answer_lines(answer))
        if not answer["plain"]:
            raise ConfigError(["enabling docker_services needs a restart"])
        self.last_good.taken(answer)
        return self._kept(answer), list(answer["warnings"])

    async def _reload_in_process(
        self, refused: list[str] | None
    ) -> tuple[SynapseConfig, list[str]]:
        """A SIGHUP validated here (an edge, docker_services): the Docker source starts only
        with the daemon, so turning docker_services on is refused as on the child path.
        The copy is written in a thread: on the loop it took ~8-20 ms of each SIGHUP at
        1,000 routed services (review s39). Newest wins: the daemon's reload lock is held
        from the load to here, so the next SIGHUP's copy is written after this one."""
        import asyncio  # (here: a start forks its child before asyncio is loaded)

        config, warnings, copy = self._in_process(refused=refused, write=False)
        if _docker_on(config) and not self.docker_at_start:
            raise ConfigError(["enabling docker_services needs a restart"])
        kept = copy.pop("keep", None)
        if kept is not None:  # (cancelled at stop: the thread ends its write, whole or none)
            copy.update(await asyncio.to_thread(kept))
        self.last_good.taken(copy)
        return config, warnings

    def _kept(self, answer: dict[str, Any]) -> SynapseConfig:
        """The child's config with each service it left out (None: same digest) or that is
        equal to the one the last load gave replaced by that object (the reconciler and the
        HAProxy side skip it by identity)."""
        config = answer["config"]
        old, new = self._services, config.services
        for name, service in new.items():
            kept = old.get(name)
            if service is None and kept is None:  # (cannot be: only names we sent)
                raise ConfigError([f"validating the config failed: {name} came back empty"])
            if kept is not None and (service is None or same_model(kept, service)):
                new[name] = kept
        self._services, self._digests = new, dict(answer.get("digests") or {})
        return config
