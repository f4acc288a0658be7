"""The registration record: valid records round-trip, hostile input is refused with a reason."""

from __future__ import annotations

import json
import re
import string

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from smartstack.record import (
    MAX_RECORD_BYTES,
    InvalidRecord,
    Registration,
    decode_child_name,
    decode_nerve,
    decode_serverset,
    encode,
    encode_child_prefix,
    sequence_of,
)

ipv4 = st.tuples(*[st.integers(0, 255)] * 4).map(lambda t: ".".join(map(str, t)))
dns_label = st.text(string.ascii_lowercase + string.digits, min_size=1, max_size=20)
dns_name = st.lists(dns_label, min_size=1, max_size=4).map(".".join)
safe_name = st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9._:-]{0,40}\Z")
label_key = st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9._/-]{0,20}\Z")
label_value = st.text(
    st.characters(min_codepoint=0x20, blacklist_categories=("Cc", "Cs", "Zl", "Zp")), max_size=30
)

registrations = st.builds(
    Registration,
    host=st.one_of(ipv4, dns_name),
    port=st.integers(1, 65535),
    name=safe_name,
    weight=st.one_of(st.none(), st.integers(0, 256)),
    labels=st.dictionaries(label_key, label_value, max_size=5),
    haproxy_server_options=st.one_of(st.none(), st.sampled_from(["backup", "maxconn 10"])),
)


@given(registrations)
def test_valid_records_round_trip(reg: Registration) -> None:
    assert decode_nerve(encode(reg)) == reg


@given(registrations)
def test_path_encoding_round_trips_with_a_sequence_suffix(reg: Registration) -> None:
    prefix = encode_child_prefix(reg)
    assert prefix is not None
    child = f"{prefix}0000000042"
    assert decode_child_name(child) == reg
    assert sequence_of(child) == 42


@settings(max_examples=300)
@given(st.binary(max_size=2048))
def test_random_bytes_never_raise_anything_but_invalid_record(data: bytes) -> None:
    try:
        decode_nerve(data)
    except InvalidRecord as exc:
        assert exc.reason


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children)
    ),
    max_leaves=20,
)


@settings(max_examples=100)
@given(
    st.fixed_dictionaries(
        {},
        optional={
            "host": json_values,
            "port": json_values,
            "name": json_values,
            "weight": json_values,
            "labels": json_values,
            "haproxy_server_options": json_values,
        },
    )
)
def test_random_json_objects_are_accepted_only_when_valid(obj: dict) -> None:
    try:
        reg = decode_nerve(json.dumps(obj).encode())
    except InvalidRecord as exc:
        assert exc.reason
    else:  # anything accepted must survive re-validation and contain no control characters
        assert Registration(**vars(reg)) == reg
        assert "\n" not in encode(reg).decode()


@settings(max_examples=300)
@given(st.text(min_size=1, max_size=40))
def test_an_accepted_host_is_one_word_of_address_characters(host: str) -> None:
    # The host lands on a HAProxy server line: nothing but one address-like word may pass.
    for candidate in (host, f"fe80::1%{host}", f"10.0.0.1 {host}"):
        try:
            Registration(candidate, 80, "a")
        except InvalidRecord as exc:
            assert exc.reason
        else:
            assert re.fullmatch(r"[A-Za-z0-9._:-]+", candidate), candidate


@settings(max_examples=200)
@given(st.binary(max_size=300))
@example(b"\xb9_AAAA_0000000001")  # "¹": str.isdigit() says yes, int() refuses it
def test_random_child_names_never_raise_anything_but_invalid_record(data: bytes) -> None:
    name = "base64_" + data.decode("latin-1")
    try:
        decode_child_name(name)
    except InvalidRecord as exc:
        assert exc.reason


