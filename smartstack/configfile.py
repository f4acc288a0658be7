"""Loading JSON/YAML config files into typed models, with one-line errors.

Both daemons accept the Airbnb schemas unchanged. Errors name the file, the key
path (``services.web.checks[0].timeout``) and what was expected; unknown keys
are warnings, because real files carry keys we do not use (``statsd``, ...).
"""

from __future__ import annotations

import copy
import functools
import json
import os
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

from smartstack import config_check
from smartstack.config_duplicates import Loc, describe, json_load, yaml_load
from smartstack.config_encoding import (
    UTF16_NO_BOM,
    control_character,
    lone_surrogates,
    not_utf8_error,
    utf16_without_bom,
)
from smartstack.config_errors import ConfigError, format_loc
from smartstack.config_hints import near_miss, one_service_file
from smartstack.config_read import json_text, read_settled
from smartstack.config_sections import SectionCache
from smartstack.erb import ErbError
from smartstack.erb import render as erb_render

SERVICE_FILE_SUFFIXES = (".json", ".yaml", ".yml")  # Ruby: not .yml (docs/configuration.md)

M = TypeVar("M")


def __getattr__(name: str) -> Any:
    # ``ConfigModel`` lives in smartstack.modelbase; taken from there only when asked for,
    # so importing this module (ConfigError) does not fix which base config models get.
    if name == "ConfigModel":
        from smartstack import modelbase

        return modelbase.ConfigModel
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def load_document(
    path: Path,
    erb: bool = False,
    cache: SectionCache | None = None,
    repeated: list[str] | None = None,
    prefix: tuple[Any, ...] = (),
) -> dict[str, Any]:
    """Parse one JSON or YAML file into a mapping; ConfigError with a one-line reason.

    ``erb``: render the ``<%= ENV[...] %>`` tags first (synapse files, as Ruby synapse).
    ``cache``: a file whose text (ERB rendered) is as last time is not parsed again.
    ``repeated``: a line for every key given twice is added to it (smartstack.
    config_duplicates), its key path after ``prefix`` (a service file: its service's).
    """
    try:
        text = read_settled(path)  # not a half-written file (smartstack.config_read)
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror or exc}"]) from None
    except UnicodeDecodeError:  # where, and the encoding probably used
        raise ConfigError([not_utf8_error(path)]) from None
    if erb:
        try:
            text = erb_render(text, path)
        except ErbError as exc:
            raise ConfigError([str(exc)]) from None
    kept = cache.document(path, text) if cache is not None else None
    if kept is not None:
        if repeated is not None and cache is not None:
            repeated += cache.repeated.get(path, [])
        return kept
    found: list[tuple[Loc, int, int]] | None = [] if repeated is not None else None
    doc = _parse(text, path, found)
    if doc is None:
        doc = {}
    if not isinstance(doc, dict):
        raise ConfigError([f"{path}: expected a mapping at the top level, got {_kind(doc)}"])
    if (lone := lone_surrogates(text, doc)) is not None:
        where = format_loc([*prefix, *lone[0]])
        raise ConfigError([
            f"{path}: {where}: {lone[1]!r} holds a lone UTF-16 surrogate (an escape such as "
            "\\udce9, what Python makes of a byte that is not UTF-8), which no file or "
            "registry path can hold; write the character itself"
        ])  # fmt: skip
    lines = [describe(str(path), *twice, prefix=prefix) for twice in found or []]
    if repeated is not None:
        repeated += lines
    if cache is not None:
        cache.keep_document(path, text, doc)
        cache.repeated[path] = lines
    return doc


