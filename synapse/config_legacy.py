"""Where users' raw HAProxy lines enter a synapse config, passed through haproxy/legacy.py.

Runs on the merged document before validation (``load``'s ``prepare`` step), so every
message names the file a service came from (``service_conf_dir``) and its key path. The
places: the top-level ``haproxy`` block's ``global``, ``defaults``, ``shared_frontend`` and
``extra_sections`` (titles and lines), and each service's ``haproxy`` ``frontend``,
``backend``, ``listen`` and ``shared_frontend`` (and the early list format's top-level
``listen``/``frontend``/``backend``). Errors are raised together as one ConfigError.
Airbnb shapes the models accept as Ruby does get their warnings here too (a hash of
``server_options``, the deprecated ``label_filter``), with the same file and key path.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from smartstack.configfile import ConfigError
from synapse.haproxy.legacy import modernize_lines, modernize_title
from synapse.haproxy.plain_spaces import plain_spaces, space_warning
from synapse.proxy_name import check_proxy_name

_SERVICE_KEYS = ("frontend", "backend", "listen", "shared_frontend")
_TOP_KEYS = ("global", "defaults", "shared_frontend")


def _fix(
    block: dict[str, Any], key: str, where: str, warnings: list[str], errors: list[str]
) -> None:
    lines = block.get(key)
    if isinstance(lines, str):
        lines = [lines]
    if not isinstance(lines, list):
        return
    result = modernize_lines(lines, f"{where}.{key}")
    block[key] = result.lines
    warnings.extend(result.warnings)
    errors.extend(result.errors)


def _fix_extra_sections(
    top: dict[str, Any], path: Path, warnings: list[str], errors: list[str]
) -> None:
    sections = top.get("extra_sections")
    if not isinstance(sections, dict):
        return
    fixed: dict[str, Any] = {}
    for title, lines in sections.items():
        if not isinstance(lines, str | list | None):
            fixed[title] = lines  # the model refuses it naming the key (list(9000) raised)
            continue
        plain, found = plain_spaces(str(title))
        if found:
            place = f"{path}: haproxy.extra_sections"
            warnings.append(space_warning(place, str(title), plain, found))
        new_title, bind = modernize_title(plain)
        body = [lines] if isinstance(lines, str) else list(lines or [])
        result = modernize_lines(body, f"{path}: haproxy.extra_sections[{str(title)!r}]")
        warnings.extend(result.warnings)
        errors.extend(result.errors)
        if bind is not None:
            warnings.append(
                f"{path}: haproxy.extra_sections: {title!r}: HAProxy 2.x refuses an address in "
                f"the section title: written as {new_title!r} with {bind!r}"
            )
            result.lines.insert(0, bind)  # after the rewrite: messages keep the file's indexes
        fixed[new_title] = result.lines
    top["extra_sections"] = fixed


def _service_blocks(
    doc: dict[str, Any], path: Path, sources: dict[str, Path]
) -> Iterator[tuple[str, dict[str, Any], bool]]:
    """(where, haproxy-like block) for every service, dict and early list format alike."""
    services = doc.get("services")
    if isinstance(services, dict):
        for name, service in services.items():
            if isinstance(service, dict):
                where = f"{sources.get(name, path)}: services.{name}"
                yield where, service, isinstance(service.get("haproxy"), dict)
    elif isinstance(services, list):
        for index, service in enumerate(services):
            if isinstance(service, dict):
                yield (
                    f"{path}: services[{index}]",
                    service,
                    isinstance(service.get("haproxy"), dict),
                )


def modernize_document(doc: dict[str, Any], path: Path, sources: dict[str, Path]) -> list[str]:
    """Rewrite HAProxy 1.x lines in place; the warnings, or ConfigError with every error."""
    warnings: list[str] = []
    errors: list[str] = []
    top = doc.get("haproxy")
    if isinstance(top, dict):
        for key in _TOP_KEYS:
            _fix(top, key, f"{path}: haproxy", warnings, errors)
        _fix_extra_sections(top, path, warnings, errors)
    for where, service, has_block in _service_blocks(doc, path, sources):
        if has_block:
            block = service["haproxy"]
            for key in _SERVICE_KEYS:
                if key in block:  # most services have none: SIGHUP runs this on all of them
                    _fix(block, key, f"{where}.haproxy", warnings, errors)
        for key in ("frontend", "backend", "listen"):  # the early list format's places
            if key in service:
                _fix(service, key, where, warnings, errors)
        for block, at in ((service.get("haproxy"), f"{where}.haproxy"), (service, where)):
            _plain_options(block, at, warnings)
    if errors:
        raise ConfigError(errors)
    return warnings


def _plain_options(block: object, where: str, warnings: list[str]) -> None:
    """``server_options`` / ``bind_options`` (HAProxy words on a server or bind line) with
    a pasted no-break space: written with a plain one, as the lines are."""
    if not isinstance(block, dict):
        return
    for key in ("server_options", "bind_options"):
        value = block.get(key)
        if isinstance(value, str) and not value.isascii():
            plain, found = plain_spaces(value)
            if found:
                warnings.append(space_warning(f"{where}.{key}", value, plain, found))
                block[key] = plain


def ignore_non_string_server_options(
    doc: dict[str, Any], path: Path, sources: dict[str, Path]
) -> list[str]:
    """Drop a service's ``server_options`` given as a hash or list, with a warning.

    Ruby synapse ignores such a value (Airbnb's own minimum fixture has one); refusing
    the whole config for it would stop a migration on a key that never had an effect.
    """
    services = doc.get("services")
    if isinstance(services, dict):
        blocks = [(name, s) for name, s in services.items() if isinstance(s, dict)]
    elif isinstance(services, list):
        blocks = [(i, s) for i, s in enumerate(services) if isinstance(s, dict)]
    else:
        return []
    listed = isinstance(services, list)
    warnings = []
    for name, service in blocks:
        for nested, block in ((True, service.get("haproxy")), (False, service)):
            if not isinstance(block, dict) or not isinstance(
                block.get("server_options"), dict | list
            ):
                continue  # (names are built only here: SIGHUP runs this on every service)
            where, source = (f"services[{name}]", path) if listed else (
                f"services.{name}", sources.get(name, path))  # fmt: skip
            key = f"{where}.haproxy" if nested else where
            kind = "a hash" if isinstance(block.pop("server_options"), dict) else "a list"
            warnings.append(f"{source}: {key}.server_options: {kind}, not a string: ignored")
    return warnings


def singular_filter_warnings(
    doc: dict[str, Any], path: Path, sources: dict[str, Path]
) -> list[str]:
    """A warning per ``discovery.label_filter``, Airbnb's deprecated key (Ruby warns too),
    which the model merges into ``label_filters`` (synapse.discovery_config)."""
    warnings = []
    for where, service, _ in _service_blocks(doc, path, sources):
        pending = [(f"{where}.{key}", service.get(key)) for key in ("discovery", "discovery_multi")]
        while pending:  # (bounded: a multi's children are a finite tree of dicts)
            place, block = pending.pop()
            if not isinstance(block, dict):
                continue
            if "label_filter" in block:
                warnings.append(f"{place}.label_filter: deprecated (as in Ruby synapse): "
                                "merged into label_filters; write it there")  # fmt: skip
            children = block.get("watchers")
            if isinstance(children, dict):
                pending += [(f"{place}.watchers.{n}", c) for n, c in children.items()]
    return warnings


def prepare_document(doc: dict[str, Any], path: Path, sources: dict[str, Path]) -> list[str]:
    # HAProxy 1.x-era titles and directives are rewritten or refused (haproxy/legacy.py).
    refuse_unusable_service_names(doc, path, sources)
    return (
        ignore_non_string_server_options(doc, path, sources)
        + singular_filter_warnings(doc, path, sources)
        + modernize_document(doc, path, sources)
    )


def refuse_unusable_service_names(
    doc: dict[str, Any], path: Path, sources: dict[str, Path]
) -> None:
    """A service name HAProxy cannot take is an error naming its file (a service_conf_dir
    file's name is its service's): caught here, not by `haproxy -c` without the key."""
    services = doc.get("services")
    problems = []
    for name in services if isinstance(services, dict) else ():
        if not names_a_proxy(services[name]):
            continue
        try:
            check_proxy_name(str(name))
        except ValueError as exc:
            problems.append(f"{sources.get(name, path)}: services: {exc}")
    if problems:
        raise ConfigError(problems)


def names_a_proxy(service: object) -> bool:
    """Whether the default layout writes this service's name as an HAProxy proxy name
    (``haproxy.default_layout``): nothing of a disabled one; `frontend <name>` only with
    `port` given (else backend only); `backend <name>` only without `backend_name` (which
    its own validator checks). A file_output-only or backend-only service may keep a name
    HAProxy could not take."""
    hap = service.get("haproxy") if isinstance(service, dict) else None
    if not isinstance(hap, dict):
        return True
    disabled = hap.get("disabled")
    if disabled is True or str(disabled).lower() in ("true", "1", "yes", "on"):
        return False
    return "port" in hap or hap.get("backend_name") is None


# Keys of the early synapse list format that belong in the per-service haproxy block.
_LEGACY_HAPROXY_KEYS = {
    "local_port": "port",
    "server_options": "server_options",
    "listen": "listen",
    "frontend": "frontend",
    "backend": "backend",
}


def services_from_list(value: object) -> object:
    """Accept the early synapse format: a list of services with 'name' and 'local_port'
    (``SynapseConfig.services``, before validation); any other value as it is."""
    if not isinstance(value, list):
        return value
    services: dict[str, object] = {}
    for index, entry in enumerate(value):
        if not isinstance(entry, dict) or not entry.get("name"):
            raise ValueError(f"services[{index}] in the list format needs a 'name'")
        entry = dict(entry)
        name = str(entry.pop("name"))
        block = dict(entry.get("haproxy") or {})
        for old, new in _LEGACY_HAPROXY_KEYS.items():
            if old in entry:
                block.setdefault(new, entry.pop(old))
        entry["haproxy"] = block
        if names_a_proxy(entry):
            check_proxy_name(name)
        services[name] = entry
    return services
