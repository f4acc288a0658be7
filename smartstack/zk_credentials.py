"""What a ZooKeeper credential (``zk_auth``) means to kazoo, and what its refusal says."""

from __future__ import annotations

from typing import Any


def auth_options(auth: tuple[str, str] | None) -> dict[str, Any]:
    """KazooClient arguments for ("digest", "user:pw") or ("sasl", "user:pw") (DIGEST-MD5)."""
    if auth is None:
        return {}
    scheme, credential = auth
    if scheme == "sasl":
        user, _, password = credential.partition(":")
        return {"sasl_options": {"mechanism": "DIGEST-MD5", "username": user,
                                 "password": password}}  # fmt: skip
    return {"auth_data": [auth]}


def refusal(auth: tuple[str, str] | None) -> str:
    """The error a refused credential leaves on the connection (/status ``error``): kazoo
    gives up on that client for good, so it stays until the config changes."""
    scheme = auth[0] if auth else "no"
    return f"ZooKeeper refused the {scheme} credential (AUTH_FAILED): check zk_auth.credential"
