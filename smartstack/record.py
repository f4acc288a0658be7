"""The registration record: the one contract between nerve and synapse.

nerve writes one JSON object per registration; synapse reads it back from
ZooKeeper or etcd. Everything read from a registry is untrusted input, so
decoding validates strictly and reports *why* a record was refused instead of
raising arbitrary exceptions: a hostile record must never reach a config file.

Wire format (Airbnb nerve compatible):
    {"host": "10.0.0.5", "port": 8080, "name": "web-1", "weight": 10,
     "labels": {"zone": "az1"}, "haproxy_server_options": "..."}
"""

from __future__ import annotations

import base64
import binascii
import functools
import ipaddress
import json
import re
from dataclasses import dataclass, field
from typing import Any

from smartstack.record_fields import (
    MAX_LABEL_VALUE_LENGTH,
    MAX_WEIGHT,
    coerce_label_values,
    coerce_port,
    loose_labels,
    loose_options,
    loose_weight,
    share_port,
)

LabelValue = str | bool | int | float | list[Any] | dict[str, Any]  # str once decoded
MAX_RECORD_BYTES = 16 * 1024
# nerve's limit for a base64 child name (ZooKeeper lists children in one 4 MB reply).
PATH_ENCODING_MAX_LENGTH = 65536
PATH_ENCODING_PREFIX = "base64_"
MAX_NAME_LENGTH = 128
MAX_LABELS = 64
# Labels never reach haproxy.cfg (only label_filters read them): any printable key is
# fine (Yelp-style "region:my_region"); the limits only bound memory and log lines.
MAX_LABEL_KEY_LENGTH = 128
MAX_SERVER_OPTIONS_LENGTH = 1024

_DNS_LABEL = re.compile(r"^[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?$")
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]*$")  # HAProxy server-name characters
_SAFE_NAME_ONLY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]*", re.ASCII)  # fullmatch: no \n
# Control characters, line separators, and lone surrogates (not Unicode: not encodable).
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"  # no leading zero, as ipaddress
_IPV4 = re.compile(rf"{_OCTET}(?:\.{_OCTET}){{3}}", re.ASCII)
_SEQUENCE_SUFFIX = re.compile(r"_(\d+)$")
# The labels of every decoded record that has none: one dict, not one each (64 bytes per
# record). Never mutated: Registration is frozen and its readers copy (to_dict).
_NO_LABELS: dict[str, LabelValue] = {}
# json.loads's C scanner, for a record that is one object (loads adds 2 frames, 2 regexes)
_scan_json = json.JSONDecoder().scan_once
# nerve's record of a plain service (20,000 at a fleet's cold start), its keys in any order
_COMMON_KEYS = (frozenset({"host", "port", "name"}), frozenset({"host", "port", "name", "weight"}))
_new_registration, _set_field = object.__new__, object.__setattr__  # (Registration: frozen)


class InvalidRecord(ValueError):
    """A registry record that must not be used; ``reason`` says why, in one line."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Registration:
    """One live instance of a service, as registered by nerve."""

    host: str
    port: int
    name: str
    weight: int | None = None
    labels: dict[str, LabelValue] = field(default_factory=dict)
    haproxy_server_options: str | None = None
    # What decoding dropped from the record and why (e.g. options that were not a string):
    # the server is kept; the watcher logs and counts these.
    ignored: tuple[str, ...] = field(default=(), compare=False, repr=False)

    def __post_init__(self) -> None:
        # Constructing a Registration always validates, whichever side builds it.
        validate_host(self.host)
        validate_port(self.port)
        validate_name(self.name)
        if self.weight is not None:
            validate_weight(self.weight)
        if self.labels is not _NO_LABELS:  # (the shared empty dict of a record without labels)
            validate_labels(self.labels)
        if self.haproxy_server_options is not None:
            validate_server_options(self.haproxy_server_options)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def to_dict(self) -> dict[str, Any]:
        """The wire record, in nerve's field order, optional fields only when set."""
        data: dict[str, Any] = {"host": self.host, "port": self.port, "name": self.name}
        if self.weight is not None:
            data["weight"] = self.weight
        if self.haproxy_server_options is not None:
            data["haproxy_server_options"] = self.haproxy_server_options
        if self.labels:
            data["labels"] = dict(self.labels)
        return data


# --- field validators -------------------------------------------------------


def _reject_control(what: str, value: str) -> None:
    if _CONTROL.search(value):
        raise InvalidRecord(f"{what} contains a control character")


def validate_host(host: Any) -> str:
    if not isinstance(host, str) or not host:
        raise InvalidRecord("host must be a non-empty string")
    return _validated_host(host)