def _parse(text: str, path: Path, found: list[tuple[Loc, int, int]] | None = None) -> Any:
    """JSON first for .json files, else YAML (the Ruby daemons parse everything as YAML).

    When both fail, the error reported is that of the language the text is written in:
    JSON's for text shaped as JSON (it opens with '{' or '['), YAML's otherwise.
    """
    json_error: json.JSONDecodeError | None = None
    if path.suffix == ".json":
        try:
            # '#' comment lines blanked, a byte order mark a space (smartstack.config_read)
            return json_load(json_text(text), found)
        except json.JSONDecodeError as exc:
            json_error = exc  # YAML may still read it
    import yaml  # here: a daemon whose files are JSON never loads it (~1 MB of RSS)

    try:
        return yaml_load(text, found)
    except yaml.YAMLError as exc:
        if isinstance(exc, yaml.reader.ReaderError) and utf16_without_bom(text):
            raise ConfigError([f"{path}:{UTF16_NO_BOM}"]) from None
        if json_error is not None and _json_shaped(text):
            where = f"{json_error.lineno}:{json_error.colno}"
            raise ConfigError([f"{path}:{where}: malformed JSON: {json_error.msg}"]) from None
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}:{mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        if isinstance(exc, yaml.reader.ReaderError):  # a control character: no mark, a position
            where, problem = control_character(text, exc.position, problem)
        elif "'\\t'" in problem or "tab character" in problem:  # (an editor's tab key)
            problem += " (YAML takes no tab there: indent with spaces)"
        raise ConfigError([f"{path}{where}: malformed YAML: {problem}"]) from None


def _json_shaped(text: str) -> bool:
    """True when the first line that is not blank or a '#' comment opens a JSON value."""
    for line in text.splitlines():
        stripped = line.strip().lstrip("\ufeff")
        if stripped and not stripped.startswith("#"):
            return stripped[0] in "{["
    return False


def _kind(value: Any) -> str:
    return {list: "a list", str: "a string", int: "a number", float: "a number"}.get(
        type(value), type(value).__name__
    )


def merge_service_conf_dir(
    doc: dict[str, Any],
    config_path: Path,
    erb: bool = False,
    cache: SectionCache | None = None,
    repeated: list[str] | None = None,
) -> dict[str, Path]:
    """Add every file of ``service_conf_dir`` as one service named after the file.

    A relative directory is relative to the current directory, as Ruby's
    ``File.expand_path`` makes it (not to the config file's folder).

    Returns service name -> the file it came from, so errors can point there.
    """
    sources: dict[str, Path] = {}
    services = doc.get("services")
    if services is None:
        services = doc["services"] = {}
    if isinstance(services, dict):
        sources.update({name: config_path for name in services})
    conf_dir = doc.get("service_conf_dir")
    if not conf_dir:
        return sources
    if not isinstance(conf_dir, str):
        raise ConfigError([f"{config_path}: service_conf_dir: expected a path string"])
    directory = Path(os.path.abspath(os.path.expanduser(conf_dir)))
    if not _is_dir(directory):
        problem = f"{directory} is not a directory{_relative_hint(conf_dir, config_path)}"
        raise ConfigError([f"{config_path}: service_conf_dir: {problem}"])
    if not isinstance(services, dict):
        return sources
    for name, file in conf_dir_files(directory):
        if not name.isascii():
            _require_utf8_name(file)
        services[name] = load_document(file, erb, cache, repeated, ("services", name))
        sources[name] = file
    return sources


def _relative_hint(conf_dir: str, config_path: Path) -> str:
    """Why a relative ``service_conf_dir`` was not found: it is read from the current
    directory (Ruby's rule), which a newcomer running the daemon from elsewhere, or
    expecting the config file's folder, does not guess (review s44 newuser)."""
    if os.path.isabs(os.path.expanduser(conf_dir)):
        return ""
    beside = Path(os.path.abspath(config_path.parent / conf_dir))
    found = f"; beside the config file, {beside} is one" if _is_dir(beside) else ""
    return (
        f" (a relative service_conf_dir is read from the current directory, {os.getcwd()}, "
        f"as Ruby's File.expand_path reads it, not from the config file's folder{found}: "
        "run from the directory it is relative to, or give an absolute path)"
    )


def _is_dir(path: Path) -> bool:
    """Path.is_dir, False also where stat fails (a name too long, a folder not ours to
    search): a traceback in place of the config error before (review s44 cr-small)."""
    try:
        return path.is_dir()
    except OSError:
        return False


def _require_utf8_name(file: Path) -> None:
    """A file name that is not UTF-8 (Latin-1 ``caf\\xe9.yaml``, from an old host or a Windows
    archive) gives a service name with a lone surrogate, which UTF-8 cannot encode: nerve's -k
    passed it, then the service never started (``service_not_started``, review s34). Refused
    here, with the name as its bytes."""
    try:
        file.name.encode("utf-8")
    except UnicodeEncodeError:
        raw = os.fsencode(file.name)
        why = f"service file name {raw!r} is not UTF-8 (the service is named after it)"
        raise ConfigError([f"{file.parent}: {why}; rename it"]) from None


def conf_dir_files(directory: Path) -> list[tuple[str, Path]]:
    """(service name, file) of every service file in ``service_conf_dir``, in the order
    they are merged (of two files with one name, the later wins)."""
    return [
        (file.stem, file)
        for file in sorted(directory.iterdir())
        if file.suffix in SERVICE_FILE_SUFFIXES and file.is_file()
    ]


def service_sources(config_path: Path, conf_dir: str | None) -> dict[str, Path]:
    """Service name -> the file it came from, again from a loaded config (``synapse -k``
    names the file of a service whose HAProxy lines are refused); services not in it
    are the main file's."""
    if not conf_dir:
        return {}
    directory = Path(os.path.abspath(os.path.expanduser(conf_dir)))
    try:
        return dict(conf_dir_files(directory))
    except OSError:  # (gone since the load: the main file is named)
        return {}


def _source_for(loc: tuple[Any, ...], sources: dict[str, Path], default: Path) -> Path:
    if len(loc) >= 2 and loc[0] == "services" and loc[1] in sources:
        return sources[loc[1]]
    return default


def _expectation(error: dict[str, Any]) -> str:
    kind = error["type"]
    if kind == "missing":
        return "required key is missing"
    if kind == "extra_forbidden":
        return "unknown key"
    given = error.get("input")
    message = error["msg"]
    # "Value error, X" -> "X": our own validators already phrase the expectation.
    if message.startswith("Value error, "):
        message = message[len("Value error, ") :]
    if kind == "value_error" or isinstance(given, dict | list):
        # our validators name the expectation; the input is a whole block
        return message + _SHAPE_HINTS.get((kind, type(given)), "")
    return f"{message} (got {given!r}){_likely_meant(error, given)}"


# A block written in the other YAML shape: the usual first-config slip (`checks:` as a map of
# one check, `services:` as a list as in the early synapse format). (review s44 newuser)
_SHAPE_HINTS = {
    ("list_type", dict): " (got a mapping: a list is `- item` lines in YAML, `[...]` in JSON)",
    ("dict_type", list): " (got a list: a mapping is `key: value` lines without `- ` in YAML, "
    "`{...}` in JSON)",
}


def _likely_meant(error: dict[str, Any], given: Any) -> str:
    """ ", did you mean 'zookeeper'?" for a mistyped choice ('zookeper'), else ""."""
    expected = (error.get("ctx") or {}).get("expected")
    if error["type"] not in ("literal_error", "enum") or not isinstance(given, str):
        return ""
    if not isinstance(expected, str):
        return ""
    meant = config_check.suggest(given, re.findall(r"'([^']*)'", expected))
    return f", did you mean {' or '.join(repr(m) for m in meant)}?" if meant else ""


def validate(
    model: type[M], doc: dict[str, Any], path: Path, sources: dict[str, Path] | None = None
) -> M:
    """Validate a parsed document; ConfigError with one line per problem."""
    from pydantic import ValidationError  # (only where a config is validated)

    sources = sources or {}
    try:
        return model.model_validate(doc)  # type: ignore[attr-defined]
    except ValidationError as exc:
        lines = []
        for error in exc.errors(include_url=False):
            loc = tuple(error["loc"])
            source = _source_for(loc, sources, path)
            hint = near_miss(model, doc, error)  # ("needs 'zk_hosts'" beside a `zk_host`)
            lines.append(f"{source}: {format_loc(loc)}: {_expectation(error)}{hint}")
        misplaced = one_service_file(model, doc, path)
        raise ConfigError(lines + ([misplaced] if misplaced else [])) from None


def load(
    model: type[M],
    path: Path,
    known_unused: Iterable[str] = (),
    overrides: dict[str, Any] | None = None,
    erb: bool = False,
    prepare: Callable[[dict[str, Any], Path, dict[str, Path]], list[str]] | None = None,
    strict: bool = False,
    sections: SectionCache | None = None,
    document: dict[str, Any] | None = None,
    keep: list[dict[str, Any]] | None = None,
) -> tuple[M, list[str]]:
    """Read, merge ``service_conf_dir`` and validate one config file.

    Returns the model and warning lines for unknown keys (``known_unused`` are
    Airbnb keys we accept silently but do not act on). An unknown key close to a
    known one is an error (``smartstack.config_check``), every one with ``strict``.
    ``overrides`` replace top-level keys before validation (command-line flags,
    environment). ``erb``: render ``<%= ENV[...] %>`` tags in every file read
    (smartstack.erb). ``prepare`` may adjust the merged document before validation
    and returns warning lines. ``sections``: validate the services one by one and keep
    the results for the next load (smartstack.config_sections; a daemon's SIGHUP).
    ``document``: validate this merged document (a last good copy, smartstack.last_good)
    instead of reading ``path``; ``keep``: the merged document read is appended to it, as
    the file said it (before ``overrides``), for such a copy.
    """
    repeated: list[str] = []  # keys given twice: the last wins, as in Ruby; said here
    if document is not None:  # (its service_conf_dir files are in it already)
        doc, sources = copy.deepcopy(document), {}
        doc.update(overrides or {})
    else:
        doc = load_document(path, erb, repeated=repeated)
        config_check.require_content(doc, path)
        said = {key: doc[key] for key in overrides or {} if key in doc}
        doc.update(overrides or {})
        sources = merge_service_conf_dir(doc, path, erb, sections, repeated)
        if keep is not None:
            merged = {k: v for k, v in doc.items() if k not in (overrides or {})}
            keep.append({**copy.deepcopy(merged), **said})
    prepared = prepare(doc, path, sources) if prepare else []
    cached = None
    if sections is not None:  # per-service results kept from the last load
        whole = functools.partial(validate, model, path=path, sources=sources)
        cached = sections.validate(doc, whole, path, sources, known_unused, strict)
    if cached is not None:
        config, errors, unknown = cached
    else:
        config = validate(model, doc, path, sources)
        errors, unknown = config_check.classify_unknown(
            config, known_unused, lambda loc: _source_for(loc, sources, path), strict
        )
    if strict:
        errors = [f"{line} (refused by --strict)" for line in repeated] + errors
    if errors:
        raise ConfigError(errors)
    warnings = ([] if strict else repeated) + prepared + unknown
    return config, warnings
