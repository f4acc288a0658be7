"""The last good config: an invalid file never replaces a running config, at a SIGHUP or at a
start (docs/configuration.md, "The last good config").

A SIGHUP with an invalid file keeps the running config; a start had nothing to keep and
exited 2, so a typo pushed everywhere and rejected at SIGHUP became an outage at the next
restart (a package upgrade, a reboot: review s38, every nerve exited 2 and the service was
gone from every synapse). So after every load that validates (start, SIGHUP) the daemon
keeps a copy of the document it validated: the main file with its ``service_conf_dir`` files
merged in, ERB already rendered (synapse), before command-line overrides, in
``last-good-<config stem>-<digest>.yaml`` of its state directory (one per config file: two
daemons sharing a directory keep theirs; JSON, or YAML when JSON cannot say it all; mode
0600: a rendered ``<%= ENV %>`` may be a password). A copy is this user's or root's and
writable by no one else, or it is passed by: a state directory others may write (a shared
group, a sticky ``/tmp``) must not choose the config a daemon runs, nor receive its
secrets through a file or link planted at a predictable name. A start whose file is invalid
validates that copy as it would the file (the same code, today's rules) and runs it, loudly;
a copy that no longer validates (this version is stricter) is no way out: exit 2 with both
errors. ``-k`` never looks at a copy.

A daemon whose config HAProxy must accept too (synapse with a ``haproxy`` block) keeps the
copy *pending* (``keep(..., pending=True)``: written whole, not yet under its name) and
promotes it once HAProxy runs that config (``promote``): a file that validates but that
``haproxy -c`` refuses (a bad ``global`` line) never replaces the copy a start falls back to
(review s39). A newer load's pending copy supersedes an older one (``sweep``).

A copy is the document, not the files' text: it needs neither the ``service_conf_dir`` nor
the current directory a relative one was read from, and the environment ERB read then is
what ran. Its paths (``state_dir``, sockets) still resolve against the config file's path,
as the file's would.
"""

from __future__ import annotations

import datetime
import glob
import hashlib
import json
import os
import stat
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from smartstack.config_errors import ConfigError

COPY_PREFIX = "last-good-"
PENDING_SUFFIX = ".pending"
FORMAT = 1
# a copy older than this is said to be old (its age is always given: ``aged``)
OLD_AFTER_S = 7 * 86400
C = TypeVar("C")


@dataclass(frozen=True)
class Copy:
    path: Path  # the copy
    config: str  # the config file it is a copy of (absolute)
    written_at: float
    document: dict[str, Any]


def since(written_at: float) -> str:
    """When a copy was written, for the operator (UTC)."""
    stamp = datetime.datetime.fromtimestamp(written_at, datetime.UTC)
    return stamp.isoformat(timespec="seconds").replace("+00:00", "Z")


def aged(written_at: float, now: float) -> dict[str, Any]:
    """A copy's age for the operator: ``age_s``, and ``old`` beyond ``OLD_AFTER_S`` (a copy
    from weeks ago may lack what was added since: said, not refused)."""
    age = max(0, round(now - written_at))
    return {"age_s": age, "old": age >= OLD_AFTER_S}


def age_text(written_at: float, now: float) -> str:
    """``from <since>``, with its age in days once it is old (``aged``)."""
    age = aged(written_at, now)
    days = f", {age['age_s'] // 86400} days old" if age["old"] else ""
    return f"from {since(written_at)}{days}"


def copy_name(config_path: str | os.PathLike[str]) -> str:
    """The copy's file name for this config file (its absolute path's digest, as
    ``smartstack.instance_lock`` names nerve's lock): one per config in a shared directory."""
    absolute = os.path.abspath(config_path)
    digest = hashlib.sha256(os.fsencode(absolute)).hexdigest()[:12]
    return f"{COPY_PREFIX}{Path(absolute).stem}-{digest}.yaml"


def write(
    directory: Path,
    config_path: str | os.PathLike[str],
    document: dict[str, Any],
    now: float,
    pending: bool = False,
) -> Path:
    """Keep ``document`` as the last good copy of ``config_path`` in ``directory`` (made if
    missing); written whole or not at all (a temp file renamed over). ``pending``: the temp
    file is left for ``promote`` (its path returned). OSError when it cannot."""
    directory.mkdir(parents=True, exist_ok=True)
    record = {"format": FORMAT, "config": os.path.abspath(config_path), "written_at": now,
              "document": document}  # fmt: skip
    text = _text(record)
    target = directory / copy_name(config_path)
    if pending:
        sweep(target)
    # a new file of a name nobody could plant (O_EXCL, random): never a link or a file of
    # another user's that the secrets would go into, then renamed to be the copy
    suffix = PENDING_SUFFIX if pending else ".tmp"
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix, dir=directory)
    temp = Path(name)
    try:  # (mkstemp's file is 0600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        if not pending:
            os.replace(temp, target)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return temp if pending else target


def sweep(target: Path) -> None:
    """Pending copies of ``target`` not promoted (refused by HAProxy, superseded, or left by
    a daemon that stopped): a newer load's replaces them."""
    for old in glob.glob(
        f"{glob.escape(str(target.parent / ('.' + target.name)))}.*{PENDING_SUFFIX}"
    ):
        Path(old).unlink(missing_ok=True)


def promote(pending: Path) -> Path:
    """The pending copy ``pending`` becomes the last good copy (HAProxy runs its config).
    FileNotFoundError when a newer load's swept it away; OSError when it cannot."""
    target = pending.with_name(pending.name[1:].rsplit(".", 2)[0])  # .<copy>.<random>.pending
    os.replace(pending, target)
    return target