# A host serves many services and comes back in every record of them: parsing it as an IP
# address was ~40 % of decoding a record. Only valid hosts are remembered (a refusal
# raises, which lru_cache does not keep).
@functools.lru_cache(maxsize=4096)
def _validated_host(host: str) -> str:
    if _IPV4.fullmatch(host):  # the common case, without building an address object
        return host
    _reject_control("host", host)
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        # Python accepts any text after '%' as an IPv6 zone ("fe80::1%x backup"): that
        # would smuggle words onto a server line, and a zone means nothing off this host.
        if isinstance(address, ipaddress.IPv6Address) and address.scope_id is not None:
            raise InvalidRecord(f"host {host[:64]!r}: an IPv6 zone (%...) is not allowed")
        return host
    name = host[:-1] if host.endswith(".") else host
    if len(name) > 253 or not all(_DNS_LABEL.match(part) for part in name.split(".")):
        raise InvalidRecord(f"host {host[:64]!r} is neither an IP address nor a DNS name")
    return host


def validate_port(port: Any) -> int:
    if isinstance(port, bool) or not isinstance(port, int):
        raise InvalidRecord("port must be an integer")
    if not 1 <= port <= 65535:
        raise InvalidRecord(f"port {port} is outside 1-65535")
    return port


def validate_name(name: Any) -> str:
    if type(name) is str and len(name) <= MAX_NAME_LENGTH and _SAFE_NAME_ONLY.fullmatch(name):
        return name  # the common case in one match (no control character can be in it)
    if not isinstance(name, str) or not name:
        raise InvalidRecord("name must be a non-empty string")
    _reject_control("name", name)
    if len(name) > MAX_NAME_LENGTH or not _SAFE_NAME.match(name):
        raise InvalidRecord(
            f"name {name[:64]!r} must be 1-{MAX_NAME_LENGTH} characters of A-Z a-z 0-9 . _ : -"
        )
    return name


def validate_weight(weight: Any) -> int:
    if isinstance(weight, bool) or not isinstance(weight, int):
        raise InvalidRecord("weight must be an integer")
    if not 0 <= weight <= MAX_WEIGHT:
        raise InvalidRecord(f"weight {weight} is outside 0-{MAX_WEIGHT}")
    return weight


def validate_labels(labels: Any) -> dict[str, LabelValue]:
    if not isinstance(labels, dict):
        raise InvalidRecord("labels must be an object")
    if len(labels) > MAX_LABELS:
        raise InvalidRecord(f"more than {MAX_LABELS} labels")
    for key, value in labels.items():
        if not isinstance(key, str) or not key:
            raise InvalidRecord("label keys must be non-empty strings")
        _reject_control(f"label key {key[:64]!r}", key)
        if len(key) > MAX_LABEL_KEY_LENGTH:
            raise InvalidRecord(f"label key {key[:64]!r}... is longer than {MAX_LABEL_KEY_LENGTH}")
        if not isinstance(value, str):
            value = _label_value_text(key, value)
        _reject_control(f"label {key!r}", value)
        if len(value) > MAX_LABEL_VALUE_LENGTH:
            raise InvalidRecord(f"label {key!r} is longer than {MAX_LABEL_VALUE_LENGTH}")
    return labels


def _label_value_text(key: str, value: Any) -> str:
    """A label value that is not a string (a number, boolean, list or object) as its JSON
    text, what synapse compares. nerve writes them as configured, as Ruby nerve does (Ruby
    synapse's label_filters compare their types); decoding makes them text first."""
    try:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except ValueError:
        raise InvalidRecord(f"label {key!r} holds a number JSON cannot carry (nan, inf)") from None
    except TypeError:
        raise InvalidRecord(
            f"label {key!r} must be a string, number, boolean, list or object"
        ) from None


def validate_server_options(options: Any) -> str:
    if not isinstance(options, str):
        raise InvalidRecord("haproxy_server_options must be a string")
    _reject_control("haproxy_server_options", options)
    if len(options) > MAX_SERVER_OPTIONS_LENGTH:
        raise InvalidRecord(f"haproxy_server_options is longer than {MAX_SERVER_OPTIONS_LENGTH}")
    return options


# --- decoding ---------------------------------------------------------------

# (its old name: label_filters' values are coerced through it as the records' are)
_coerce_labels = coerce_label_values


