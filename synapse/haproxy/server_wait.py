"""Requests wait (bounded) for a usable server instead of a 503 at once: ``wait_for_server_ms``.

A backend can be left with no server HAProxy would pick while synapse is about to give it
one: a zone-routed service whose local zone sits at weight 0 (evacuated, below
``min_local``) when the spill zones, its backups, die. HAProxy never picks a weight-0
server, so every request was a 503 until synapse's next look and apply (~0.1 s; review
s40: 64-382 of ~4,000 failed). HAProxy 2.6 has no setting that waits for a server, so a
Lua action does (HAProxy 2.6 built with Lua): as the backend's first rule (``http-request``;
``tcp-request content`` in TCP mode, with an inspect delay so it may yield) it polls
``nbsrv`` (usable servers: UP, weight above 0) every 10 ms with ``core.msleep`` (yields: the
thread serves the others meanwhile), for at most the given milliseconds, then lets the
request go on: to a server, or to HAProxy's 503 as before. An empty backend waits too: the
Lua cannot tell it (``core.backends[...].servers`` is 2.6's snapshot of the servers at
start: it lacks the ``add server`` ones and keeps the ``del server`` ones, whose freed
memory a read crashed the worker, SIGFPE/SIGSEGV, review s40 cr-hold).

synapse writes the Lua file itself, beside the HAProxy config (``<stem>-synapse-wait.lua``,
atomic, only when it differs), and loads it with a ``lua-load-per-thread`` line in
``global`` (a state per thread: no lock shared by the threads). When the file cannot be
written, or the managed binary cannot load it (built without Lua, or older than 2.4: no
``lua-load-per-thread``; ``haproxy -vv``, read with its version), the lines are left out (events
``haproxy_wait_lua_unwritten``, ``haproxy_wait_no_lua``): nothing waits, the config still loads.

A service HAProxy checks waits by default too (managed mode): when its checks mark every
server DOWN by a timeout (overload), the panic (synapse.haproxy.panic) puts them back, 1-2 ms
after HAProxy's alert, up to 2 s for an adopted HAProxy (the backstop poll); a request in
between was a 503 (review s43: 12-16 of ~12,000 requests over 3 panics, adopted ~6,000 of
~17,000 over 2), now it waits for them.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from smartstack.logs import event
from synapse.atomic import read_text, write_atomic
from synapse.config import HAProxyConfig, ServiceConfig
from synapse.haproxy.resilience import is_http
from synapse.haproxy.settings import Settings, binary_lua

log = logging.getLogger("synapse.haproxy")

ACTION = "synapse_wait_for_server"
# The default of a zone-routed service (managed mode): the stranded window it closes is
# ~0.1-0.7 s (docs/zone-routing.md); and of a service HAProxy checks: a panic's gap (above).
# Others default to 0: an empty or dead backend would hold each request (and a connection
# slot) for the wait before its 503, which only their operator can weigh against a gap that
# nothing of synapse opens (set the key in the `haproxy` block or the service's).
CHECKED_DEFAULT_MS = 1000
TCP_SLACK_MS = 500  # the inspect delay outlasts the wait: a yield after it is an error

LUA = f"""-- Written by synapse (synapse/haproxy/server_wait.py): replaced at its next start.
-- A request to a backend with no usable server waits for one, at most the rule's ms.
local STEP_MS = 10

local function now_ms()
  local t = core.now()
  return t.sec * 1000 + t.usec // 1000
end

-- (Not the backend's server list of core.backends: 2.6's snapshot of the start, which
-- keeps the servers `del server` freed; reading one crashed the worker.)
local function wait_for_server(txn, ms)
  if txn.f:nbsrv() > 0 then return end
  local deadline = now_ms() + (tonumber(ms) or 0)
  repeat
    core.msleep(STEP_MS)
    if txn.f:nbsrv() > 0 then return end
  until now_ms() >= deadline
end

