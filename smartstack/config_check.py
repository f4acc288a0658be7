"""Refusing bad input early: empty files, likely typos of known keys, unreachable hosts.

Unknown keys are sorted into errors and warnings. Real Airbnb files carry keys we do
not use, so an unknown key is normally a warning; but one that is a small edit away
from a key we know at the same level (``chekcs`` for ``checks``, ``timout``,
``prot``) is almost certainly a typo that silently disables something (no checks,
the default timeout, a vanished frontend), so it is an error with a suggestion.
``strict`` makes every unknown key an error.
"""

from __future__ import annotations

import functools
import ipaddress
import types
import typing
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from smartstack import airbnb_keys
from smartstack.airbnb_keys import AIRBNB_KEYS
from smartstack.config_errors import ConfigError, format_loc

if TYPE_CHECKING:  # pydantic is imported where a config is validated, not by a daemon
    from pydantic import BaseModel

MAX_DISTANCE = 2
SHORT_KEY = 4  # keys this short get distance 1 only: at 2 almost any short word would match


@dataclass(frozen=True)
class UnknownKey:
    loc: tuple[Any, ...]  # ('services', 'web', 'chekcs')
    suggestions: tuple[str, ...]  # known keys at the same level, closest first
    # An Airbnb key: never an error (real files carry them), the hint goes in the warning.
    airbnb: bool = False
    homes: tuple[str, ...] = ()  # an Airbnb key out of place: where Airbnb reads it


def edit_distance(a: str, b: str, limit: int = MAX_DISTANCE) -> int:
    """Damerau-Levenshtein distance (optimal string alignment): a swap of two
    neighbouring letters counts 1. Returns ``limit + 1`` as soon as it exceeds ``limit``."""
    if abs(len(a) - len(b)) > limit:
        return limit + 1
    previous2: list[int] = []
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i] + [0] * len(b)
        for j, cb in enumerate(b, 1):
            cost = 0 if ca == cb else 1
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + cost)
            if i > 1 and j > 1 and ca == b[j - 2] and a[i - 2] == cb:
                current[j] = min(current[j], previous2[j - 2] + 1)
        if min(current) > limit:
            return limit + 1
        previous2, previous = previous, current
    return min(previous[-1], limit + 1)


def suggest(key: str, known: Iterable[str]) -> tuple[str, ...]:
    """The known keys closest to ``key`` within the allowed distance (none: no typo)."""
    typed = key.lower().replace("-", "_")
    found: dict[str, int] = {}
    for candidate in known:
        limit = 1 if len(candidate) <= SHORT_KEY else MAX_DISTANCE
        distance = edit_distance(typed, candidate.lower(), limit)
        if distance <= limit:
            found[candidate] = distance
    if not found:
        return ()
    best = min(found.values())
    return tuple(sorted(k for k, d in found.items() if d == best))


@functools.cache
def known_keys(model: type[BaseModel]) -> frozenset[str]:
    """The keys a model level accepts: field names and their aliases (``global``)."""
    fields = model.model_fields
    return frozenset(fields) | {f.alias for f in fields.values() if f.alias}


_LEAVES = (str, int, float, bool, bytes, type(None))


def _may_nest(annotation: Any) -> bool:
    """Can a field of this type hold a model, dict or list? Unsure (Any, a generic): yes."""
    if annotation in _LEAVES or (isinstance(annotation, type) and issubclass(annotation, Enum)):
        return False
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return False
    if origin is typing.Annotated:
        return _may_nest(typing.get_args(annotation)[0])
    if origin is typing.Union or origin is types.UnionType:
        return any(_may_nest(arg) for arg in typing.get_args(annotation))
    return True


@functools.cache
def _field_names(model: type[BaseModel]) -> tuple[str, ...]:
    # Cached per class: a 500-service config walks thousands of model instances, and
    # pydantic's class-level model_fields is not free (SIGHUP re-reads the whole file).
    # Only the fields that may hold something to walk: a 1,000-service start walks
    # ~30,000 fields, most of them strings and numbers.
    fields = model.model_fields
    return tuple(name for name, field in fields.items() if _may_nest(field.annotation))


def find_unknown(
    model: BaseModel, ignored: frozenset[str], prefix: tuple[Any, ...] = ()
) -> list[UnknownKey]:
    """Every key no model field describes, with its suggestions; ``ignored`` keys (Airbnb
    keys we accept but do not use) are neither unknown nor suggested against."""
    from pydantic import BaseModel

    found: list[UnknownKey] = []
    _walk(model, ignored, prefix, found, (BaseModel, dict, list), airbnb_keys.daemon_of(model))
    return found