HOSTILE = [
    ({"host": "10.0.0.1\n    server evil 6.6.6.6:80", "port": 80, "name": "a"}, "control"),
    ({"host": "10.0.0.1 backup", "port": 80, "name": "a"}, "neither an IP"),
    # Python's ip_address() takes any text after '%' as an IPv6 zone.
    ({"host": "fe80::1%x backup weight 1", "port": 80, "name": "a"}, "zone"),
    ({"host": "fe80::1%eth0", "port": 80, "name": "a"}, "zone"),
    ({"host": "10.0.0.1", "port": 70000, "name": "a"}, "outside"),
    ({"host": "10.0.0.1", "port": 0, "name": "a"}, "outside"),
    ({"host": "10.0.0.1", "port": True, "name": "a"}, "integer"),
    ({"host": "10.0.0.1", "port": 80, "name": "a b"}, "characters"),
    ({"host": "10.0.0.1", "port": 80, "name": "a\rcheck"}, "control"),
    # (a name's fast check is one fullmatch: `$` would also match before a final newline)
    ({"host": "10.0.0.1", "port": 80, "name": "a\n"}, "control"),
    ({"host": "10.0.0.1", "port": 80, "name": "a" * 129}, "characters"),
    ({"host": "10.0.0.1", "port": 80, "name": "a", "labels": {"k\tv": "x"}}, "control"),
    ({"host": "10.0.0.1", "port": 80, "name": "a", "labels": {"k" * 129: "x"}}, "longer"),
    ({"host": "10.0.0.1", "port": 80, "name": "a", "labels": {"k": "x\ny"}}, "control"),
    ({"host": "10.0.0.1", "port": 80, "name": "a", "labels": ["x"]}, "object"),
    ({"host": "10.0.0.1", "port": 80, "name": "a", "haproxy_server_options": "x\ny"}, "control"),
    ({"port": 80, "name": "a"}, "no 'host'"),
    ({"host": "10.0.0.1", "name": "a"}, "no 'port'"),
    ({"host": "10.0.0.1", "port": 80}, "no 'name'"),
]


@pytest.mark.parametrize(("record", "reason"), HOSTILE)
def test_hostile_records_are_refused_with_a_reason(record: dict, reason: str) -> None:
    with pytest.raises(InvalidRecord, match=reason):
        decode_nerve(json.dumps(record).encode())


@settings(max_examples=200)
@given(
    st.fixed_dictionaries(
        {
            "host": st.one_of(ipv4, dns_name, json_values),
            "port": st.one_of(st.integers(-1, 70000), json_values),
            "name": st.one_of(safe_name, json_values),
        },
        optional={"weight": st.one_of(st.integers(-1, 300), json_values)},
    )
)
def test_nerves_common_record_decodes_as_the_general_path_validates(obj: dict) -> None:
    # (nerve's common shape takes a quicker path: same result, same refusals)
    weight = obj.get("weight")
    if isinstance(weight, bool) or not isinstance(weight, int) or weight < 0:
        weight = None  # (a weight that is not an integer 0-256 keeps the server: not used,
    weight = min(weight, 256) if weight is not None else None  # or 256 when above it)
    try:
        expected: Registration | str = Registration(obj["host"], obj["port"], obj["name"], weight)
    except (InvalidRecord, TypeError) as exc:
        expected = type(exc).__name__
    try:
        got: Registration | str = decode_nerve(json.dumps(obj).encode())
    except InvalidRecord:
        got = "InvalidRecord"
    if expected == "TypeError" or isinstance(obj["name"], int) or isinstance(obj["port"], str):
        return  # (the general path's coercions, e.g. a numeric name: other tests' matter)
    assert got == expected
    if isinstance(got, Registration):
        assert decode_nerve(b" " + json.dumps(obj).encode() + b"\n") == got


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"", "empty"),
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "not an object"),
        (b"\xff\xfe", "not UTF-8"),
        (b"[" * 100_000, "over"),
        (
            b'{"host": "10.0.0.1", "port": 80, "name": "a", "pad": "'
            + b"x" * MAX_RECORD_BYTES
            + b'"}',
            "over",
        ),
        (b"[" * 5000 + b"]" * 5000, "not valid JSON"),
        # (an object and nothing around it is scanned directly: not these)
        (b'{"host": "10.0.0.1", "port": 80, "name": "a"} {}', "not valid JSON"),
        (b'{"host": "10.0.0.1", "port": 80, "name": "a", }', "not valid JSON"),
    ],
)
def test_malformed_bytes_are_refused_with_a_reason(raw: bytes, reason: str) -> None:
    with pytest.raises(InvalidRecord, match=reason):
        decode_nerve(raw)


