"""One shared instance of each sub-model left at its defaults, instead of one per entry.

A synapse service's config holds about ten pydantic models, half of them sections the
entry does not write (``file_output``, ``decode``, ``retry_policy``, ``routes``,
``health_check``): each an object, its ``__dict__``, an empty fields-set and an empty
extras dict, ~0.6 KB. At 1,000 services that is ~3 MB of equal objects (issue 15).
``share_defaults`` swaps each such sub-model for one instance per model class.

Only models equal to their class's defaults in every respect pydantic keeps (values,
fields set, extras, private attributes) are swapped, so the config reads, compares
and dumps as before. Config models are not changed after loading; the one validator
that writes into a service's model (synapse's top-level ``use_nerve_weights``) writes
into ``haproxy``: the caller keeps that one its own (``keep``).
"""

from __future__ import annotations

from collections.abc import Collection
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # only a validating process shares (a model validator calls it)
    from pydantic import BaseModel

_SHARED: dict[type[BaseModel], BaseModel | None] = {}


def _default(cls: type[BaseModel]) -> BaseModel | None:
    """The shared default instance of ``cls`` (None: it cannot be built without input)."""
    from pydantic import ValidationError

    if cls not in _SHARED:
        try:
            _SHARED[cls] = cls()
        except ValidationError:  # a required field: never at its defaults
            _SHARED[cls] = None
    return _SHARED[cls]


def _at_defaults(model: BaseModel, default: BaseModel) -> bool:
    return (
        not model.model_fields_set
        and not model.__pydantic_extra__
        and model.__pydantic_private__ == default.__pydantic_private__
        and model.__dict__ == default.__dict__
    )


def share_defaults(model: BaseModel, keep: Collection[str] = ()) -> None:
    """Replace ``model``'s sub-models (recursively) that are at their defaults by the shared
    instance of their class. Written into ``__dict__``: the fields set stays as it was.
    ``keep``: fields of ``model`` that stay its own (something writes into them later);
    their own sub-models are shared."""
    from pydantic import BaseModel

    for name, value in model.__dict__.items():
        if not isinstance(value, BaseModel):
            continue
        default = _default(type(value))
        if name in keep:
            share_defaults(value)
        elif default is not None and value is not default and _at_defaults(value, default):
            model.__dict__[name] = default
        elif value is not default:
            share_defaults(value)
