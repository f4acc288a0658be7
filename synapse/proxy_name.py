"""Service names are HAProxy proxy names: checked at load, with the name probably meant."""

from __future__ import annotations

import re
import unicodedata

# HAProxy's proxy-name characters (its invalid_char()): a service name is its frontend's
# and backend's name, so anything else loads here and fails `haproxy -c` with an alert
# that names neither the service nor the key ("please use the 'bind' keyword ...").
_PROXY_NAME = re.compile(r"[A-Za-z0-9._:-]+")


def check_proxy_name(name: str) -> str:
    """``name`` if HAProxy takes it as a frontend/backend name, else ValueError saying why
    (with the name it probably meant)."""
    if _PROXY_NAME.fullmatch(name):
        return name
    if not name:
        raise ValueError("an empty name cannot name an HAProxy frontend or backend")
    bad = " ".join(repr(c) for c in sorted({c for c in name if not _PROXY_NAME.fullmatch(c)}))
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    meant = re.sub(r"[^A-Za-z0-9._:-]+", "_", ascii_name).strip("_")
    perhaps = f"; perhaps {meant!r}" if meant else ""
    raise ValueError(
        f"{name!r} cannot name an HAProxy frontend or backend: only A-Z a-z 0-9 . : _ - "
        f"(found {bad}){perhaps}"
    )