def _text(record: dict[str, Any]) -> str:
    """JSON (which YAML reads too) when it carries the document whole: 2 ms at 1,000
    services where YAML's dumper took 430 ms (69 with libyaml) of a SIGHUP's child; YAML
    for what JSON cannot say (an int key, a date, a set, NaN)."""
    try:
        text = json.dumps(record, ensure_ascii=False)
        if json.loads(text) == record:
            return text
    except (TypeError, ValueError):
        pass
    yaml = _yaml()
    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)  # (libyaml's: ~6x faster)
    try:
        return yaml.dump(record, Dumper=dumper, sort_keys=False, allow_unicode=True)
    except yaml.YAMLError as exc:
        raise ValueError(f"not writable as YAML: {exc}") from None


def _yaml() -> Any:
    """PyYAML, imported where a copy needs it: the daemons write and read JSON copies and
    never load it (~0.8 MB of a sidecar's RSS, measured in session 51)."""
    import yaml

    return yaml


def keep(
    directory: Path | None,
    config_path: str | os.PathLike[str],
    document: dict[str, Any] | None,
    pending: bool = False,
) -> dict[str, Any]:
    """Write the copy of a file that validated (by the validating child: no cost to the
    daemon). The answer's ``unsaved``: what to log when it could not be (the start or reload
    goes on), else None; with ``pending``, ``pending``: the path ``promote`` takes."""
    if directory is None or document is None:
        return {"unsaved": None}
    try:
        path = write(directory, config_path, document, time.time(), pending)
    except (OSError, ValueError) as exc:  # (ValueError: YAML could not say it either)
        error = getattr(exc, "strerror", None) or str(exc)
        return {"unsaved": {"directory": str(directory), "error": error}}
    return {"unsaved": None, **({"pending": str(path)} if pending else {})}


def read(path: Path) -> Copy:
    """A copy; ValueError when it is not one or not to be trusted (another user's, writable
    by others, a link), OSError when unreadable."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        if path.is_symlink():
            raise ValueError("a symbolic link, not a copy this daemon wrote") from None
        raise
    with os.fdopen(fd, encoding="utf-8") as file:
        info = os.fstat(file.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise ValueError("not a regular file")
        if info.st_uid not in (os.geteuid(), 0) or info.st_mode & 0o022:
            raise ValueError(f"owned by uid {info.st_uid} or writable by others "
                             f"(mode {stat.S_IMODE(info.st_mode):04o}): not trusted")  # fmt: skip
        text = file.read()
    try:
        record = json.loads(text)
    except ValueError:
        yaml = _yaml()
        try:
            record = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
        except yaml.YAMLError as exc:
            raise ValueError(f"not YAML: {exc}") from None
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise ValueError(f"not a last good copy of format {FORMAT}")
    document, config = record.get("document"), record.get("config")
    written_at = record.get("written_at")
    if not isinstance(document, dict) or not isinstance(config, str):
        raise ValueError("no document or config path in it")
    if not isinstance(written_at, int | float):
        raise ValueError("no written_at in it")
    return Copy(path, config, float(written_at), document)


def find(
    directories: Iterable[Path], config_path: str | os.PathLike[str]
) -> tuple[Copy | None, list[str]]:
    """The newest copy of ``config_path`` in ``directories`` (a state_dir moved: not the one
    left behind in the old one); with why others were passed by (a copy of another config
    file, an unreadable or untrusted one, an older one)."""
    wanted, notes, seen = os.path.abspath(config_path), [], set()
    found: list[Copy] = []
    for directory in directories:
        path = directory / copy_name(config_path)
        if path in seen:
            continue
        seen.add(path)
        try:
            copy = read(path)
        except FileNotFoundError:
            continue
        except (OSError, ValueError) as exc:
            notes.append(f"{path}: last good copy unreadable: {exc}")
            continue
        if copy.config != wanted:
            notes.append(f"{path}: a last good copy of {copy.config}, not of {wanted}: passed by")
            continue
        found.append(copy)
    if not found:
        return None, notes
    newest = max(found, key=lambda copy: copy.written_at)
    notes += [f"{copy.path}: an older last good copy (from {since(copy.written_at)}): passed by"
              for copy in found if copy is not newest]  # fmt: skip
    return newest, notes


def state_directories() -> list[Path]:
    """systemd's ``$STATE_DIRECTORY`` (``StateDirectory=``; several are ``:``-separated)."""
    value = os.environ.get("STATE_DIRECTORY", "")
    return [Path(part) for part in value.split(":") if part]


def fall_back(
    errors: list[str],
    found: tuple[Copy | None, list[str]],
    validate: Callable[[dict[str, Any]], tuple[C, list[str]]],
) -> tuple[C, list[str], dict[str, Any]]:
    """The file was refused with ``errors``: the copy ``found`` validated instead, with its
    warnings and what /status says of it. ConfigError with the file's errors when there is no
    copy (a first start: as before), with both when the copy is refused too."""
    copy, notes = found
    if copy is None:
        raise ConfigError(errors + notes)
    try:
        config, warnings = validate(copy.document)
    except ConfigError as exc:
        raise ConfigError([
            *errors,
            f"{copy.path}: the last good copy (from {since(copy.written_at)}) is refused too "
            "(this version checks more?); fix the config file:",
            *exc.lines,
        ]) from None  # fmt: skip
    info = {"copy": str(copy.path), "written_at": copy.written_at,
            "since": since(copy.written_at), "errors": errors}  # fmt: skip
    return config, warnings, info


def file_state_dir(text_doc: Callable[[], dict[str, Any]], key: str) -> str | None:
    """``key`` of the refused file when it can still be read as a mapping (a wrong value
    elsewhere): where its copy was kept. None when the file cannot be parsed."""
    try:
        value = text_doc().get(key)
    except (ConfigError, OSError, ValueError, AttributeError):
        return None
    return value if isinstance(value, str) and value else None
