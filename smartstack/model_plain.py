"""Pydantic-free stand-ins for the config models of a process that never validates.

``smartstack.modelbase`` hands these out to a synapse daemon that selected them: its
config was validated by pydantic in a child process and comes back pickled
(``synapse.config_child``): unpickled into instances of the very same classes on this base.
What the daemon uses of pydantic's API is here, with pydantic's meaning: fields collected
from the annotations over the MRO (not ClassVar), ``Field(...)`` defaults, ``frozen``,
``model_fields``, ``model_fields_set``, ``model_extra``, ``model_copy``, ``model_dump``,
``model_construct``, ``==``, ``hash``, ``repr``. Validators are dropped: nothing here
checks a value (``ValidationError`` exists only so that ``except`` clauses still read).
"""

from __future__ import annotations

import copy as _copy
from collections.abc import Callable, Iterable
from typing import Any, ClassVar

ConfigDict = dict
_MISSING: Any = object()
_DROPPED = object()  # what a validator decorator leaves; removed from the class
_FACTORY = object()  # in a class's template: the field's default comes from its factory
_FIELD_SETS: dict[frozenset[str], frozenset[str]] = {}  # one object per distinct fields set


class ValidationError(ValueError):
    """Never raised here: the plain base validates nothing."""


class StaleModel(ValueError):
    """A pickled config names fields this process's class does not have (or lacks some it
    has): the validating child ran newer (or older) code than this daemon, as after a
    package upgrade. Using it would fail later (KeyError, AttributeError): refuse it."""


class FieldInfo:
    __slots__ = ("alias", "default", "default_factory")

    def __init__(self, default: Any, default_factory: Callable[[], Any] | None, alias: str | None):
        self.default = default
        self.default_factory = default_factory
        self.alias = alias

    def is_required(self) -> bool:
        return self.default is _MISSING and self.default_factory is None

    def get_default(self) -> Any:
        if self.default_factory is not None:
            return self.default_factory()
        return _own(self.default)


def _own(default: Any) -> Any:
    """A mutable default copied per instance, as pydantic does (never shared)."""
    return _copy.copy(default) if isinstance(default, list | dict | set) else default


def Field(
    default: Any = _MISSING,
    *,
    default_factory: Callable[[], Any] | None = None,
    alias: str | None = None,
    **_constraints: Any,
) -> Any:
    """The default (or its factory) and the alias; constraints were checked by pydantic."""
    return FieldInfo(default, default_factory, alias)


def field_validator(*_fields: str, **_options: Any) -> Callable[[Any], Any]:
    return lambda _function: _DROPPED


def model_validator(**_options: Any) -> Callable[[Any], Any]:
    return lambda _function: _DROPPED


def _interned(names: Iterable[str]) -> frozenset[str]:
    key = frozenset(names)
    return _FIELD_SETS.setdefault(key, key)


def _is_classvar(annotation: Any) -> bool:
    text = annotation if isinstance(annotation, str) else repr(annotation)
    return text.startswith(("ClassVar", "typing.ClassVar"))


