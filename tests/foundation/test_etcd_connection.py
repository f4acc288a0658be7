"""smartstack.etcd.EtcdConnection without a server: endpoint parsing and failed connects."""

from __future__ import annotations

import aetcd
import pytest

from smartstack import etcd
from smartstack.etcd import EtcdConnection, split_endpoint
from smartstack.localservers.process import free_port


def test_split_endpoint() -> None:
    assert split_endpoint("http://10.0.0.1:2379/") == ("10.0.0.1", 2379)
    assert split_endpoint("[::1]:4003") == ("::1", 4003)
    assert split_endpoint("etcd1") == ("etcd1", 2379)


async def test_a_failed_authenticating_connect_closes_its_channel(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    created: list[aetcd.Client] = []
    closed: list[aetcd.Client] = []

    class Recording(aetcd.Client):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, **kwargs)
            created.append(self)

        async def close(self) -> None:
            closed.append(self)
            await super().close()

    monkeypatch.setattr(etcd.aetcd, "Client", Recording)
    dead = [f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"]
    conn = EtcdConnection(dead, "root", "secret", timeout=2)
    for _ in range(3):  # an outage: every attempt authenticates against a closed port
        with pytest.raises(etcd.CONNECTION_ERRORS):
            await conn.with_client(lambda c: c.get(b"/x"))
    assert len(created) == 6 and closed == created
