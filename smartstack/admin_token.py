"""The bearer token of the admin APIs (``admin.token_file``), shared by both daemons and CLIs.

No aiohttp here: config validation and the command-line clients import it too.
The token is the file's content without surrounding whitespace; it is never logged.
"""

from __future__ import annotations

from pathlib import Path

from smartstack.modelbase import ConfigModel, field_validator

MAX_TOKEN_BYTES = 4096


class TokenFileError(ValueError):
    """The token file cannot be used; the message names the file and the problem."""


def read_token(path: str | Path) -> str:
    """The token in ``path``; TokenFileError when it is missing, unreadable, empty or odd."""
    file = Path(path)
    try:
        raw = file.read_bytes()[: MAX_TOKEN_BYTES + 1]
    except OSError as exc:
        raise TokenFileError(f"{file}: cannot read: {exc.strerror or exc}") from None
    if len(raw) > MAX_TOKEN_BYTES:
        raise TokenFileError(f"{file}: longer than {MAX_TOKEN_BYTES} bytes; not a token file?")
    try:
        token = raw.decode("ascii").strip()
    except UnicodeDecodeError:
        raise TokenFileError(f"{file}: the token must be printable ASCII") from None
    if not token:
        raise TokenFileError(f"{file}: empty; put the token in it")
    if not token.isprintable() or any(c.isspace() for c in token):
        # It travels in an HTTP header: one word of printable characters.
        raise TokenFileError(f"{file}: the token must be one word of printable ASCII")
    return token


class AdminAuthConfig(ConfigModel):
    """Base of both daemons' ``admin`` blocks: the optional token of traffic-changing calls."""

    # endpoints that change traffic need "Authorization: Bearer <the file's content>"
    token_file: str | None = None

    @field_validator("token_file")
    @classmethod
    def _token_file_usable(cls, value: str | None) -> str | None:
        if value is not None:
            read_token(value)  # refuse at load time what would fail at start
        return value

    def token(self) -> str | None:
        """The token as the file holds it now (read at start); None without a token_file."""
        return read_token(self.token_file) if self.token_file else None
