"""The JSON gateway's pure parts: records, ranges, errors, a chunked stream of messages
(an asyncio.StreamReader fed by hand: no socket), and which transport a service gets."""

from __future__ import annotations

import asyncio
import base64
import json

import pytest

from smartstack.etcd_events import WatchCompacted
from smartstack.etcd_http import Exchange, HttpStatusError
from smartstack.etcd_json import (
    UNAUTHENTICATED,
    JsonKV,
    key_value,
    prefix_range_end,
    refusal,
    streamed_error,
)
from synapse.discovery_config import DiscoveryConfig, etcd_transport


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_a_key_value_as_the_gateway_writes_it() -> None:
    kv = key_value({"key": b64(b"/svc/a"), "value": b64(b"{}"), "mod_revision": "7",
                    "create_revision": "5", "version": "2"})  # fmt: skip
    assert kv == JsonKV(b"/svc/a", b"{}", 7, 5)
    # A delete event's kv has no value and no create revision (proto3 JSON leaves zeros out).
    assert key_value({"key": b64(b"/svc/a"), "mod_revision": "9"}) == JsonKV(b"/svc/a", b"", 9, 0)


def test_prefix_range_end() -> None:
    assert prefix_range_end(b"/svc/") == b"/svc0"
    assert prefix_range_end(b"a\xff") == b"b"
    assert prefix_range_end(b"\xff\xff") == b"\0"


def test_errors_in_a_body_and_in_a_stream() -> None:
    unary = HttpStatusError(503, {"error": "etcdserver: no leader", "code": 14,
                                  "message": "etcdserver: no leader"})  # fmt: skip
    assert (unary.status, unary.code, unary.message) == (503, 14, "etcdserver: no leader")
    streamed = {"error": {"grpc_code": 14, "http_code": 503, "message": "transport is closing"}}
    assert isinstance(streamed_error(streamed), ConnectionError)
    other = streamed_error({"error": {"grpc_code": 3, "message": "bad request"}})
    assert isinstance(other, HttpStatusError) and other.message == "bad request"
    assert HttpStatusError(502, "not json").message == "not json"


@pytest.mark.parametrize(
    "status, code, failed",
    [(504, 4, True), (500, 2, True), (500, 13, True), (502, None, True), (429, 8, True),
     (503, 14, True), (499, 1, True), (404, 5, False), (400, 3, False), (401, 16, False),
     (403, 7, False)],
)  # fmt: skip
def test_which_answers_are_a_member_s_failure(status: int, code: int | None, failed: bool) -> None:
    """A member failure moves the call to the next endpoint; etcd's refusals are raised."""
    unary = HttpStatusError(status, {"error": "e", "code": code, "message": "e"})
    assert unary.member_failed is failed
    # The same code written into a stream (a keep-alive, a watch): a connection error.
    streamed = streamed_error({"error": {"grpc_code": code, "message": "e"}})
    assert isinstance(streamed, ConnectionError) is (failed and code is not None)


def test_the_nospace_alarm_is_etcd_s_answer_not_a_member_failure() -> None:
    """Every member refuses writes alike under NOSPACE: no failover (review s36 registry)."""
    message = "etcdserver: mvcc: database space exceeded"
    assert not HttpStatusError(429, {"error": message, "code": 8, "message": message}).member_failed
    streamed = streamed_error({"error": {"grpc_code": 8, "message": message}})
    assert isinstance(streamed, HttpStatusError) and "space exceeded" in str(streamed)


def test_why_a_watch_was_refused() -> None:
    compacted = refusal({"canceled": True, "compact_revision": "42"})
    assert isinstance(compacted, WatchCompacted) and compacted.compacted_revision == 42
    token = refusal({"canceled": True, "cancel_reason": "rpc error: code = Unauthenticated "
                     "desc = etcdserver: invalid auth token"})  # fmt: skip
    assert isinstance(token, HttpStatusError) and token.code == UNAUTHENTICATED
    assert "permission denied" in str(refusal({"canceled": True,
                                               "cancel_reason": "permission denied"}))  # fmt: skip


class _Writer:
    def __init__(self) -> None:
        self.sent = b""

    def write(self, data: bytes) -> None:
        self.sent += data

    async def drain(self) -> None:
        pass


