"""Whether synapse's exit stops its managed HAProxy (``managed.stop_on_exit``).

Left serving, a restart of synapse never touches traffic: the next synapse adopts HAProxy.
That only helps where HAProxy can outlive synapse. In a container whose main process is
synapse it cannot: ``docker stop`` (or a pod's end) ends synapse, its container's PID 1
exits with it and the kernel kills every process left in the PID namespace: HAProxy, with
every connection in flight cut at once. There a soft stop of HAProxy (managed.py) is the
only clean end, so ``auto`` (the default) stops it when synapse is such a main process:

- synapse is PID 1 of its PID namespace (``docker run --entrypoint synapse``);
- or its parent is, and is a one-child init (tini, as in our image; docker-init of
  ``--init``, dumb-init, catatonit): these exit when their child does.

``getppid() == 1`` alone would be wrong: a host's systemd is PID 1 and a synapse it starts
has ppid 1, but its HAProxy outlives it (KillMode=process, docs/deploy.md); so does one
under a supervisor that restarts synapse inside a container (s6, supervisord, systemd). A
parent outside the PID namespace (``getppid() == 0`` but not PID 1) says nothing either:
``docker exec`` starts processes so, beside a PID 1 that lives on. Where the rule cannot
see the end coming (a pod sharing its PID namespace, ``docker run --pid=host``, a shell
script as PID 1), set ``stop_on_exit: true``.

Except a master that lives in another container (HAProxy in its own container, synapse in
its PID namespace: docs/docker.md): it outlives synapse whatever synapse's place, and stopping
it would refuse what a synapse restart need not. It is seen so: it is PID 1 of the PID
namespace (the HAProxy container's main process), or its cgroup (/proc/<pid>/cgroup: a
container's own) is not synapse's. ``managed.launch: false`` (HAProxy runs elsewhere) never
stops it, whatever ``stop_on_exit`` says.
"""

from __future__ import annotations

import os
from pathlib import Path

from synapse.config import ManagedHAProxy as ManagedConfig

# /proc/<pid>/comm of the inits that exit when their one child does (15 bytes at most)
ONE_CHILD_INITS = frozenset({"tini", "tini-static", "docker-init", "dumb-init", "catatonit"})


def stop_reason(config: ManagedConfig | None, master: int | None = None) -> str | None:
    """Why synapse's exit stops HAProxy (its ``master`` pid, when one runs); None: it is
    left serving for the next synapse."""
    if config is None or config.stop_on_exit is False or not config.launch:
        return None
    if config.stop_on_exit is True:
        return "managed.stop_on_exit is true"
    if master is not None and elsewhere(master, cgroup("self"), cgroup(str(master))):
        return None
    ppid = os.getppid()
    return container_main(os.getpid(), ppid, init_name() if ppid == 1 else None)


def elsewhere(master: int, ours: str | None, its: str | None) -> bool:
    """Whether HAProxy's ``master`` lives in another container than synapse (so outlives
    it), from its pid and the two cgroups (/proc/<pid>/cgroup; None: /proc does not say)."""
    if master == 1:  # the main process of the PID namespace synapse joined: not synapse's
        return True
    return ours is not None and its is not None and ours != its


def cgroup(pid: str) -> str | None:
    """/proc/<pid>/cgroup (``self``: synapse's); None when it cannot be read."""
    try:
        return Path(f"/proc/{pid}/cgroup").read_text()
    except OSError:
        return None


def container_main(pid: int, ppid: int, init: str | None) -> str | None:
    """Why synapse is its container's main process (None: it is not, as far as can be told),
    from its pid, its parent's and the name (comm) of PID 1 when that is its parent."""
    if pid == 1:
        return "synapse is PID 1 of its PID namespace: HAProxy dies with it"
    if ppid == 1 and init in ONE_CHILD_INITS:
        return f"synapse is the child of {init}, PID 1 of its PID namespace: HAProxy dies with it"
    return None


def init_name() -> str | None:
    """The name (comm) of PID 1 of synapse's PID namespace; None when /proc does not say."""
    try:
        return Path("/proc/1/comm").read_text().rstrip("\n")
    except OSError:
        return None