class ConfigModel:
    """A config object without validation; see the module docstring."""

    __slots__ = ("__dict__", "_extra", "_fields_set")
    model_config: ClassVar[dict[str, Any]] = {"extra": "allow", "populate_by_name": True}
    model_fields: ClassVar[dict[str, FieldInfo]] = {}
    _aliases: ClassVar[dict[str, str]] = {}  # alias -> field name
    _template: ClassVar[dict[str, Any]] = {}
    _factories: ClassVar[list[tuple[str, Callable[[], Any]]]] = []
    _mutable: ClassVar[list[str]] = []  # fields whose default is copied per instance

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name, value in list(vars(cls).items()):
            if value is _DROPPED:
                delattr(cls, name)
        fields: dict[str, FieldInfo] = {}
        for base in reversed(cls.__bases__):  # each base's own fields are its MRO's already
            fields.update(getattr(base, "model_fields", {}))
        for name, annotation in vars(cls).get("__annotations__", {}).items():
            if _is_classvar(annotation) or name.startswith("_"):
                continue
            default = vars(cls).get(name, _MISSING)
            if not isinstance(default, FieldInfo):
                default = FieldInfo(default, None, None)
            fields[name] = default
        for name in vars(cls).get("__annotations__", {}):
            if name in fields and name in vars(cls):
                delattr(cls, name)  # as pydantic: a field is read from the instance
        cls.model_fields = fields
        cls._aliases = {f.alias: name for name, f in fields.items() if f.alias}
        # model_construct's start: defaults as they are, factories called per instance
        cls._template = {n: _FACTORY if f.default_factory else f.default for n, f in fields.items()}
        cls._factories = [(n, f.default_factory) for n, f in fields.items() if f.default_factory]
        cls._mutable = [n for n, v in cls._template.items() if _own(v) is not v]
        if cls.model_config.get("frozen"):
            cls.__hash__ = ConfigModel._frozen_hash  # type: ignore[method-assign]
        else:
            cls.__hash__ = None  # type: ignore[assignment]

    def __init__(self, **data: Any) -> None:
        given: dict[str, Any] = {}
        extra: dict[str, Any] = {}
        for key, value in data.items():
            name = self._aliases.get(key, key)
            if name in self.model_fields:
                given[name] = value
            else:
                extra[key] = value
        values: dict[str, Any] = {}  # in field order: equal objects hash alike
        for name, info in self.model_fields.items():
            if name in given:
                values[name] = given[name]
            elif info.is_required():
                raise TypeError(f"{type(self).__name__}: {name!r} is required")
            else:
                values[name] = info.get_default()
        self._set_state(values, _interned(given), extra or None)

    def _set_state(self, values: dict[str, Any], given: frozenset[str], extra: Any) -> None:
        object.__setattr__(self, "__dict__", values)
        object.__setattr__(self, "_fields_set", given)
        object.__setattr__(self, "_extra", extra)

    @classmethod
    def model_construct(cls, _fields_set: Iterable[str] | None = None, **values: Any) -> Any:
        """An instance from values as they are (pydantic's meaning: nothing is checked)."""
        self = cls.__new__(cls)
        given = _interned(values if _fields_set is None else _fields_set)
        template = cls._template  # every field, in order: update() keeps the order
        fields = template.copy()
        fields.update(values)
        extra = None
        if len(fields) > len(template):
            extra = {k: fields.pop(k) for k in [k for k in values if k not in template]}
        for name, factory in cls._factories:
            if fields[name] is _FACTORY:
                fields[name] = factory()
        for name in cls._mutable:
            if name not in values:
                fields[name] = _own(fields[name])
        self._set_state(fields, given, extra)
        return self

    # pickle: the state in pydantic's shape, so that a config pickled by the validating
    # child (pydantic) loads as instances of the same classes here (synapse.config_child)
    def __getstate__(self) -> dict[str, Any]:
        return {
            "__dict__": self.__dict__,
            "__pydantic_extra__": self._extra,
            "__pydantic_fields_set__": set(self._fields_set),
            "__pydantic_private__": None,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        values = state["__dict__"]
        if values.keys() != self.model_fields.keys():  # a set comparison, in C
            raise StaleModel(_stale(type(self), values))
        given = _interned(state["__pydantic_fields_set__"])
        self._set_state(values, given, state.get("__pydantic_extra__") or None)

    def __copy__(self) -> Any:  # copy.copy: its own __dict__, as pydantic's copy
        return self.model_copy()

    @property
    def model_fields_set(self) -> frozenset[str]:
        return self._fields_set  # read per service per render: no copy (nobody writes it)

    @property
    def model_extra(self) -> dict[str, Any] | None:
        return self._extra if self._extra is not None else {}

    def __getattr__(self, name: str) -> Any:
        extra = object.__getattribute__(self, "_extra")
        if extra is not None and name in extra:
            return extra[name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __setattr__(self, name: str, value: Any) -> None:
        if self.model_config.get("frozen"):
            raise TypeError(f"{type(self).__name__} is frozen")
        if name not in self.model_fields:
            raise AttributeError(f"{type(self).__name__} has no field {name!r}")
        self.__dict__[name] = value
        object.__setattr__(self, "_fields_set", _interned(self._fields_set | {name}))

    def __eq__(self, other: object) -> bool:
        if self is other:
            return True
        if type(other) is not type(self):
            return NotImplemented
        assert isinstance(other, ConfigModel)
        return self.__dict__ == other.__dict__ and (self._extra or {}) == (other._extra or {})

    def _frozen_hash(self) -> int:
        return hash((type(self), *self.__dict__.values()))

    def __repr__(self) -> str:
        items = [*self.__dict__.items(), *(self._extra or {}).items()]
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in items)})"

    def model_copy(self, *, update: dict[str, Any] | None = None, deep: bool = False) -> Any:
        if deep:
            raise NotImplementedError("a deep copy of a plain config model")
        copy = type(self).__new__(type(self))
        values, extra = dict(self.__dict__), dict(self._extra or {})
        for key, value in (update or {}).items():
            (values if key in self.model_fields else extra)[key] = value
        given = _interned(self._fields_set | set(update or ()))
        copy._set_state(values, given, extra or None)
        return copy

    def model_dump(
        self,
        *,
        by_alias: bool = False,
        exclude_unset: bool = False,
        exclude: Iterable[str] | None = None,
        include: Iterable[str] | None = None,
    ) -> dict[str, Any]:
        """Fields (and unknown keys) as plain data, nested models as dicts; ``include``:
        only these fields (and no unknown keys), as pydantic's."""
        skip = set(exclude or ())
        only = set(include) if include is not None else None
        out: dict[str, Any] = {}
        for name, value in self.__dict__.items():
            if name in skip or (exclude_unset and name not in self._fields_set):
                continue
            if only is not None and name not in only:
                continue
            key = (self.model_fields[name].alias or name) if by_alias else name
            out[key] = _dumped(value, by_alias, exclude_unset)
        for key, value in (self._extra or {}).items():
            if key not in skip and only is None:
                out[key] = _dumped(value, by_alias, exclude_unset)
        return out


def _stale(cls: type, values: dict[str, Any]) -> str:
    added = sorted(values.keys() - cls.model_fields.keys())  # type: ignore[attr-defined]
    gone = sorted(cls.model_fields.keys() - values.keys())  # type: ignore[attr-defined]
    return (
        f"the validated config does not fit this process's {cls.__name__} (fields new:"
        f" {', '.join(added) or '-'}; gone: {', '.join(gone) or '-'}): the code changed"
        " since it started (an upgrade?)"
    )


def _dumped(value: Any, by_alias: bool, exclude_unset: bool) -> Any:
    if isinstance(value, ConfigModel):
        return value.model_dump(by_alias=by_alias, exclude_unset=exclude_unset)
    if isinstance(value, dict):
        return {k: _dumped(v, by_alias, exclude_unset) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_dumped(v, by_alias, exclude_unset) for v in value)
    return value


BaseModel = ConfigModel  # for isinstance checks that name pydantic's base