async def test_a_chunked_stream_split_anywhere_gives_whole_messages() -> None:
    messages = [{"result": {"created": True}}, {"result": {"events": [{"kv": {"key": "YQ=="}}]}}]
    body = b"".join(json.dumps(m).encode() + b"\n" for m in messages)
    chunked = b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in (body[:7], body[7:50],
                                                                         body[50:]))  # fmt: skip
    response = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked + b"0\r\n\r\n"
    reader = asyncio.StreamReader()
    for i in range(0, len(response), 5):  # the response arrives five bytes at a time
        reader.feed_data(response[i : i + 5])
    reader.feed_eof()
    writer = _Writer()
    exchange = Exchange(reader, writer)  # type: ignore[arg-type]
    assert await exchange.post("etcd", "/v3/watch", {"create_request": {}}, {"A": "b"}) == 200
    assert writer.sent.startswith(b"POST /v3/watch HTTP/1.1\r\n")
    assert b"\r\nA: b\r\n" in writer.sent and writer.sent.endswith(b'{"create_request":{}}')
    assert [m async for m in exchange.messages()] == messages


async def test_a_response_cut_short_is_a_connection_error() -> None:
    reader = asyncio.StreamReader()
    reader.feed_data(b'HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n{"header"')
    reader.feed_eof()
    exchange = Exchange(reader, _Writer())  # type: ignore[arg-type]
    assert await exchange.post("etcd", "/v3/kv/range", {}, {}) == 200
    with pytest.raises(ConnectionError):
        await exchange.body()


def etcd(path: str, **extra) -> DiscoveryConfig:
    return DiscoveryConfig(**{"method": "etcd", "endpoints": ["127.0.0.1:2379"], "path": path,
                              **extra})  # fmt: skip


def test_which_transport_a_service_gets() -> None:
    few = [etcd(f"/s/{i}") for i in range(8)]
    assert etcd_transport(few[0], few) == "json"
    many = [*few, etcd("/s/8")]
    assert etcd_transport(many[0], many) == "grpc"
    # Counted per connection: other endpoints, another identity are other connections.
    other = [etcd(f"/o/{i}", endpoints=["127.0.0.1:2380"]) for i in range(20)]
    assert etcd_transport(few[0], few + other) == "json"
    # A multi's children count too.
    multi = DiscoveryConfig(method="multi", watchers={"a": etcd("/m/a"), "b": etcd("/m/b")},
                            resolver={"method": "union"})  # fmt: skip
    assert etcd_transport(few[0], [*few[:7], multi]) == "grpc"
    # Said in the config, it is what it says.
    assert etcd_transport(etcd("/x", etcd_transport="grpc"), few) == "grpc"
    assert etcd_transport(etcd("/x", etcd_transport="json"), many) == "json"


def test_a_client_certificate_keeps_grpc(tmp_path) -> None:
    for name in ("ca", "cert", "key"):
        (tmp_path / name).write_text("x")
    tls = {"ca_cert": str(tmp_path / "ca"), "cert_cert": str(tmp_path / "cert"),
           "cert_key": str(tmp_path / "key")}  # fmt: skip
    mutual = etcd("/t", endpoints=["https://127.0.0.1:2379"], etcd_tls=tls)
    assert etcd_transport(mutual, [mutual]) == "grpc"
    server_only = etcd("/t", endpoints=["https://127.0.0.1:2379"],
                       etcd_tls={"ca_cert": str(tmp_path / "ca")})  # fmt: skip
    assert etcd_transport(server_only, [server_only]) == "json"


async def test_a_long_message_in_many_chunks_and_a_line_that_is_not_json() -> None:
    big = {"result": {"events": [{"kv": {"key": b64(b"k" * 100), "value": "x" * 300_000}}]}}
    body = json.dumps(big).encode() + b"\n" + b"not json\n"
    parts = [body[i : i + 1000] for i in range(0, len(body), 1000)]
    chunked = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"
    reader = asyncio.StreamReader()
    reader.feed_data(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked)
    reader.feed_eof()
    exchange = Exchange(reader, _Writer())  # type: ignore[arg-type]
    assert await exchange.post("etcd", "/v3/watch", {}, {}) == 200
    messages = exchange.messages()
    assert await anext(messages) == big
    with pytest.raises(ConnectionError, match="not JSON"):
        await anext(messages)
