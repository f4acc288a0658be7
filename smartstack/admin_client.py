"""The client side of the admin APIs, for ``nerve maint/up`` and ``synapse zone``.

Where to talk: ``--admin URL``, else the ``admin`` block of the daemon's config file
(``-c``). The bearer token: ``--token-file``, else the config's ``admin.token_file``.
Failures become one ``error:`` line and exit status 1.

Of the config file only the ``admin`` block is read (``admin_only``): the running daemon
may have been started with overrides the file lacks (``nerve -i``), and the file may be
mid-edit: neither must keep ``nerve up`` from ending a maintenance.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn, Protocol

from smartstack.admin_token import TokenFileError, read_token
from smartstack.cli import load_or_exit
from smartstack.config_errors import ConfigError
from smartstack.configfile import load_document, validate

REQUEST_TIMEOUT = 10.0
EXIT_FAILED = 1


class _Admin(Protocol):
    host: str
    port: int | None
    token_file: str | None


class _Config(Protocol):
    @property
    def admin(self) -> _Admin: ...


class AdminCallError(Exception):
    """The admin API could not be reached or refused the call; the message says which."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def add_admin_arguments(parser: argparse.ArgumentParser, exclusive: bool = True) -> None:
    """-c/--config and --admin (one of them required; ``exclusive``: not both), --token-file."""
    where: Any = parser.add_mutually_exclusive_group(required=True) if exclusive else parser
    where.add_argument("-c", "--config", help="the running daemon's config file")
    where.add_argument(
        "--admin", help="admin API URL, e.g. http://127.0.0.1:1025 (nerve), :1026 (synapse)"
    )
    parser.add_argument("--token-file", help="bearer token file (default: admin.token_file)")


def admin_only(model: type[Any], erb: bool = False) -> Callable[[str], tuple[_Config, list[str]]]:
    """A config loader for ``target`` that reads only the file's ``admin`` block, validated
    by ``model`` (the daemon's own admin model: its defaults); ``erb``: render
    ``<%= ENV[...] %>`` tags first, as the daemon does. A file that cannot be read or
    parsed is still a ConfigError."""
    from pydantic import Field, create_model  # (the daemon's models are pydantic's here)

    # The block under its key: errors name ``admin.port``, as the daemon's own do.
    document = create_model("AdminBlock", admin=(model, Field(default_factory=model)))

    def load(path: str) -> tuple[_Config, list[str]]:
        doc = load_document(Path(path), erb)
        block = doc.get("admin")
        if block is not None and not isinstance(block, dict):
            raise ConfigError([f"{path}: admin: expected a mapping"])
        return validate(document, {"admin": block or {}}, Path(path)), []

    return load


def fail(message: str) -> NoReturn:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(EXIT_FAILED)


def target(args: argparse.Namespace, loader: Callable[[str], Any]) -> tuple[str, str | None]:
    """(base URL, token or None) from the arguments and, when given, the config file."""
    config: _Config | None = None
    if args.config:
        config = load_or_exit(lambda: loader(args.config))
    elif not args.admin:
        fail("give the daemon's config file (-c) or its admin URL (--admin)")
    token_file = args.token_file or (config.admin.token_file if config else None)
    try:
        token = read_token(token_file) if token_file else None
    except TokenFileError as exc:
        fail(f"token file: {exc}")
    if args.admin:
        if not args.admin.startswith(("http://", "https://")):
            fail(f"--admin {args.admin!r}: not a URL (give e.g. http://127.0.0.1:1025)")
        return args.admin.rstrip("/"), token
    assert config is not None
    if config.admin.port is None:
        fail(f"{args.config}: the admin API is disabled (admin.port is null)")
    if config.admin.port == 0:  # (before: "cannot reach ... at http://127.0.0.1:0", review s44)
        fail(
            f"{args.config}: admin.port is 0, a free port the daemon picked at its start "
            "(its admin_listening log line says which): give --admin http://127.0.0.1:PORT"
        )
    host = config.admin.host
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"  # bound to every address: talk to the local one
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{config.admin.port}", token


def call(
    method: str,
    url: str,
    body: dict[str, Any] | None = None,
    token: str | None = None,
    daemon: str = "the",
) -> Any:
    """One request; the decoded JSON answer, or AdminCallError saying what went wrong."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if token is not None:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=REQUEST_TIMEOUT) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace").strip()[:500]
        if exc.code == 401:
            detail += " (give the admin token: --token-file or admin.token_file)"
        raise AdminCallError(f"{url}: HTTP {exc.code}: {detail}", exc.code) from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise AdminCallError(f"cannot reach {daemon} admin API at {url}: {reason}") from None
    except ValueError:
        raise AdminCallError(f"{url}: the answer is not JSON") from None
