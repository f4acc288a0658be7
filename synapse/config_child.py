"""Validating synapse's config in a short-lived process, for a daemon on plain models.

The daemon (``synapse.config_load``) has a child validate (``smartstack.config_child``: why,
and how the answer travels). The child loads the file exactly as ``synapse -k`` does (same
errors: file, key, expectation, "did you mean"); ``-P``: this checkout's code, not a
synapse/ in the daemon's current directory. Its answer when the file is valid:
``{"ok": True, "config": SynapseConfig, "warnings": [...], "plain": bool, "routed": bool}``;
``plain`` is false when the daemon must validate at runtime itself (``docker_services``:
container labels become services), so it stays on pydantic; ``routed``: some service has
``haproxy.routes`` (an edge, whose SIGHUP is its route change: the daemon validates
in-process then, docs/edge.md).

``--service``: validate service blocks (a pickled list on stdin: a registry's generator
settings merged under services, ``synapse.generator_checks``): ``{"ok": True, "answers":
[ServiceConfig, or pydantic's message, ...]}``. Pickled both ways: the blocks may hold what
YAML makes and JSON cannot carry (dates, sets, binary values).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pickle
import subprocess
import sys
import threading
from subprocess import DEVNULL, PIPE
from typing import Any

from smartstack import config_child
from smartstack.config_child import (
    CHILD_TIMEOUT,
    NO_PLUGINS,
    PROTOCOL,
    pickled,
    write_answer,
)

__all__ = ["CHILD_TIMEOUT", "ForkedValidation", "child_command", "unpickled"]


def validate_file(
    path: str,
    zone: str | None,
    strict: bool,
    known: dict[str, str] | None = None,
    fallback: bool = False,
    refused: list[str] | None = None,
) -> dict[str, Any]:
    """The answer for the config file at ``path`` (see the module docstring). With
    ``known`` (the daemon's: {} at start, then the digests of its services,
    ``SectionCache.digests``) each service's digest is in the answer, and a service whose
    digest is the same is sent as None (the daemon keeps its object: a SIGHUP unpickles what
    changed, not 1,000 services). Without it the file is validated whole, ~30-50 ms less at
    1,000 services, but with no digests: a start without them had its first SIGHUP send
    every service back whole, compared on the event loop (2,000: blocked 1.3-2.4 s).
    ``fallback`` (a start): the last good copy when the file is refused (synapse.last_good:
    ``last_good``, ``unsaved`` and ``pending`` in the answer); ``refused``: HAProxy refused
    the file's config at a start, the copy's config instead (``synapse.last_good_run``)."""
    from smartstack.configfile import ConfigError
    from synapse.config import service_cache
    from synapse.last_good import load_or_copy

    cache = service_cache() if known is not None else None
    try:
        config, warnings, copy = load_or_copy(path, zone, strict, cache, fallback, refused)
    except ConfigError as exc:
        return {"ok": False, "lines": exc.lines}
    docker = config.docker_services
    plain = not (docker is not None and docker.enabled)
    routed = any(
        service.haproxy.routes.hosts or service.haproxy.routes.paths
        for service in config.services.values()
    )
    digests = cache.digests() if cache is not None else {}
    if known:
        same = {name for name, digest in digests.items() if known.get(name) == digest}
        services = {n: None if n in same else s for n, s in config.services.items()}
        config = config.model_copy(update={"services": services})
    answer = {"ok": True, "config": config, "warnings": warnings, "plain": plain,
              "routed": routed}  # fmt: skip
    return answer | {"digests": digests} | copy


def validate_services(docs: list[Any]) -> dict[str, Any]:
    from pydantic import ValidationError

    from synapse.config import ServiceConfig

    answers: list[Any] = []
    for doc in docs:
        try:
            answers.append(ServiceConfig.model_validate(doc))
        except ValidationError as exc:
            answers.append(str(exc))
    return {"ok": True, "answers": answers}


def unpickled(out: bytes, err: bytes, code: int | None = 0) -> dict[str, Any]:
    return config_child.unpickled(out, err, code, "synapse")


class ForkedValidation(config_child.ForkedValidation):
    """The config file at ``path`` validated in a forked child (before any thread exists)."""

    daemon = "synapse"

    def __init__(self, path: str, zone: str | None, strict: bool, fallback: bool = False) -> None:
        # {}: digests from the first load, so the first SIGHUP sends only what changed.
        super().__init__(
            lambda: validate_file(path, zone, strict, {}, fallback),
            lambda fd: child_command(path, zone, strict, fd) + ["--fallback"] * fallback,
        )


def child_command(
    path: str, zone: str | None, strict: bool, answer_fd: int, refused: list[str] | None = None
) -> list[str]:
    """The command of a validating child for ``path`` (SIGHUP), answering on ``answer_fd``;
    ``refused``: the last good copy's config instead (``validate_file``)."""
    command = [*CHILD_PYTHON, path, "--answer-fd", str(answer_fd)]
    command += ["--refused", json.dumps(refused)] if refused else []
    return command + (["--zone", zone] if zone else []) + (["--strict"] if strict else [])


