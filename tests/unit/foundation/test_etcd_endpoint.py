"""etcd endpoint parsing (no connection)."""

from __future__ import annotations

from smartstack.etcd import split_endpoint


def test_split_endpoint() -> None:
    assert split_endpoint("http://10.0.0.1:2379/") == ("10.0.0.1", 2379)
    assert split_endpoint("[::1]:4003") == ("::1", 4003)
    assert split_endpoint("etcd1") == ("etcd1", 2379)
    assert split_endpoint("https://etcd.example.com:2379") == ("etcd.example.com", 2379)
