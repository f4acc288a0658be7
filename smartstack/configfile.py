"""Loading JSON/YAML config files into typed models, with one-line errors.

Both daemons accept the Airbnb schemas unchanged. Errors name the file, the key
path (``services.web.checks[0].timeout``) and what was expected; unknown keys
are warnings, because real files carry keys we do not use (``statsd``, ...).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from smartstack import config_check

SERVICE_FILE_SUFFIXES = (".json", ".yaml", ".yml")

M = TypeVar("M", bound=BaseModel)


class ConfigModel(BaseModel):
    """Base of every config model: unknown keys are kept (and warned about), not refused."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)


class ConfigError(Exception):
    """One or more problems with a config file; each line names file, key and expectation."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__("\n".join(lines))
        self.lines = lines


def format_loc(loc: Iterable[Any]) -> str:
    """('services', 'web', 'checks', 0, 'timeout') -> 'services.web.checks[0].timeout'."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def load_document(path: Path) -> dict[str, Any]:
    """Parse one JSON or YAML file into a mapping; ConfigError with a one-line reason."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror or exc}"]) from None
    except UnicodeDecodeError:
        raise ConfigError([f"{path}: not UTF-8 text"]) from None
    if path.suffix == ".json":
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            # The Ruby daemons read .json files with a YAML parser, so real files
            # carry '#' comments; accept what YAML accepts, report the JSON error.
            try:
                doc = yaml.safe_load(text)
            except yaml.YAMLError:
                raise ConfigError(
                    [f"{path}:{exc.lineno}:{exc.colno}: malformed JSON: {exc.msg}"]
                ) from None
    else:
        try:
            doc = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f":{mark.line + 1}:{mark.column + 1}" if mark else ""
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            raise ConfigError([f"{path}{where}: malformed YAML: {problem}"]) from None
    if doc is None:
        doc = {}
    if not isinstance(doc, dict):
        raise ConfigError([f"{path}: expected a mapping at the top level, got {_kind(doc)}"])
    return doc


def _kind(value: Any) -> str:
    return {list: "a list", str: "a string", int: "a number", float: "a number"}.get(
        type(value), type(value).__name__
    )


def merge_service_conf_dir(doc: dict[str, Any], config_path: Path) -> dict[str, Path]:
    """Add every file of ``service_conf_dir`` as one service named after the file.

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
    directory = Path(conf_dir)
    if not directory.is_absolute():
        directory = config_path.parent / directory
    if not directory.is_dir():
        raise ConfigError([f"{config_path}: service_conf_dir: {directory} is not a directory"])
    if not isinstance(services, dict):
        return sources
    for file in sorted(directory.iterdir()):
        if file.suffix not in SERVICE_FILE_SUFFIXES or not file.is_file():
            continue
        services[file.stem] = load_document(file)
        sources[file.stem] = file
    return sources


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
        return message  # our validators name the expectation; the input is a whole block
    return f"{message} (got {given!r})"


def validate(
    model: type[M], doc: dict[str, Any], path: Path, sources: dict[str, Path] | None = None
) -> M:
    """Validate a parsed document; ConfigError with one line per problem."""
    sources = sources or {}
    try:
        return model.model_validate(doc)
    except ValidationError as exc:
        lines = []
        for error in exc.errors(include_url=False):
            loc = tuple(error["loc"])
            source = _source_for(loc, sources, path)
            lines.append(f"{source}: {format_loc(loc)}: {_expectation(error)}")
        raise ConfigError(lines) from None


def load(
    model: type[M],
    path: Path,
    known_unused: Iterable[str] = (),
    overrides: dict[str, Any] | None = None,
    strict: bool = False,
) -> tuple[M, list[str]]:
    """Read, merge ``service_conf_dir`` and validate one config file.

    Returns the model and warning lines for unknown keys (``known_unused`` are
    Airbnb keys we accept silently but do not act on). An unknown key close to a
    known one is an error (``smartstack.config_check``), every one with ``strict``.
    ``overrides`` replace top-level keys before validation (command-line flags,
    environment).
    """
    doc = load_document(path)
    config_check.require_content(doc, path)
    doc.update(overrides or {})
    sources = merge_service_conf_dir(doc, path)
    config = validate(model, doc, path, sources)
    errors, warnings = config_check.classify_unknown(
        config, known_unused, lambda loc: _source_for(loc, sources, path), strict
    )
    if errors:
        raise ConfigError(errors)
    return config, warnings