core.register_action("{ACTION}", {{ "http-req", "tcp-req" }}, wait_for_server, 1)
"""


def enabled(config: HAProxyConfig) -> bool:
    """Whether synapse may add the wait: managed mode, or the operator set the key in the
    ``haproxy`` block (Airbnb mode: synapse does not know that its HAProxy has Lua, and an
    Airbnb config keeps its meaning); and a config file it writes, to put the Lua beside."""
    writes = config.managed is not None or config.do_writes
    asked = config.managed is not None or "wait_for_server_ms" in config.model_fields_set
    return bool(writes and asked and config.config_file_path)


def wait_ms(config: HAProxyConfig, service: ServiceConfig, lines: Sequence[str] = ()) -> int:
    """The service's wait: its own key, else the ``haproxy`` block's, else the default
    (CHECKED_DEFAULT_MS for a zone-routed service or one HAProxy checks, by its backend's
    and the defaults' ``lines``; 0 for the others)."""
    own = service.haproxy.wait_for_server_ms
    if own is not None:
        return own
    if config.wait_for_server_ms is not None:
        return config.wait_for_server_ms
    zoned = service.zone_routing is not None
    return CHECKED_DEFAULT_MS if zoned or checked(service, lines) else 0


def checked(service: ServiceConfig, lines: Sequence[str]) -> bool:
    """Whether HAProxy checks the service's servers: ``check`` on a ``default-server`` line
    of ``lines`` (synapse's, for ``health_check`` or ``observe``; the operator's, in the
    backend or ``defaults``) or in its ``server_options``, the last of ``check`` and
    ``no-check`` deciding, as HAProxy reads them. (Not a record's options: one record would
    change the backend's lines, a reload.)"""
    words = [w for line in lines if line.split()[:1] == ["default-server"] for w in line.split()]
    words += (service.haproxy.server_options or "").split()
    said = [w == "check" for w in words if w in ("check", "no-check")]
    return bool(said and said[-1])


def lua_path(config: HAProxyConfig) -> Path:
    assert config.config_file_path is not None
    path = Path(config.config_file_path)
    return path.with_name(f"{path.stem}-synapse-wait.lua")


def prepare(config: HAProxyConfig, settings: Settings) -> Path | None:
    """The Lua file in place (written when missing or different); None: the wait is off
    (not ``enabled``, a managed binary without Lua, or the file cannot be written)."""
    if not enabled(config):
        return None
    if missing := no_lua(settings):
        event(log, "haproxy_wait_no_lua", logging.WARNING, binary=settings.binary, reason=missing,
              detail="requests to a backend without a usable server get a 503 at once")  # fmt: skip
        return None
    path = lua_path(config).absolute()
    try:
        if read_text(path) != LUA:
            write_atomic(path, LUA)
    except OSError as err:
        event(log, "haproxy_wait_lua_unwritten", logging.WARNING, path=str(path), error=str(err),
              detail="requests to a backend without a usable server get a 503 at once")  # fmt: skip
        return None
    return path


def before_read(text: str, config: HAProxyConfig) -> None:
    """Before HAProxy (or its check) reads ``text``: the Lua file it loads is on disk. A
    directory purged since the renderer wrote it (a tmp cleaner; synapse.haproxy.replacement)
    took the file along, and a config naming a missing Lua file is refused as a whole (review
    s40: test_sockets_removed's next reload was refused). OSError: the caller's disk failure."""
    if not enabled(config):
        return
    path = lua_path(config).absolute()
    if f"lua-load-per-thread {path}" in text and read_text(path) != LUA:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, LUA)


def no_lua(settings: Settings) -> str:
    """Why the managed binary cannot load the wait ("" when it can, or when its version was
    not read: a renderer of tests and tools): older than 2.4 (no ``lua-load-per-thread``),
    or built without Lua (``haproxy -vv``, read with the version: ``binary_version``)."""
    if not settings.managed or settings.version is None:
        return ""
    if settings.version < (2, 4, 0):
        return "HAProxy {}.{}.{} has no lua-load-per-thread".format(*settings.version)
    return "built without Lua (haproxy -vv)" if binary_lua(settings.binary) is False else ""


def global_lines(path: Path | None) -> list[str]:
    return [] if path is None else [f"lua-load-per-thread {path}"]


def first(
    config: HAProxyConfig, service: ServiceConfig, given: Sequence[str], defaults: Sequence[str]
) -> list[str]:
    """The backend's first lines: the wait (none for 0). In TCP mode an inspect delay lets
    the action yield, unless the operator's lines set their own (which then bounds it)."""
    ms = wait_ms(config, service, [*defaults, *given])
    if ms <= 0:
        return []
    if is_http(given, defaults):
        return [f"http-request lua.{ACTION} {ms}"]
    own_delay = any(line.split()[:2] == ["tcp-request", "inspect-delay"] for line in given)
    delay = [] if own_delay else [f"tcp-request inspect-delay {ms + TCP_SLACK_MS}ms"]
    return [*delay, f"tcp-request content lua.{ACTION} {ms}"]