def test_airbnb_nerve_record_with_nulls_and_string_port_decodes() -> None:
    raw = b'{"host":"10.1.2.3","port":"3000","name":"i-abc","weight":null,"labels":null}'
    assert decode_nerve(raw) == Registration(host="10.1.2.3", port=3000, name="i-abc")


def test_encode_matches_nerves_field_order() -> None:
    reg = Registration("10.0.0.5", 8080, "web-1", weight=10, labels={"zone": "az1"})
    assert (
        encode(reg)
        == b'{"host":"10.0.0.5","port":8080,"name":"web-1","weight":10,"labels":{"zone":"az1"}}'
    )


def test_encode_writes_non_ascii_as_ruby_nerve_does() -> None:
    # Ruby's JSON.generate leaves UTF-8 as it is (no \u escapes): byte-identical records.
    reg = Registration("10.0.0.5", 8080, "web-1", labels={"city": "Zürich"})
    assert (
        encode(reg)
        == '{"host":"10.0.0.5","port":8080,"name":"web-1","labels":{"city":"Zürich"}}'.encode()
    )
    assert decode_nerve(encode(reg)) == reg
    with pytest.raises(InvalidRecord, match="control"):  # a lone surrogate is not text
        Registration("10.0.0.5", 8080, "web-1", labels={"city": "Z\ud800"})


def test_serverset_service_endpoint_and_additional_endpoint() -> None:
    member = json.dumps(
        {
            "serviceEndpoint": {"host": "10.0.0.7", "port": 31943},
            "additionalEndpoints": {"admin": {"host": "10.0.0.7", "port": 31944}},
            "shard": 3,
            "status": "ALIVE",
        }
    ).encode()
    assert decode_serverset(member) == Registration("10.0.0.7", 31943, "3")
    assert decode_serverset(member, "admin") == Registration("10.0.0.7", 31944, "3")
    with pytest.raises(InvalidRecord, match="no additionalEndpoint"):
        decode_serverset(member, "missing")


def test_serverset_without_shard_uses_the_fallback_name_and_dead_members_are_refused() -> None:
    member = b'{"serviceEndpoint": {"host": "10.0.0.7", "port": 80}}'
    assert decode_serverset(member, fallback_name="member_0000000001").name == "member_0000000001"
    dead = b'{"serviceEndpoint": {"host": "10.0.0.7", "port": 80}, "shard": 1, "status": "DEAD"}'
    with pytest.raises(InvalidRecord, match="not ALIVE"):
        decode_serverset(dead)


def test_plain_child_names_are_not_path_encoded() -> None:
    assert decode_child_name("i-abc_0000000001") is None
    assert sequence_of("i-abc_0000000001") == 1
    assert sequence_of("noseq") is None


def test_records_of_one_host_share_its_host_string() -> None:
    """Memory: a host's many records hold one host string, not one copy each."""
    first = decode_nerve(b'{"host": "10.9.8.7", "port": 1, "name": "a"}')
    second = decode_nerve(b'{"host": "10.9.8.7", "port": 2, "name": "b"}')
    assert first.host is second.host


def test_records_without_labels_share_one_empty_mapping() -> None:
    first = decode_nerve(b'{"host": "10.9.8.7", "port": 1, "name": "a"}')
    second = decode_nerve(b'{"host": "10.9.8.6", "port": 2, "name": "b", "labels": {}}')
    assert first.labels == {} and first.labels is second.labels
    with pytest.raises(InvalidRecord):
        decode_nerve(b'{"host": "10.9.8.7", "port": 1, "name": "a", "labels": ""}')


def test_records_of_one_port_share_its_int() -> None:
    # (a port above 256 would be a new int per record: 32 bytes each at 20,000 records)
    first = decode_nerve(b'{"host": "10.0.0.1", "port": 31001, "name": "a"}')
    again = decode_nerve(b'{"host": "10.0.0.2", "port": "31001", "name": "b"}')
    assert first.port == again.port == 31001 and first.port is again.port
