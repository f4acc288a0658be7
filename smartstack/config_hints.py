"""A required key reported missing while the block holds a near miss of it.

``zk_host`` for ``zk_hosts``, ``url`` for ``uri``: the model refuses the block for the
missing key before the unknown-key walk (smartstack.config_check) could name the typo,
so the error said only "needs 'zk_hosts'" (review s44 newuser). This looks up the block
in the parsed document and the model level it is validated against, and names the key
that was probably meant.
"""

from __future__ import annotations

import re
import types
import typing
from typing import TYPE_CHECKING, Any

from smartstack.config_check import known_keys, suggest

if TYPE_CHECKING:
    from pydantic import BaseModel

_QUOTED_KEY = re.compile(r"'([a-z][a-z0-9_]*)'")


def _model_or_container(annotation: Any) -> Any:
    """The model, dict or list an annotation holds (Optional, Annotated and unions unwrapped:
    the first such member), or None."""
    from pydantic import BaseModel

    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _model_or_container(typing.get_args(annotation)[0])
    if origin is typing.Union or origin is types.UnionType:
        for arg in typing.get_args(annotation):
            if (found := _model_or_container(arg)) is not None:
                return found
        return None
    if origin in (dict, list):
        return annotation
    is_model = isinstance(annotation, type) and issubclass(annotation, BaseModel)
    return annotation if is_model else None


def model_at(model: type[BaseModel], loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The model class that validates the block at ``loc`` (None: not a model, or unsure)."""
    from pydantic import BaseModel

    current: Any = model
    for part in loc:
        origin = typing.get_origin(current)
        if origin is dict or origin is list:
            current = _model_or_container(typing.get_args(current)[-1 if origin is dict else 0])
        elif isinstance(current, type) and issubclass(current, BaseModel):
            by_alias = {f.alias: f for f in current.model_fields.values() if f.alias}
            field = current.model_fields.get(str(part)) or by_alias.get(str(part))
            current = _model_or_container(field.annotation) if field else None
        else:
            return None
        if current is None:
            return None
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _block(doc: Any, loc: tuple[Any, ...]) -> dict[str, Any] | None:
    for part in loc:
        in_dict = isinstance(doc, dict) and part in doc
        in_list = isinstance(doc, list) and isinstance(part, int) and 0 <= part < len(doc)
        if not (in_dict or in_list):
            return None
        doc = doc[part]
    return doc if isinstance(doc, dict) else None


def near_miss(model: type[BaseModel], doc: Any, error: dict[str, Any]) -> str:
    """ "; 'zk_host' given: did you mean 'zk_hosts'?" for a missing key the block holds
    misspelt (only a key the block's model does not know), else ""."""
    loc = tuple(error["loc"])
    if error["type"] == "missing" and loc:
        loc, wanted = loc[:-1], [str(loc[-1])]
    elif error["type"] == "value_error":
        wanted = _QUOTED_KEY.findall(error["msg"])
    else:
        return ""
    block, level = _block(doc, loc), model_at(model, loc)
    if block is None or level is None:
        return ""
    known = known_keys(level)
    # Only a key this block's model knows is meant here: a quoted value ("got 'abc'") is no
    # key, and a validator that checks another block (nerve's docker.service_defaults, checked
    # at docker) names keys of that block ("'etcd_endpoints' given: did you mean
    # 'etcd_endpoints'?" for one put a level too high, review s44 cr-small).
    wanted = [key for key in wanted if key in known]
    if not wanted:
        return ""
    hints = [
        f"'{key}' given: did you mean {' or '.join(repr(m) for m in meant)}?"
        for key in block
        if isinstance(key, str) and key not in known and (meant := suggest(key, wanted))
    ]
    return f"; {'; '.join(hints)}" if hints else ""


def one_service_file(model: type[BaseModel], doc: Any, path: Any) -> str | None:
    """A line for a file that holds one service's block where the main config was expected
    (a ``service_conf_dir`` file given to ``-c``): before, only "instance_id: required key
    is missing" (review s44 newuser). None when the file does not look like one."""
    service = model_at(model, ("services", "name"))
    if not isinstance(doc, dict) or doc.get("services") or service is None:
        return None
    main, theirs = known_keys(model), known_keys(service)
    keys = [k for k in doc if isinstance(k, str) and k in theirs and k not in main]
    if len(keys) < 2:
        return None
    return (
        f"{path}: this looks like one service's block (its keys {', '.join(keys[:4])} are a "
        "service's): the main config lists services under 'services:', or reads files like "
        "this one from 'service_conf_dir'"
    )
