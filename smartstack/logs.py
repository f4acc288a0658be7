"""Structured logging: one event per line, ``key=value`` (default) or JSON.

Call ``event(log, "registered", service="web", path="/nerve/web/i1_0000000001")``;
plain ``log.info("text")`` works too and is rendered as ``msg="text"``.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

_FIELDS = "smartstack_fields"


def event(logger: logging.Logger, name: str, level: int = logging.INFO, **fields: Any) -> None:
    """Log one structured event named ``name`` with its fields."""
    if logger.isEnabledFor(level):
        logger.log(level, name, extra={_FIELDS: fields}, stacklevel=2)


def _quote(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    # Quoted (and so escaped) as soon as it could end a field or forge a line: spaces, quotes,
    # '=', backslashes and any control character (\r, ESC, ...), whatever a registry said.
    if text == "" or any(c in ' "=\\' or not c.isprintable() for c in text):
        return json.dumps(text)
    return text


class KeyValueFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        parts = [
            f"ts={stamp}.{int(record.msecs):03d}Z",
            f"level={record.levelname.lower()}",
            f"logger={record.name}",
        ]
        fields: dict[str, Any] | None = getattr(record, _FIELDS, None)
        if fields is None:
            parts.append(f"msg={_quote(record.getMessage())}")
        else:
            parts.append(f"event={_quote(record.getMessage())}")
            parts.extend(f"{key}={_quote(value)}" for key, value in fields.items())
        if record.exc_info:
            parts.append(f"exc={_quote(self.formatException(record.exc_info))}")
        return " ".join(parts)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields: dict[str, Any] | None = getattr(record, _FIELDS, None)
        out: dict[str, Any] = {
            "ts": record.created,
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        if fields is None:
            out["msg"] = record.getMessage()
        else:
            out["event"] = record.getMessage()
            out.update(fields)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def setup(level: str = "info", fmt: str = "kv") -> None:
    """Configure the root logger once for a daemon (stderr)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else KeyValueFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # kazoo is chatty at INFO about every connection attempt.
    logging.getLogger("kazoo").setLevel(max(root.level, logging.WARNING))