def _unknown(
    key: Any, known: frozenset[str], loc: tuple[Any, ...], daemon: str | None
) -> UnknownKey:
    hints = suggest(str(key), known)
    if key not in AIRBNB_KEYS:
        return UnknownKey((*loc, key), hints)
    homes = () if hints else airbnb_keys.elsewhere(daemon, loc, key) or ()
    return UnknownKey((*loc, key), hints, True, homes)


def _walk(
    value: Any,
    ignored: frozenset[str],
    prefix: tuple[Any, ...],
    found: list,
    nested: tuple,
    daemon: str | None,
) -> None:
    # A plain recursive walk (no generator chain): SIGHUP re-reads big edge configs whole.
    # ``nested``: (BaseModel, dict, list), a tuple: isinstance of a union is slower.
    if isinstance(value, nested[0]):
        extra = value.model_extra
        if extra:
            known = known_keys(type(value)) - ignored
            for key in sorted(extra.keys()):
                if key not in ignored:
                    found.append(_unknown(key, known, prefix, daemon))
        for name in _field_names(type(value)):
            item = getattr(value, name)
            if isinstance(item, nested):
                _walk(item, ignored, (*prefix, name), found, nested, daemon)
    elif isinstance(value, dict):
        for key, item in value.items():
            if isinstance(item, nested):
                _walk(item, ignored, (*prefix, key), found, nested, daemon)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            if isinstance(item, nested):
                _walk(item, ignored, (*prefix, index), found, nested, daemon)


def classify_unknown(
    model: BaseModel,
    known_unused: Iterable[str],
    source_of: Callable[[tuple[Any, ...]], Path],
    strict: bool = False,
    prefix: tuple[Any, ...] = (),
) -> tuple[list[str], list[str]]:
    """(error lines, warning lines) for the unknown keys of a validated config (``prefix``:
    where ``model`` sits in the file, when it is a part of it)."""
    return classify(find_unknown(model, frozenset(known_unused), prefix), source_of, strict)


def classify(
    found: Iterable[UnknownKey], source_of: Callable[[tuple[Any, ...]], Path], strict: bool
) -> tuple[list[str], list[str]]:
    """(error lines, warning lines) for unknown keys ``found``."""
    errors: list[str] = []
    warnings: list[str] = []
    for unknown in found:
        where = f"{source_of(unknown.loc)}: {format_loc(unknown.loc)}"
        names = " or ".join(f"'{s}'" for s in unknown.suggestions)
        if names and not unknown.airbnb:
            errors.append(f"{where}: unknown key, did you mean {names}?")
            continue
        hint = f"; did you mean {names}?" if names else ""
        if unknown.homes:
            hint = f"; Airbnb reads it under {' or '.join(unknown.homes)}"
        if strict:
            errors.append(f"{where}: unknown key (refused by --strict){hint}")
        else:
            warnings.append(f"{where}: unknown key, ignored{hint}")
    return errors, warnings


def require_content(doc: dict[str, Any], path: Path) -> None:
    """An empty or all-comment file is a mistake (a truncated deploy), never a config."""
    if not doc:
        raise ConfigError([f"{path}: the file is empty (no keys, or only comments)"])


def services_problem(
    path: Path, services: dict[str, Any], conf_dir: str | None, others: str = ""
) -> tuple[str | None, str | None]:
    """(error, warning) when a config has no services at all.

    A ``service_conf_dir`` that is empty today may be filled later (SIGHUP re-reads it),
    so that is a warning; a file that names no source of services is an error.
    """
    if services:
        return None, None
    if conf_dir:
        return None, f"{path}: service_conf_dir {conf_dir}: no service files yet, nothing to do"
    extra = f", {others}" if others else ""
    return (
        f"{path}: services: no services; specify a map of services in 'services' "
        f"(or 'service_conf_dir'{extra})",
        None,
    )


def refuse_unspecified(host: str) -> str:
    """``0.0.0.0`` / ``::`` mean "every address" to a listener but no client can connect
    to them: registered as a service address they send traffic nowhere."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if address.is_unspecified:
        raise ValueError(
            f"host {host!r} is the unspecified address, which no client can reach; "
            "give this machine's routable IP address or DNS name"
        )
    return host


def idna_hint(host: str) -> str:
    """A hint naming the IDNA form of a non-ASCII host name ("" for an ASCII one)."""
    if host.isascii():
        return ""
    try:
        return f": did you mean its IDNA form {host.encode('idna').decode('ascii')!r}?"
    except UnicodeError:
        return ""
