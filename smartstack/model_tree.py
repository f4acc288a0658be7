"""A validated config as a tagged, JSON-able tree, and back (``smartstack.modelbase``).

The validating child walks the pydantic models and writes each as
``{"__model__": "module:QualName", "f": {field: value}, "s": [fields set], "x": {extras}}``;
the daemon imports the same modules on the plain base and rebuilds instances of the same
classes, with the same fields set (``has_frontend`` reads it) and unknown keys. A sub-model
that ``smartstack.config_share`` shares (a section left at its defaults) is
``{"__model__": ..., "shared": 1}`` and is one instance per class again on this side.
Tuples, sets, frozensets, enums, dates and dicts whose keys JSON cannot carry as they are
are tagged too; anything else is refused (TypeError), so nothing is silently changed.
"""

from __future__ import annotations

import datetime
import enum
import importlib
from typing import Any

_MODEL = "__model__"
_TAGS = ("__tuple__", "__set__", "__frozenset__", "__dict__", "__enum__", "__date__")
_SCALARS = (str, int, float, bool, type(None))
_SCALAR_TYPES = frozenset(_SCALARS)
_NO_DEFAULT = object()


def _qualname(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def _defaults(cls: Any) -> dict[str, Any]:
    """Field -> its default value, for the fields whose value can be left out of a tree."""
    out = {}
    for name, field in cls.model_fields.items():
        if not field.is_required():
            out[name] = field.get_default(call_default_factory=True)
    return out


def emit(value: Any, shared: dict[type, Any] | None = None) -> Any:
    """``value`` (validated pydantic models, containers, scalars) as a tagged tree.
    ``shared``: class -> the instance ``config_share`` shares (emitted by reference).
    A field whose value is its default (same type, equal) is left out: a service's
    config is mostly defaults, and the rebuild fills them in again."""
    from pydantic import BaseModel

    shared = shared if shared is not None else {}
    defaults: dict[type, dict[str, Any]] = {}

    def walk(value: Any) -> Any:
        if type(value) in _SCALAR_TYPES:
            return value
        if isinstance(value, BaseModel):
            cls = type(value)
            if shared.get(cls) is value:
                return {_MODEL: _qualname(cls), "shared": 1}
            known = defaults.get(cls)
            if known is None:
                known = defaults[cls] = _defaults(cls)
            fields = {}
            for name, item in value.__dict__.items():
                default = known.get(name, _NO_DEFAULT)
                if type(item) in _SCALAR_TYPES:
                    if type(item) is not type(default) or item != default:
                        fields[name] = item
                elif (  # a model is kept: it may be a shared instance
                    isinstance(item, BaseModel)
                    or type(item) is not type(default)
                    or item != default
                ):
                    fields[name] = walk(item)
            node: dict[str, Any] = {_MODEL: _qualname(cls), "f": fields}
            node["s"] = sorted(value.__pydantic_fields_set__)
            if value.__pydantic_extra__:
                node["x"] = walk(dict(value.__pydantic_extra__))
            return node
        if isinstance(value, list):
            return [walk(v) for v in value]
        if isinstance(value, dict):
            if all(type(k) is str and not k.startswith("__") for k in value):
                return {k: walk(v) for k, v in value.items()}
            return {"__dict__": [[walk(k), walk(v)] for k, v in value.items()]}
        if isinstance(value, enum.Enum):
            return {"__enum__": _qualname(type(value)), "v": walk(value.value)}
        if isinstance(value, tuple):
            return {"__tuple__": [walk(v) for v in value]}
        if isinstance(value, frozenset | set):
            tag = "__frozenset__" if isinstance(value, frozenset) else "__set__"
            return {tag: [walk(v) for v in value]}
        if isinstance(value, datetime.date):
            return {"__date__": value.isoformat(), "t": type(value).__name__}
        if isinstance(value, _SCALARS):  # a subclass of str, int, ...
            return value
        raise TypeError(f"a config value of type {type(value).__name__} cannot be handed over")

    return walk(value)


class Rebuilder:
    """Tagged trees back into objects: models of the classes the tree names (on whatever
    base ``smartstack.modelbase`` handed out in this process)."""

    def __init__(self) -> None:
        self._classes: dict[str, type] = {}
        self._shared: dict[type, Any] = {}

    def cls(self, name: str) -> type:
        found = self._classes.get(name)
        if found is None:
            module, _, qualname = name.partition(":")
            found = importlib.import_module(module)
            for part in qualname.split("."):
                found = getattr(found, part)
            assert isinstance(found, type)
            self._classes[name] = found
        return found

    def build(self, tree: Any) -> Any:
        if type(tree) in _SCALAR_TYPES:
            return tree
        if type(tree) is list:
            return [v if type(v) in _SCALAR_TYPES else self.build(v) for v in tree]
        if _MODEL in tree:
            return self._model(tree)
        if len(tree) <= 2 and any(tag in tree for tag in _TAGS):
            return self._tagged(tree)
        return {k: v if type(v) in _SCALAR_TYPES else self.build(v) for k, v in tree.items()}

    def _model(self, node: dict[str, Any]) -> Any:
        cls = self.cls(node[_MODEL])
        if node.get("shared"):
            if cls not in self._shared:
                self._shared[cls] = cls()
            return self._shared[cls]
        given = node["f"]
        scalars = _SCALAR_TYPES
        fields = {n: v if type(v) in scalars else self.build(v) for n, v in given.items()}
        extra = self.build(node["x"]) if "x" in node else {}
        return cls.model_construct(_fields_set=node["s"], **fields, **extra)  # type: ignore[attr-defined]

    def _tagged(self, node: dict[str, Any]) -> Any:
        if "__tuple__" in node:
            return tuple(self.build(v) for v in node["__tuple__"])
        if "__set__" in node:
            return {self.build(v) for v in node["__set__"]}
        if "__frozenset__" in node:
            return frozenset(self.build(v) for v in node["__frozenset__"])
        if "__dict__" in node:
            return {self.build(k): self.build(v) for k, v in node["__dict__"]}
        if "__enum__" in node:
            return self.cls(node["__enum__"])(self.build(node["v"]))
        kind = datetime.datetime if node.get("t") == "datetime" else datetime.date
        return kind.fromisoformat(node["__date__"])
