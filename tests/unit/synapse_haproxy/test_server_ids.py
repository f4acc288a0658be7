"""Server ids stay what every earlier synapse gave (a state file and HAProxy keep them)."""

from __future__ import annotations

import hashlib

from synapse.haproxy.server_ids import assign_ids, stable_server_id


def _openssl_id(name: str, max_id: int) -> int:  # the ids as first defined
    digest = hashlib.sha1(name.encode(), usedforsecurity=False).digest()
    return int.from_bytes(digest[:8], "big") % max_id + 1


def test_ids_are_the_sha1_of_the_name_as_ever() -> None:
    names = ["s1-0", "10.0.0.1:8080", "i-abc_10.1.2.3:31000", "é-server"]
    for max_id in (65535, 7, 1_000_000):
        assert [stable_server_id(n, max_id) for n in names] == [
            _openssl_id(n, max_id) for n in names
        ]
    assert stable_server_id("s1-0", 65535) == 31631  # (a fixed value: no silent change)
    ids = assign_ids(names, {}, [], 1_000_000)
    assert ids == {n: _openssl_id(n, 1_000_000) for n in names}
