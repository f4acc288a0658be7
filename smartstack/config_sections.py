"""Validating a config file's services one at a time, and keeping each result.

A SIGHUP re-reads the whole file, and an edge has hundreds of services of which one
changed: validating and walking all of them for unknown keys again cost ~100 ms at 500
services. ``SectionCache`` validates each entry of the document's ``services`` mapping on
its own (with the model of one entry) and keeps the result beside the entry as parsed
(after ``prepare``), its source file, the document's ``context`` for it and ``strict``.
The next load hands back the very same model object for an entry that compares equal,
with its unknown-key lines, and validates only the others. ``service_conf_dir`` files
(one per service) are parsed again only when their text changed. The rest of the document is
validated with those objects in place (pydantic takes a model instance as it is).

Same outcome as validating the whole document: an entry that fails on its own makes the
caller validate the whole document (its errors, phrased as always); the section's
unknown-key lines come right after the top level's own, where the walk over the whole
config has them when the section is the model's first field (synapse's ``services``).
``context`` names what outside the
entry its validation depends on (synapse: the top-level ``use_nerve_weights``, which a
model validator writes into every service).
"""

from __future__ import annotations

import copy
import hashlib
import json
import marshal
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from smartstack import config_check

if TYPE_CHECKING:  # a daemon on plain models never validates: no pydantic there
    from pydantic import BaseModel

M = TypeVar("M", bound="BaseModel")


def canonical(raw: Any) -> bytes | str:
    """``raw`` in a form that compares equal only for the same values of the same types.

    ``==`` takes 1, 1.0 and True for one another, so editing ``timeout_queue: 1`` into
    ``true`` kept a model that validation would refuse. marshal (C, ~1.3 ms for 500
    services) writes each type with its own code; version 0 neither shares references nor
    marks interned strings, so equal documents give equal bytes however they were built.
    What marshal cannot write (YAML dates) falls back to repr, which names the types too."""
    try:
        return marshal.dumps(raw, 0)
    except ValueError:
        return repr(raw)


@dataclass(frozen=True)
class _Entry:
    raw: bytes | str  # the entry as parsed and prepared, in its canonical form
    key: tuple[Any, ...]  # (source file, context, strict)
    model: BaseModel
    errors: tuple[str, ...]  # its unknown-key lines
    warnings: tuple[str, ...]


class SectionCache:
    """Per-entry validation of one mapping of a config document (see the module docstring)."""

    def __init__(
        self,
        entry_model: type[BaseModel],
        section: str = "services",
        context: Callable[[dict[str, Any]], Any] = lambda doc: None,
    ) -> None:
        self.entry_model = entry_model
        self.section = section
        self.context = context
        self._entries: dict[str, _Entry] = {}
        self._documents: dict[Path, tuple[str, str | None, Any]] = {}
        self.repeated: dict[Path, list[str]] = {}  # a kept file's keys given twice: lines
        self.validated = 0  # entries validated (not taken from the cache): for tests
        self.parsed = 0  # service_conf_dir files parsed (not taken from the cache)

    def digests(self) -> dict[str, str]:
        """Entry name -> a digest of what its validated model was made from (the entry as
        parsed, its source, context and strict): equal digests, equal models. Entries of the
        last load that went the per-entry way (none when the whole document was validated)."""
        return {
            name: hashlib.blake2b(repr((e.raw, e.key)).encode(), digest_size=16).hexdigest()
            for name, e in self._entries.items()
        }

    # --- service_conf_dir files: parsed once per text ----------------------------------

    def document(self, path: Path, text: str) -> dict[str, Any] | None:
        """A fresh copy of ``path``'s parse when its text is as last time (else None).
        Fresh: the loader rewrites documents in place (``prepare``)."""
        kept = self._documents.get(path)
        if kept is None or kept[0] != text:
            return None
        as_json, parsed = kept[1], kept[2]
        return json.loads(as_json) if as_json is not None else copy.deepcopy(parsed)

    def keep_document(self, path: Path, text: str, doc: dict[str, Any]) -> None:
        self.parsed += 1
        try:  # copied back through JSON (C speed) when that gives the very same document
            as_json: str | None = json.dumps(doc)
            exact = json.loads(as_json) == doc  # not so with non-string keys
        except (TypeError, ValueError):  # YAML dates, ...
            as_json, exact = None, False
        self._documents[path] = (text, as_json, None) if exact else (text, None, copy.deepcopy(doc))

    def validate(
        self,
        doc: dict[str, Any],
        whole: Callable[[dict[str, Any]], M],
        path: Path,
        sources: dict[str, Path],
        known_unused: Iterable[str],
        strict: bool,
    ) -> tuple[M, list[str], list[str]] | None:
        """(config, unknown-key errors, warnings); None: validate the whole document
        instead (an entry is invalid, or the section is not a mapping of names).
        ``whole`` validates a document (ConfigError naming file and key)."""
        section = doc.get(self.section)
        if not isinstance(section, dict) or not all(isinstance(n, str) for n in section):
            return None
        entries = self._resolve(section, self.context(doc), path, sources, known_unused, strict)
        if entries is None:
            return None
        self._entries = entries  # removed entries are forgotten
        kept = set(sources.values())
        self._documents = {p: d for p, d in self._documents.items() if p in kept}
        built = {name: entry.model for name, entry in entries.items()}
        config = whole({**doc, self.section: built})
        # The rest of the config, walked without the section (a shallow copy: cheap).
        rest = config.model_copy(update={self.section: {}})
        found = config_check.find_unknown(rest, frozenset(known_unused))
        top = [u for u in found if len(u.loc) == 1]  # the walk visits these first
        deeper = [u for u in found if len(u.loc) > 1]
        errors, warnings = config_check.classify(top, lambda loc: path, strict)
        for entry in entries.values():
            errors += entry.errors
            warnings += entry.warnings
        more_errors, more_warnings = config_check.classify(deeper, lambda loc: path, strict)
        return config, errors + more_errors, warnings + more_warnings

    def _resolve(
        self,
        section: dict[str, Any],
        context: Any,
        path: Path,
        sources: dict[str, Path],
        known_unused: Iterable[str],
        strict: bool,
    ) -> dict[str, _Entry] | None:
        entries: dict[str, _Entry] = {}
        for name, raw in section.items():
            source = sources.get(name, path)
            key = (source, context, strict)
            entry = self._entries.get(name)
            form = canonical(raw)
            if entry is None or entry.key != key or entry.raw != form:
                from pydantic import ValidationError

                try:
                    built = self.entry_model.model_validate(raw)
                except ValidationError:
                    return None
                errors, warnings = config_check.classify_unknown(
                    built, known_unused, lambda loc, s=source: s, strict, (self.section, name)
                )
                entry = _Entry(form, key, built, tuple(errors), tuple(warnings))
                self.validated += 1
            entries[name] = entry
        return entries
