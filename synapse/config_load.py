"""How the synapse daemon gets its config: validated by a child, held as plain objects.

At start (``synapse -c FILE``, not ``-k``) a forked child validates the file with pydantic
before any thread exists (``synapse.config_child.fork_validate``); this process selects
the plain model base (``smartstack.modelbase``) and rebuilds the config from the child's
tagged tree, so it never imports pydantic (~9 MB of a sidecar's RSS, issue 15). A SIGHUP
runs ``python -m synapse.config_child`` (the daemon has threads by then: no fork) and
rebuilds again; a service whose part of the tree is unchanged comes back as the same
object (the reconciler skips it by identity, as with ``SectionCache``). Errors are the
child's ConfigError lines, word for word what ``synapse -k`` prints.

A config with ``docker_services`` enabled turns container labels into services at
runtime, which needs pydantic in the daemon: it is loaded again here, on pydantic, and
SIGHUP validates in-process as before.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from typing import TYPE_CHECKING, Any

from smartstack import modelbase
from smartstack.config_errors import ConfigError
from synapse.config_child import CHILD_TIMEOUT, child_command, fork_validate

if TYPE_CHECKING:
    from smartstack.config_sections import SectionCache
    from smartstack.model_tree import Rebuilder
    from synapse.config import SynapseConfig


def _lines(answer: dict[str, Any]) -> list[str]:
    """The error lines of a child's answer that is not ok."""
    if "lines" in answer:
        return list(answer["lines"])
    crash = str(answer.get("crash") or "no answer").strip().splitlines()
    return [f"validating the config failed: {crash[-1] if crash else 'no answer'}"]


class ConfigSource:
    """The daemon's config file: loaded at start and on every SIGHUP."""

    def __init__(self, path: str, zone: str | None = None, strict: bool = False) -> None:
        self.path, self.zone, self.strict = path, zone, strict
        self.plain = False  # the config is plain objects validated by a child
        self.cache: SectionCache | None = None  # pydantic in-process: per-service results
        self._rebuilder: Rebuilder | None = None
        self._services: dict[str, tuple[bytes, Any]] = {}  # name -> (digest of its tree, object)

    def first(self) -> tuple[SynapseConfig, list[str]]:
        """Validate in a forked child; ConfigError with its lines when the file is bad."""
        answer = fork_validate(self.path, self.zone, self.strict)
        if not answer.get("ok"):
            raise ConfigError(_lines(answer))
        if not answer["plain"]:
            return self._in_process()
        modelbase.select_plain()
        self.plain = True
        return self._rebuild(answer["tree"]), list(answer["warnings"])

    def _in_process(self) -> tuple[SynapseConfig, list[str]]:
        from synapse.config import load_synapse_config, service_cache

        self.cache = self.cache or service_cache()
        return load_synapse_config(self.path, self.zone, self.strict, self.cache)

    async def reload(self) -> tuple[SynapseConfig, list[str]]:
        """The file again (SIGHUP); ConfigError with the child's lines when it is bad."""
        if not self.plain:
            return self._in_process()
        command = child_command(self.path, self.zone, self.strict)
        proc = await asyncio.create_subprocess_exec(
            *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        try:
            out, err = await asyncio.wait_for(proc.communicate(), CHILD_TIMEOUT)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise ConfigError([f"validating the config took over {CHILD_TIMEOUT:.0f} s"]) from None
        try:
            answer = json.loads(out)
        except ValueError:
            answer = {"ok": False, "crash": err.decode(errors="replace")[-2000:] or "no answer"}
        if not answer.get("ok"):
            raise ConfigError(_lines(answer))
        if not answer["plain"]:
            raise ConfigError(["enabling docker_services needs a restart"])
        return self._rebuild(answer["tree"]), list(answer["warnings"])

    def _rebuild(self, tree: dict[str, Any]) -> SynapseConfig:
        from smartstack.model_tree import Rebuilder

        rebuilder = self._rebuilder = self._rebuilder or Rebuilder()
        services = tree["f"].get("services")
        if not isinstance(services, dict) or "__dict__" in services:
            return rebuilder.build(tree)  # (names JSON cannot key: nothing kept)
        kept: dict[str, tuple[bytes, Any]] = {}
        for name, part in services.items():
            digest = hashlib.blake2b(json.dumps(part).encode(), digest_size=16).digest()
            old = self._services.get(name)
            kept[name] = old if old and old[0] == digest else (digest, rebuilder.build(part))
        self._services = kept
        tree["f"]["services"] = {}
        config = rebuilder.build(tree)
        config.__dict__["services"] = {name: entry[1] for name, entry in kept.items()}
        return config
