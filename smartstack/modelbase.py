"""Where config modules take their model base from: pydantic, or pydantic-free stand-ins.

Every config module imports ``ConfigModel``, ``Field``, ``field_validator``,
``model_validator``, ``ConfigDict`` and ``ValidationError`` from here, not from pydantic.
By default they are pydantic's (``smartstack.model_pydantic``). A synapse daemon validates
its config in a short-lived child process (``synapse.config_child``) and holds the result
as plain objects of the same classes (``smartstack.model_plain``): pydantic and the schema
machinery it builds cost ~9 MB of RSS in a process that never validates (issue 15). So
there is one definition per model; which base it gets is fixed the first time a name is
taken from here, and ``select_plain()`` must come before that.
"""

from __future__ import annotations

from typing import Any

_NAMES = frozenset(
    {"ConfigModel", "Field", "field_validator", "model_validator", "ConfigDict", "ValidationError"}
)
_plain: bool | None = None  # None: no name handed out yet


def select_plain() -> None:
    """Hand out the pydantic-free stand-ins from now on (before any config module loads)."""
    global _plain
    if _plain is False:
        raise RuntimeError("config models were already built on pydantic")
    _plain = True


def is_plain() -> bool:
    """Whether config models are the plain stand-ins (nothing here validates)."""
    return bool(_plain)


def same_model(old: Any, new: Any) -> bool:
    """Whether two config values are the same config: equal, and with the same fields
    given, recursively. ``==`` ignores which fields were given, yet some settings read it
    (``has_frontend`` is ``"port" in model_fields_set``): ``port: null`` and no port are
    equal but not the same. Identity first: most of a reloaded config is kept objects."""
    if old is new:
        return True
    if type(old) is not type(new):
        return False
    given = getattr(old, "model_fields_set", None)
    if given is not None:  # a model, on either base
        if given != new.model_fields_set or not same_model(old.model_extra, new.model_extra):
            return False
        return all(same_model(getattr(old, n), getattr(new, n)) for n in type(old).model_fields)
    if isinstance(old, dict):
        return old.keys() == new.keys() and all(same_model(v, new[k]) for k, v in old.items())
    if isinstance(old, list | tuple):
        return len(old) == len(new) and all(map(same_model, old, new))
    return bool(old == new)


def __getattr__(name: str) -> Any:
    global _plain
    if name not in _NAMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if _plain:
        from smartstack import model_plain as source
    else:
        _plain = False
        from smartstack import model_pydantic as source  # type: ignore[no-redef]
    value = getattr(source, name)
    globals()[name] = value  # the next import of it is a plain attribute lookup
    return value