# -P: not the current directory first on sys.path (a synapse/ checkout there would run
# instead of this one; Python >= 3.11, as pyproject requires). The answer comes on a pipe
# of its own (--answer-fd), so that nothing printed on stdout can corrupt it.
CHILD_PYTHON = (sys.executable, "-P", "-m", "synapse.config_child")


class CheckFailed(Exception):
    """A service check's child gave no answer (crash, timeout, no process): try again later;
    this says nothing about the service blocks."""


def service_command(answer_fd: int) -> list[str]:
    return [*CHILD_PYTHON, "--service", "--answer-fd", str(answer_fd)]


def service_answers(out: bytes, err: bytes, count: int, code: int | None = 0) -> list[Any]:
    """The per-block answers in a ``--service`` child's answer: a plain ServiceConfig, or
    pydantic's message (str) for an invalid block. CheckFailed when the child failed."""
    answer = unpickled(out, err, code)
    if not answer.get("ok"):
        why = answer.get("crash") or "; ".join(answer.get("lines", ())) or "failed"
        raise CheckFailed(str(why)[-500:])
    if len(answer["answers"]) != count:
        raise CheckFailed(f"{len(answer['answers'])} answers for {count} blocks")
    return answer["answers"]


def services_from_child(docs: list[dict[str, Any]]) -> list[Any]:
    """Service blocks validated by one child, waited for here (no event loop: a tool)."""
    read_end, write_end = os.pipe()
    chunks: list[bytes] = []
    reader = threading.Thread(target=lambda: chunks.append(_read_all(read_end)), daemon=True)
    try:
        try:
            child = subprocess.Popen(
                service_command(write_end), stdin=PIPE, stdout=DEVNULL, stderr=PIPE,
                pass_fds=(write_end,),
            )  # fmt: skip
        except BaseException:
            os.close(read_end)
            raise
        finally:
            os.close(write_end)  # the child's copy stays open: EOF when it ends
        reader.start()
        try:  # pickled: a YAML date, set or binary value reaches the child as it is
            _, err = child.communicate(pickle.dumps(docs, PROTOCOL), timeout=CHILD_TIMEOUT)
        finally:
            if child.returncode is None:
                child.kill()
                child.communicate()
            reader.join()
    except (OSError, subprocess.SubprocessError) as exc:
        raise CheckFailed(f"{type(exc).__name__}: {exc}") from exc
    return service_answers(b"".join(chunks), err, len(docs), child.returncode)


async def services_in_child(docs: list[dict[str, Any]]) -> list[Any]:
    """Service blocks validated by one child while the event loop runs on."""
    import asyncio  # (here: the start forks its child before asyncio is imported)

    read_end, write_end = os.pipe()
    try:
        try:
            child = await asyncio.create_subprocess_exec(
                *service_command(write_end), stdin=PIPE, stdout=DEVNULL, stderr=PIPE,
                pass_fds=(write_end,),
            )  # fmt: skip
        finally:
            os.close(write_end)
    except OSError as exc:  # EAGAIN, ENOMEM: the next try may work
        os.close(read_end)
        raise CheckFailed(f"{type(exc).__name__}: {exc}") from exc
    reading = asyncio.get_running_loop().run_in_executor(None, _read_all, read_end)
    try:
        talk = child.communicate(pickle.dumps(docs, PROTOCOL))
        _, err = await asyncio.wait_for(talk, CHILD_TIMEOUT)
    except TimeoutError as exc:
        raise CheckFailed(f"no answer within {CHILD_TIMEOUT:.0f} s") from exc
    finally:
        if child.returncode is None:  # timed out or cancelled (the daemon stops)
            with contextlib.suppress(ProcessLookupError):
                child.kill()
            await child.wait()  # reaped, its pipes closed while the loop runs
    out = await reading  # EOF: the child has ended
    return service_answers(out, err, len(docs), child.returncode)


def _read_all(fd: int) -> bytes:
    with os.fdopen(fd, "rb") as pipe:
        return pipe.read()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m synapse.config_child")
    parser.add_argument("path", nargs="?")
    parser.add_argument("--zone")
    parser.add_argument("--strict", action="store_true")
    parser.add_argument("--service", action="store_true", help="service blocks on stdin")
    parser.add_argument("--answer-fd", type=int, help="the pipe to answer on (else stdout)")
    parser.add_argument("--refused", type=json.loads, help="HAProxy's refusal (JSON lines)")
    parser.add_argument("--fallback", action="store_true", help="a start: the last good copy")
    args = parser.parse_args(argv)
    os.environ[NO_PLUGINS] = "1"
    if args.service:
        doc = pickle.loads(sys.stdin.buffer.read())  # from the daemon, our parent
        answer = pickled(lambda: validate_services(doc))
    else:  # stdin: the daemon's digests of its services (may be empty)
        known = json.loads(sys.stdin.buffer.read() or b"{}")
        answer = pickled(lambda: validate_file(args.path, args.zone, args.strict, known,
                                               args.fallback, args.refused))  # fmt: skip
    write_answer(answer, args.answer_fd)
    return 0


if __name__ == "__main__":
    sys.exit(main())
