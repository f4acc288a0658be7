"""The gRPC target of an etcd member: an IPv6 host is bracketed ('[::1]:2379'); unbracketed,
gRPC read it as a misformatted name and never connected (nerve never registered, synapse's
watcher never connected: 10 of 10 requests 503 in the IPv6 review)."""

from __future__ import annotations

import pytest

from smartstack import etcd


class Stop(Exception):
    pass


@pytest.mark.parametrize(
    ("host", "target"),
    [("::1", "[::1]:2379"), ("fd00::10", "[fd00::10]:2379"), ("127.0.0.1", "127.0.0.1:2379")],
)
async def test_the_channel_target_brackets_an_ipv6_host(
    host: str, target: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[str] = []

    def channel(address: str, options: object = None) -> None:
        seen.append(address)
        raise Stop

    monkeypatch.setattr(etcd.grpc.aio, "insecure_channel", channel)
    client = etcd.Client(host=host, port=2379)
    with pytest.raises(Exception):  # noqa: B017 (aetcd may wrap it)
        await client.connect()
    assert seen == [target]