def _load_json_object(data: bytes | str) -> dict[str, Any]:
    if isinstance(data, bytes):
        if len(data) > MAX_RECORD_BYTES:
            raise InvalidRecord(f"record is {len(data)} bytes, over {MAX_RECORD_BYTES}")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidRecord(f"record is not UTF-8 ({exc.reason})") from None
    elif isinstance(data, str):
        text = data
        if len(text.encode("utf-8", "surrogatepass")) > MAX_RECORD_BYTES:
            raise InvalidRecord(f"record is over {MAX_RECORD_BYTES} bytes")
    else:
        raise InvalidRecord(f"record is a {type(data).__name__}, not bytes")
    if text[:1] == "{" and text[-1:] == "}":  # the common record: an object, nothing around it
        try:
            obj, end = _scan_json(text, 0)
        except (StopIteration, ValueError, RecursionError):
            end = -1  # (json.loads below says why, in its words)
        if end == len(text):
            return obj  # type: ignore[no-any-return]
    if not text.strip():
        raise InvalidRecord("record is empty")
    try:
        obj = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise InvalidRecord(f"record is not valid JSON ({str(exc)[:80]})") from None
    if not isinstance(obj, dict):
        raise InvalidRecord(f"record is a JSON {type(obj).__name__}, not an object")
    return obj


def registration_from_dict(obj: dict[str, Any], fallback_name: str | None = None) -> Registration:
    """Validate a decoded record. ``fallback_name`` is used when the record has no name."""
    common = _common_registration(obj)
    if common is not None:
        return common
    for key in ("host", "port"):
        if key not in obj or obj[key] is None:
            raise InvalidRecord(f"record has no {key!r}")
    name = obj.get("name")
    if name is None or name == "":
        name = fallback_name
    if name is None:
        raise InvalidRecord("record has no 'name'")
    if not isinstance(name, str):
        name = str(name) if isinstance(name, int) and not isinstance(name, bool) else name
    # Fields Ruby synapse tolerates (a weight above 256, a null label, options that are
    # not a string) keep the server: what was changed is noted in ``ignored``.
    labels = obj.get("labels")
    labels, label_notes = loose_labels(labels) if labels else (_label_default(labels), ())
    weight, weight_notes = loose_weight(obj.get("weight"))
    options, option_notes = loose_options(obj.get("haproxy_server_options"))
    try:
        return Registration(
            # the validated-host cache hands back its own copy: a host's records share one
            # string (a host serves many services; ~60 bytes per record otherwise)
            host=validate_host(obj["host"]),
            port=coerce_port(obj["port"]),
            name=name,
            weight=weight,
            labels=labels,
            haproxy_server_options=options,
            ignored=option_notes + weight_notes + label_notes,
        )
    except InvalidRecord:
        raise
    except Exception as exc:  # defensive: nothing but InvalidRecord may escape a decoder
        raise InvalidRecord(f"record rejected ({type(exc).__name__})") from None


def _common_registration(obj: dict[str, Any]) -> Registration | None:
    """A record of nerve's common shape, each field validated once by ``__post_init__``'s
    checks, without the dataclass's ``__init__`` (~40 % of decoding it); None: any other."""
    if len(obj) > 4 or obj.keys() not in _COMMON_KEYS:  # (a dict's keys compare as a set)
        return None
    host, port, name, weight = obj["host"], obj["port"], obj["name"], obj.get("weight")
    if (
        type(host) is not str
        or type(port) is not int
        or not 0 < port < 65536
        or type(name) is not str
        or len(name) > MAX_NAME_LENGTH
        or not _SAFE_NAME_ONLY.fullmatch(name)
        or (weight is not None and (type(weight) is not int or not 0 <= weight <= MAX_WEIGHT))
        or not host
    ):
        return None  # (the general path: its coercions, its error messages)
    try:
        host = _validated_host(host)
    except InvalidRecord:
        return None
    registration = _new_registration(Registration)
    _set_field(registration, "host", host)
    _set_field(registration, "port", share_port(port))
    _set_field(registration, "name", name)
    _set_field(registration, "weight", weight)
    _set_field(registration, "labels", _NO_LABELS)
    _set_field(registration, "haproxy_server_options", None)
    _set_field(registration, "ignored", ())
    return registration


def _label_default(labels: Any) -> Any:
    """No labels (absent or ``{}``): the shared empty dict; another falsy value is refused
    by validation as it is."""
    return _NO_LABELS if labels is None or labels == {} else labels


def decode_nerve(data: bytes | str, fallback_name: str | None = None) -> Registration:
    """Decode nerve's JSON record. Raises only InvalidRecord."""
    return registration_from_dict(_load_json_object(data), fallback_name)


