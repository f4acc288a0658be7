"""What ``synapse -k`` checks beyond the file's schema, on this host.

- Every file synapse writes (HAProxy config, candidate, state files, sockets, pid file,
  file_output) can be created: its directory exists and is writable. Also checked at
  start. A wrong path (not a directory, a socket directory nobody makes: not one of the
  HAProxy synapse starts, whose directories it makes) is an error at both. A read-only
  filesystem is the host's state of this moment, which the running daemon
  survives as it does a full disk (runtime changes, writes retried), so a restart must not
  turn it into an outage (review s29: a restart on a read-only config dir exited 2 and left
  HAProxy with the old servers): a note with ``-k`` (the units' ExecStartPre), a warning at
  start (``start_path_unwritable``), which goes on. A permission problem (EACCES) is the
  deployment's, not the moment's: ``-k`` refuses it, where a rollout runs it; a start warns
  and goes on (it too survives it at runtime).
- The managed HAProxy's unix socket paths are short enough for it to bind
  (``synapse.haproxy.socket_limits``; `haproxy -c` binds nothing). Also at start.
- ``maxconn`` / ``ulimit-n`` in ``global`` fit the open-file limit the HAProxy synapse
  starts will have (``synapse.haproxy.fd_limit``), and its ``pidfile`` line's directory
  exists (HAProxy makes none). Also at start, and at a SIGHUP changing ``global``
  (``vet_reload``: refused, the running config stays). A note only, with ``-k``, where
  synapse does not start HAProxy.
- With ``full`` (``-k``): the HAProxy config is rendered (default servers stand in for
  the registry's, or one placeholder server: ``synapse.check_render``) and ``haproxy -c``
  must accept it, in managed mode always, in Airbnb mode when synapse writes the file
  and an ``haproxy`` binary is on PATH.
- With ``full``: a note per bind on an address this host does not have, naming its key
  and what a start does with it (``synapse.haproxy.not_here``: a service's is left out
  until the address is here; it may be a VIP added later, so not an error).
- A note when ``hard-stop-after`` is set: which frontends' long responses and TCP sessions
  it cuts after every reload (``synapse.haproxy.hard_stop``).
- A note for zone-routed HTTP services HAProxy checks by a connect only: a hung local
  zone would fail every request sent to it (``synapse.zone_check_note``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import shutil
import tempfile
from pathlib import Path

from smartstack.configfile import ConfigError
from smartstack.paths_check import CONFIG, READ_ONLY, PathProblem, path_problems, say_unwritable
from synapse.config import HAProxyConfig, SynapseConfig
from synapse.model import DesiredService

CHECK_TIMEOUT = 20.0
log = logging.getLogger("synapse.preflight")
GOES_ON = (
    "synapse runs as on a full disk: it serves what it can (an HAProxy left running is "
    "adopted and changed at runtime) and retries the write (its warnings, and /health for "
    "what keeps HAProxy from the desired state, say what still fails)"
)


def written_paths(config: SynapseConfig) -> dict[str, Path | None]:
    """Key -> a file synapse (or the HAProxy it manages) creates."""
    paths: dict[str, Path | None] = {}
    hap = config.haproxy
    if hap is not None:
        from synapse.haproxy.settings import settings_for

        settings = settings_for(hap)
        writes = hap.do_writes or settings.managed
        paths["haproxy.config_file_path"] = settings.config_path if writes else None
        paths["haproxy.candidate_config_file_path"] = settings.candidate_path if writes else None
        paths["haproxy.state_file_path"] = (
            Path(hap.state_file_path) if hap.state_file_path else None
        )
        paths["haproxy.server_state_file"] = settings.state_file
        if settings.managed:
            paths["haproxy.managed.master_socket_path"] = settings.master_socket
            paths["haproxy.managed.pid_file"] = settings.pid_file
            for index, socket in enumerate(settings.shared_sockets):
                # (`${SOCKDIR}/a.sock`: HAProxy's environment expands it, not judged here)
                if "$" not in socket:
                    paths[f"haproxy.socket_file_path[{index}]"] = Path(socket)
            own = Path(settings.runtime_sockets[0]) if settings.runtime_sockets else None
            # (beside one of those: its directory's trouble is said once, not twice)
            if own and all(path is None or path.parent != own.parent for path in paths.values()):
                paths["synapse's own admin socket"] = own
    if config.file_output is not None:
        paths["file_output.output_directory"] = Path(config.file_output.output_directory) / "x"
    return paths


def preflight(config: SynapseConfig, config_path: Path, full: bool) -> tuple[list[str], list[str]]:
    """(errors, notes) about running this config on this host."""
    paths = written_paths(config)
    # synapse writes its files with `mkdir -p`; HAProxy opens sockets and its pid file in
    # directories that must exist, unless it is the config file's (made by that write), or
    # synapse starts that HAProxy: it makes them first (``replacement.make_dirs``), so a
    # socket directory on a tmpfs emptied by a reboot (/run/synapse) is no wrong path.
    config_dir = (paths.get("haproxy.config_file_path") or Path("/")).parent
    made = launched(config.haproxy)
    opened_by_haproxy = [
        path for key, path in paths.items()
        if path is not None and (key.startswith("haproxy.managed.") or "socket" in key)
        and path.parent != config_dir and not made
    ]  # fmt: skip
    if (pidfile := global_pidfile(config.haproxy)) is not None:  # (HAProxy opens it)
        paths[pidfile[0]] = pidfile[1]
        opened_by_haproxy.append(pidfile[1])
    problems = path_problems(paths, opened_by_haproxy)
    errors, notes = path_verdicts(problems, config_path, full)
    if made and full:  # (what the start does with them: a typo'd path is made, or cleared)
        said = {problem.key for problem in problems}  # (one that cannot be made: said so)
        fine = {key: path for key, path in paths.items() if key not in said}
        notes += made_by_start(fine, config_dir, config_path)
    if config.haproxy is not None and config.haproxy.managed is not None:
        from synapse.haproxy.settings import settings_for
        from synapse.haproxy.socket_limits import socket_path_problems

        errors += socket_path_problems(config_path, config.haproxy, settings_for(config.haproxy))
    if config.haproxy is not None:
        error, note = fd_limit_verdict(config.haproxy, config_path, listening_ports(config))
        errors += [error] if error else []
        notes += [note] if note and full else []
    if config.haproxy is not None:
        from synapse.haproxy.hard_stop import hard_stop_note
        from synapse.zone_check_note import hung_zone_note

        notes += [note] if (note := hard_stop_note(config.haproxy, config.services)) else []
        notes += [note] if (note := hung_zone_note(config.haproxy, config.services)) else []
    if full and config.haproxy is not None:
        from synapse.haproxy.not_here import config_notes

        notes += config_notes(config)  # (`haproxy -c` binds nothing: an absent VIP passes it)
        refused, note = asyncio.run(check_haproxy(config, config_path))
        errors += refused
        notes += [note] if note else []
    return errors, notes


def made_by_start(paths: dict[str, Path | None], config_dir: Path, config_path: Path) -> list[str]:
    """Notes (``-k``) on HAProxy's sockets and pid file that the start of the HAProxy synapse
    launches changes the host for (review s34): a missing directory it makes (so a typo in
    it is no longer refused, only said here) and a directory standing at the path itself,
    removed when empty (another program's, if the path is wrong)."""
    notes = []
    for key, path in paths.items():
        if path is None or not (key.startswith("haproxy.managed.") or "socket" in key):
            continue
        try:
            missing = path.parent != config_dir and not path.parent.exists()
            directory = not missing and path.is_dir() and not path.is_symlink()
        except OSError:  # (an unsearchable directory: the path check says it)
            continue
        if missing:
            notes.append(f"{config_path}: {key}: directory {path.parent} does not exist: "
                         "synapse makes it before it starts HAProxy (a reboot's tmpfs; "
                         "is the path right?)")  # fmt: skip
        elif directory:
            notes.append(f"{config_path}: {key}: {path} is a directory: synapse removes it "
                         "before it starts HAProxy when it is empty, else HAProxy cannot "
                         "start (is the path right?)")  # fmt: skip
    return notes


def launched(hap: HAProxyConfig | None) -> bool:
    """Whether synapse starts this HAProxy itself (managed, not ``launch: false``)."""
    return hap is not None and hap.managed is not None and hap.managed.launch


def global_pidfile(hap: HAProxyConfig | None) -> tuple[str, Path] | None:
    """(key, path) of the `pidfile` line of `global` the HAProxy synapse starts creates
    (the first: HAProxy ignores later ones; none when ``managed.pid_file`` is set: its
    ``-p`` comes first)."""
    if not launched(hap) or hap is None or hap.managed is None or hap.managed.pid_file:
        return None
    from synapse.haproxy.words import has_env, words

    for index, line in enumerate(hap.global_):
        tokens = words(line)
        if tokens[:1] == ["pidfile"] and len(tokens) > 1:
            # (HAProxy expands $VAR with its environment: such a path is not judged)
            return None if has_env(tokens[1]) else (f"haproxy.global[{index}]", Path(tokens[1]))
    return None


def listening_ports(config: SynapseConfig) -> int:
    """The frontend ports HAProxy will listen on (one open file each): a lower bound. A
    ``haproxy.disabled`` service is not rendered at all: it binds nothing (counted, 300
    disabled of 600 services made a config HAProxy serves under 1,024 refused at start)."""
    hap = [s.haproxy for s in config.services.values()]
    return len({h.port for h in hap if h.port and not h.disabled})


def fd_limit_verdict(
    hap: HAProxyConfig, config_path: Path, listeners: int = 0
) -> tuple[str | None, str | None]:
    """(error, note): `maxconn` / `ulimit-n` in `global` that HAProxy cannot have here.
    An error for the HAProxy synapse starts; a note when another starts it (its own
    limits, perhaps not synapse's, are what count)."""
    from synapse.haproxy.fd_limit import fd_problem, this_host

    binary = shutil.which(hap.managed.binary) if hap.managed is not None else None
    where = f"{config_path}: haproxy"
    problem = fd_problem(where, list(hap.global_), this_host(binary), listeners)
    if problem is None or launched(hap):
        return problem, None
    return None, f"{problem} (synapse does not start this HAProxy: if its starter has these limits)"


def vet_reload(old: SynapseConfig, new: SynapseConfig, config_path: str) -> None:
    """ConfigError with ``reload_problems``' lines (the SIGHUP is refused as a bad file is)."""
    if lines := reload_problems(old, new, Path(config_path)):
        raise ConfigError(lines)


def reload_problems(old: SynapseConfig, new: SynapseConfig, config_path: Path) -> list[str]:
    """A SIGHUP's config vetted on this host before it is applied: changed `global` lines
    HAProxy could not start with (its limit, its pid file's directory) leave every later
    reload failing; refused, the running config stays."""
    hap = new.haproxy
    ports = listening_ports(new)  # (more ports: more open files)
    same = old.haproxy and old.haproxy.global_ == hap.global_ if hap else False
    if hap is None or not launched(hap) or (same and ports <= listening_ports(old)):
        return []
    errors = [error] if (error := fd_limit_verdict(hap, config_path, ports)[0]) else []
    if (pidfile := global_pidfile(hap)) is not None:
        found = path_problems({pidfile[0]: pidfile[1]}, [pidfile[1]])
        errors += [problem.line(config_path) for problem in found]
    return errors


def path_verdicts(
    problems: list[PathProblem], config_path: Path, full: bool
) -> tuple[list[str], list[str]]:
    """(errors, notes) of the path check: a wrong path is an error; a read-only filesystem a
    note with ``-k``; a read-only mount of a writable filesystem (a read-only bind mount)
    or a permission problem an error with ``-k``. At a start only the wrong
    path stops it: the others are logged (``start_path_unwritable``) and it goes on."""
    errors = [problem.line(config_path) for problem in problems if problem.kind == CONFIG]
    rest = [problem for problem in problems if problem.kind != CONFIG]
    if not full:
        say_unwritable(log, rest, GOES_ON)
        return errors, []
    errors += [problem.line(config_path) for problem in rest if problem.kind != READ_ONLY]
    notes = [
        f"{problem.line(config_path)} (the host's state of this moment: synapse starts all "
        "the same and retries the write)"
        for problem in rest
        if problem.kind == READ_ONLY
    ]
    return errors, notes


async def check_haproxy(config: SynapseConfig, config_path: Path) -> tuple[list[str], str | None]:
    """(errors, note): render the config synapse would start with and run ``haproxy -c``."""
    from synapse.check_render import check_services
    from synapse.haproxy.check_blame import without_scratch
    from synapse.haproxy.commands import CheckUnanswered, validate_config
    from synapse.haproxy.render import Renderer
    from synapse.haproxy.settings import binary_version, settings_for

    hap = config.haproxy
    assert hap is not None
    settings = settings_for(hap, binary_version(hap))  # (rendered as the daemon would)
    where = f"{config_path}: haproxy"
    if shutil.which(settings.binary) is None:
        if settings.managed:
            return [f"{where}.managed.binary: {settings.binary!r} not found on PATH"], None
        return [], f"{where}: no {settings.binary!r} on PATH, the HAProxy config is not checked"
    if not (hap.do_writes or settings.managed):
        return [], None
    services = check_services(config)  # (every service with servers: their lines checked)
    with tempfile.TemporaryDirectory(prefix="synapse-check-") as tmp:
        # A scratch candidate, with its maps and crt-list beside it: -k must not touch
        # the files a running synapse uses.
        path = Path(tmp) / "haproxy.cfg"
        scratch_hap = hap.model_copy(update={"config_file_path": str(path)})
        scratch = dataclasses.replace(
            settings, config_path=path, candidate_path=path, check_command=None
        )
        try:
            text = Renderer(scratch_hap, scratch).render(services).text
            write_edge_files(scratch_hap, services, path)
        except Exception as exc:  # a user template can fail in many ways: report, never crash
            error = f"{type(exc).__name__}: {exc}"
            return [f"{where}: the HAProxy config cannot be rendered: {error}"], None
        try:
            message = await validate_config(scratch, text, CHECK_TIMEOUT)
        except CheckUnanswered as err:
            return [f"{where}: {without_scratch(str(err), path)}"], None
    if message:
        return refusal(config, config_path, services, message, path, text), None
    return [], None


def refusal(
    config: SynapseConfig,
    config_path: Path,
    services: list[DesiredService],
    message: str,
    path: Path,
    text: str,
) -> list[str]:
    """HAProxy's refusal of the rendered config at ``path`` (a scratch copy, gone when
    the operator reads this): per refused line, the file and key that wrote it."""
    from smartstack.configfile import service_sources
    from synapse.haproxy.check_blame import Blame, without_scratch

    assert config.haproxy is not None
    sources = service_sources(config_path, config.service_conf_dir)
    blame = Blame(config.haproxy, services, config_path, lambda n: sources.get(n, config_path))
    lines = blame.lines(message, path, text)
    if lines:
        return lines
    first = " | ".join(without_scratch(message, path).splitlines()[:5])  # (no ALERT line)
    return [f"{config_path}: haproxy: HAProxy rejects the rendered config: {first}"]


def write_edge_files(hap: HAProxyConfig, services: list[DesiredService], path: Path) -> None:
    """The route maps, the sticky zone map and the crt-list (with the placeholder) the
    config at ``path`` reads."""
    from synapse.haproxy import routes, tls, zone_map

    routes.write_map_files(routes.routes_of(services), routes.map_paths(path))
    if (entries := zone_map.wanted_entries(services)) is not None:  # (sticky services)
        zone_map.map_path(path).write_text(zone_map.map_text(entries), encoding="utf-8")
    if hap.tls is not None:
        tls.write_tls_files(hap.tls, tls.tls_paths(path))
