"""nerve's key and lease calls on etcd's JSON gateway (``smartstack.etcd_json_client``): what
each sends and how it reads the answers, proto3 JSON's left-out zeros included. The HTTP
calls are faked; ``tests/integration/nerve`` runs them against etcd. Also which transport a
nerve service gets."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest

from nerve.config import ServiceConfig
from smartstack import etcd_json_client
from smartstack.etcd_http import HttpStatusError, Target
from smartstack.etcd_json_client import EtcdJsonClient

TARGET = Target("127.0.0.1", 2379, None, {"Authorization": "token"})


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, dict, dict]]:
    """The calls made (path, payload, headers); answers come from ``ANSWERS`` by path."""
    calls: list[tuple[str, dict, dict]] = []

    async def call(target: Target, path: str, payload: dict) -> dict:
        calls.append((path, payload, target.headers))
        return ANSWERS[path]

    monkeypatch.setattr(etcd_json_client, "call", call)
    monkeypatch.setattr(etcd_json_client, "first_message", call)
    return calls


HEADER = {"revision": "9"}
ANSWERS: dict[str, Any] = {
    "/v3/kv/range": {
        "header": HEADER,
        "kvs": [
            {
                "key": b64(b"/k"),
                "value": b64(b"v"),
                "mod_revision": "8",
                "create_revision": "3",
                "lease": "77",
            }
        ],
    },
    "/v3/kv/put": {"header": HEADER},
    "/v3/kv/deleterange": {"header": HEADER},  # "deleted" left out: 0
    "/v3/kv/txn": {"header": HEADER},  # "succeeded" left out: false
    "/v3/lease/grant": {"header": HEADER, "ID": "77", "TTL": "5"},
    # Under a second left: "TTL" (0) left out, which is not -1 (unknown to etcd).
    "/v3/lease/timetolive": {
        "header": HEADER,
        "ID": "77",
        "grantedTTL": "5",
        "keys": [b64(b"/k")],
    },
    "/v3/lease/keepalive": {"result": {"header": HEADER, "ID": "77"}},  # expired: TTL 0
    "/v3/lease/revoke": {"header": HEADER},
}


async def test_each_call_sends_what_etcd_expects_and_reads_its_answer(sent: list) -> None:
    client = EtcdJsonClient(TARGET)
    kv = await client.get(b"/k")
    assert kv is not None and (kv.value, kv.lease, kv.create_revision) == (b"v", 77, 3)
    assert (await client.put(b"/k", b"v", lease=77)).header.revision == 9
    assert await client.delete(b"/k") is False
    assert await client.delete_if_revision(b"/k", 8) is False
    granted = await client.lease(5)
    assert (granted.id, granted.ttl) == (77, 5)
    info = await client.get_lease_info(77, keys=True)
    assert (info.TTL, info.grantedTTL, info.keys) == (0, 5, [b"/k"])
    assert (await client.keepalive(77)).TTL == 0
    await client.revoke_lease(77)
    payloads = {path: payload for path, payload, _ in sent}
    assert payloads["/v3/kv/put"] == {"key": b64(b"/k"), "value": b64(b"v"), "lease": "77"}
    assert payloads["/v3/kv/txn"] == {
        "compare": [{"target": "MOD", "result": "EQUAL", "key": b64(b"/k"), "mod_revision": "8"}],
        "success": [{"request_delete_range": {"key": b64(b"/k")}}],
    }
    assert payloads["/v3/lease/timetolive"] == {"ID": "77", "keys": True}
    headers = {path: headers for path, _, headers in sent}
    assert headers["/v3/lease/keepalive"] == {"Authorization": "token",
                                              "Grpc-Metadata-hasleader": "true"}  # fmt: skip
    assert all(h == {"Authorization": "token"} for p, h in headers.items() if "keepalive" not in p)


async def test_a_lease_etcd_does_not_know(sent: list, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(ANSWERS, "/v3/lease/timetolive", {"ID": "5", "TTL": "-1"})
    assert (await EtcdJsonClient(TARGET).get_lease_info(5)).TTL == -1


@pytest.mark.parametrize(
    "code, error", [(14, ConnectionError), (16, HttpStatusError), (5, HttpStatusError)]
)
async def test_a_keepalive_refused_in_the_stream(
    sent: list, monkeypatch: pytest.MonkeyPatch, code: int, error: type[Exception]
) -> None:
    # UNAVAILABLE: the next endpoint; UNAUTHENTICATED: authenticate again (with_endpoint).
    refused = {"error": {"grpc_code": code, "http_code": 503, "message": "etcdserver: no"}}
    monkeypatch.setitem(ANSWERS, "/v3/lease/keepalive", refused)
    with pytest.raises(error):
        await EtcdJsonClient(TARGET).keepalive(77)


def service(**keys: Any) -> ServiceConfig:
    return ServiceConfig.model_validate({"host": "127.0.0.1", "port": 3000,
        "reporter_type": "etcd", "etcd_endpoints": ["127.0.0.1:2379"], **keys})  # fmt: skip


def test_a_nerve_service_s_transport(tmp_path: Path) -> None:
    for name in ("ca.pem", "c.pem", "k.pem"):
        (tmp_path / name).write_text("-")
    ca = {"ca_cert": str(tmp_path / "ca.pem")}
    cert = {"cert_cert": str(tmp_path / "c.pem"), "cert_key": str(tmp_path / "k.pem")}
    assert service().etcd_transport_used() == "json"
    assert service(etcd_tls=ca).etcd_transport_used() == "json"
    # A client certificate: etcd's gateway would call etcd back with etcd's own certificate.
    assert service(etcd_tls=cert).etcd_transport_used() == "grpc"
    assert service(etcd_tls=cert, etcd_transport="json").etcd_transport_used() == "json"
    assert service(etcd_transport="grpc").etcd_transport_used() == "grpc"
