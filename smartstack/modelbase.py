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
