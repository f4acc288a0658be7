"""Keys given twice in one mapping of a config file (review s31).

YAML and JSON parsers keep the last of two equal keys without a word, as Ruby's do: a
service name repeated under ``services:`` silently lost the first block. The loader
says so instead (a warning, an error under ``--strict``), with both line numbers:
``services.web is given twice (lines 3 and 9): the second wins``.

YAML: the file is composed into nodes (which know their lines), the mappings' keys
are checked, then the nodes are constructed as ``yaml.safe_load`` would. JSON: the C
decoder notes that some object has a repeated key (``object_pairs_hook``, only counting);
then the text is read again as YAML, which JSON is, for where.
"""

from __future__ import annotations

import json
from typing import Any

from smartstack.config_errors import format_loc

Loc = tuple[Any, ...]


def yaml_load(text: str, found: list[tuple[Loc, int, int]] | None) -> Any:
    """``yaml.safe_load(text)``; with ``found``, (key path, first line, second line) of
    every key given twice is added to it. YAMLError as safe_load."""
    import yaml

    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        if found is not None:
            _walk(loader, node, (), found, set())
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _walk(
    loader: Any, node: Any, loc: Loc, found: list[tuple[Loc, int, int]], seen: set[int]
) -> None:
    import yaml

    if id(node) in seen:  # an alias: its node was walked where it was anchored
        return
    seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        lines: dict[Any, int] = {}
        for key, value in node.value:
            name = key.value if isinstance(key, yaml.ScalarNode) else None
            if name is not None and name != "<<":  # (merge keys: YAML's own rule)
                line = key.start_mark.line + 1
                same = _as_parsed(loader, key)  # ("80" and 80 are two keys; yes and true one)
                if same in lines:
                    found.append(((*loc, name), lines[same], line))
                lines[same] = line
            _walk(loader, value, (*loc, name if name is not None else "?"), found, seen)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _walk(loader, item, (*loc, index), found, seen)


def _as_parsed(loader: Any, key: Any) -> Any:
    """A scalar key as the parser keeps it (its type and value)."""
    try:
        value = loader.construct_object(key)
        hash(value)
    except Exception:  # (a key the constructor refuses: safe_load says so next)
        return ("?", key.tag, key.value)
    return (type(value), value)


class _Repeated:
    """``json.loads`` object_pairs_hook: a dict, noting whether any object repeats a key."""

    def __init__(self) -> None:
        self.seen = False

    def __call__(self, pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        out = dict(pairs)
        if len(out) != len(pairs):
            self.seen = True
        return out


def json_load(text: str, found: list[tuple[Loc, int, int]] | None) -> Any:
    """``json.loads(text)``; with ``found``, the keys given twice, as ``yaml_load``."""
    if found is None:
        return json.loads(text)
    repeated = _Repeated()
    doc = json.loads(text, object_pairs_hook=repeated)
    if repeated.seen:
        import yaml

        try:
            yaml_load(text, found)
        except yaml.YAMLError:  # (JSON that YAML 1.1 reads otherwise: lines unknown)
            found.append(((), 0, 0))
    return doc


def describe(where: str, loc: Loc, first: int, second: int, prefix: Loc = ()) -> str:
    """One line for a key given twice in the file ``where``."""
    if not first:
        return f"{where}: a key is given twice (where, YAML cannot tell): the second wins"
    key = format_loc((*prefix, *loc))
    lines = f"on line {first}" if first == second else f"(lines {first} and {second})"
    return f"{where}: {key} is given twice {lines}: the second wins"
