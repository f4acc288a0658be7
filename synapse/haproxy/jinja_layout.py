"""An operator's jinja2 template (``haproxy.template``), as render.py uses it.

Only imported when a template is configured: the default layout is written without
jinja2 (``default_layout``), so a synapse that does not use a template never loads it.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any

import jinja2

from synapse.haproxy.configtext import assemble, parse_blocks, parse_config
from synapse.haproxy.specs import ServerSpec, ServerTraits

# Template blocks that let a service be rendered on its own (see render.py's docstring).
PIECE_BLOCKS = ("head", "service", "tail")
ERRORS: tuple[type[Exception], ...] = (jinja2.TemplateError, OSError)


class JinjaLayout:
    """A template's text, rendered whole or, when its blocks allow it, piece by piece."""

    def __init__(self, text: str, frame: Mapping[str, Any]) -> None:
        """``frame``: sample head/tail variables to check the blocks with."""
        env = jinja2.Environment(
            autoescape=False,  # HAProxy config, not HTML
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=True,
            undefined=jinja2.StrictUndefined,
        )
        self._template = env.from_string(text)
        # The template's globals are a ChainMap: copied once here, not for every service
        # (jinja's new_context does `dict(globals, **vars)`: ~10 % of a first render).
        self._globals = dict(self._template.globals)
        self.composable = self._check_composable(frame)

    def whole(self, **variables: Any) -> str:
        return self._template.render(**variables)

    def block(self, name: str, **variables: Any) -> str:
        context = self._template.new_context({**self._globals, **variables}, shared=True)
        return "".join(self._template.blocks[name](context))

    def _check_composable(self, frame: Mapping[str, Any]) -> bool:
        """Whether the template's head, service and tail blocks add up to the whole text.

        Checked once on sample services; a template that does not is rendered whole.
        """
        if not all(name in self._template.blocks for name in PIECE_BLOCKS):
            return False
        traits = ServerTraits("", 1, False, False, None, ("", ""))
        server = ServerSpec("b1", "s1", "10.0.0.1", 80, 1, None, "", traits)
        samples = [
            {"name": "s1", "frontend": ["mode http"], "bind": "127.0.0.1:1",
             "backend_name": "b1", "backend": ["balance roundrobin"], "servers": [server]},
            {"name": "s2", "frontend": None, "bind": "127.0.0.1", "backend_name": "b2",
             "backend": [], "servers": []},
        ]  # fmt: skip
        try:
            whole = self.whole(**frame, services=samples)
            parts = [self.block("head", **frame)]
            parts += [self.block("service", service=sample) for sample in samples]
            parts.append(self.block("tail", **frame))
            blocks = [parse_blocks(part) for part in parts]
        except (jinja2.TemplateError, TypeError, ValueError, KeyError, AttributeError):
            return False
        orphans = any(found and found[0].header == "" for found in blocks[1:])
        joined = assemble(itertools.chain.from_iterable(blocks))
        return not orphans and "".join(parts) == whole and joined == parse_config(whole)