def same_record(data: bytes, ours: bytes) -> bool:
    """Whether ``data`` is the record ``ours`` as readers decode it, in other bytes (nerve
    before 4908bdc wrote label numbers and booleans as text): an upgrade's leftover."""
    if data == ours:
        return True
    try:
        return decode_nerve(data).to_dict() == decode_nerve(ours).to_dict()
    except InvalidRecord:
        return False


def decode_serverset(
    data: bytes | str, endpoint_name: str | None = None, fallback_name: str | None = None
) -> Registration:
    """Decode a Finagle/Twitter serverset member.

    The endpoint is ``serviceEndpoint``, or ``additionalEndpoints[endpoint_name]``
    when an endpoint name is configured; the name is the shard number as text.
    Members whose ``status`` is present and not ALIVE are refused.
    """
    obj = _load_json_object(data)
    status = obj.get("status", "ALIVE")
    if status != "ALIVE":
        raise InvalidRecord(f"serverset member status is {str(status)[:32]!r}, not ALIVE")
    if endpoint_name:
        endpoints = obj.get("additionalEndpoints")
        if not isinstance(endpoints, dict) or not isinstance(endpoints.get(endpoint_name), dict):
            raise InvalidRecord(f"serverset member has no additionalEndpoint {endpoint_name!r}")
        endpoint = endpoints[endpoint_name]
    else:
        endpoint = obj.get("serviceEndpoint")
        if not isinstance(endpoint, dict):
            raise InvalidRecord("serverset member has no serviceEndpoint")
    shard = obj.get("shard")
    name = str(shard) if isinstance(shard, int) and not isinstance(shard, bool) else fallback_name
    return registration_from_dict(
        {"host": endpoint.get("host"), "port": endpoint.get("port"), "name": name}
    )


def encode(registration: Registration) -> bytes:
    """The record as nerve writes it: compact JSON, UTF-8, non-ASCII characters as they are
    (Ruby's JSON.generate does not escape them: the same bytes, so the same node names with
    use_path_encoding)."""
    return json.dumps(registration.to_dict(), separators=(",", ":"), ensure_ascii=False).encode(
        "utf-8"
    )


# --- etcd keys ---------------------------------------------------------------
# Beside the ZooKeeper names below: nerve writes and synapse reads the same layout.


def etcd_prefix(path: str | None) -> str:
    """The key prefix a service's records live under (``<path>/``): synapse's range."""
    return (path or "/").rstrip("/") + "/"


def etcd_key(path: str, registration: Registration) -> str:
    """nerve's key for a registration: ``<path>/<name>_<host>_<port>``.

    Deterministic, so a restarted nerve overwrites its old key instead of adding one.
    """
    return f"{etcd_prefix(path)}{registration.name}_{registration.host}_{registration.port}"


# --- ZooKeeper child names --------------------------------------------------


def child_prefix(instance_id: str) -> str:
    """The name nerve gives a sequential znode before ZooKeeper appends 10 digits."""
    return f"{instance_id}_"


def encode_child_prefix(registration: Registration) -> str | None:
    """nerve's ``use_path_encoding`` name prefix, or None when the record is too long for it."""
    encoded = base64.urlsafe_b64encode(encode(registration)).decode("ascii")
    if len(encoded) > PATH_ENCODING_MAX_LENGTH:
        return None
    return f"{PATH_ENCODING_PREFIX}{len(encoded)}_{encoded}_"


def decode_child_name(child: str) -> Registration | None:
    """Decode a ``base64_<len>_<b64>_<seq>`` child name; None if it is not path-encoded.

    Raises InvalidRecord when it claims to be encoded but is not valid.
    """
    if not child.startswith(PATH_ENCODING_PREFIX):
        return None
    rest = child[len(PATH_ENCODING_PREFIX) :]
    length_text, sep, payload = rest.partition("_")
    if not sep or not (length_text.isascii() and length_text.isdigit()):  # (not "¹")
        raise InvalidRecord("path-encoded child name has no length")
    length = int(length_text)
    if length > PATH_ENCODING_MAX_LENGTH or length > len(payload):
        raise InvalidRecord("path-encoded child name is shorter than its length")
    try:
        raw = base64.urlsafe_b64decode(payload[:length].encode("ascii"))
    except (binascii.Error, ValueError, UnicodeEncodeError):
        raise InvalidRecord("path-encoded child name is not valid base64") from None
    return decode_nerve(raw)


def sequence_of(child: str) -> int | None:
    """The sequence number ZooKeeper appended to a child name, if any."""
    match = _SEQUENCE_SUFFIX.search(child)
    return int(match.group(1)) if match else None
