"""Registry credentials shared by nerve's and synapse's configs (all keys here are ours).

- ``ZooKeeperAuth``: digest (``addauth``) or SASL DIGEST-MD5 identity for a ZooKeeper
  ensemble, ``credential: "user:password"`` either way.
- ``EtcdTLS``: the CA to verify etcd with and, for mutual TLS, a client certificate + key.
  Files are checked when the config is loaded and read again on every (re)connect, so a
  renewed certificate is used from the next connection on.
- What etcd answers about credentials, the same words on both transports.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from typing import Literal

from smartstack.modelbase import ConfigDict, ConfigModel, model_validator


class ZooKeeperAuth(ConfigModel):
    scheme: Literal["digest", "sasl"] = "digest"
    credential: str  # "user:password"

    @model_validator(mode="after")
    def _usable(self) -> ZooKeeperAuth:
        user, sep, _ = self.credential.partition(":")
        if not (user and sep):
            raise ValueError("credential must be 'user:password'")
        # kazoo does SASL through the optional pure-sasl package; without it every connect
        # would fail. Say so now rather than never connect.
        if self.scheme == "sasl" and importlib.util.find_spec("puresasl") is None:
            raise ValueError("scheme sasl needs the pure-sasl package, which is not installed")
        return self

    def pair(self) -> tuple[str, str]:
        """(scheme, credential): what smartstack.zookeeper connections are keyed and built by."""
        return self.scheme, self.credential


# etcd's answer to Authenticate while its auth is off: etcd's own client (clientv3) carries on
# without a token, so credentials can be configured before `etcdctl auth enable`.
AUTH_NOT_ENABLED = "authentication is not enabled"
# Answers that a new token may cure: etcd forgot ours (--auth-token-ttl, a restart), it was
# issued before an auth change, or we have none because auth was off when we asked.
TOKEN_REFUSALS = ("invalid auth token", "revision of auth store is old", "user name is empty")
# A BEGIN line's label. Nothing about the line's end: OpenSSL accepts trailing blanks, CRLF.
PEM_BEGIN = re.compile(rb"-----BEGIN ([^\r\n]*?)-----")


def token_refused(message: str) -> bool:
    """Whether etcd's error message says to authenticate again."""
    return any(words in message for words in TOKEN_REFUSALS)


class TLSFileError(ConnectionError):
    """A TLS file missing, empty or half written at a (re)connect: a renewal that truncates
    then writes, a full disk. gRPC aborts the whole process on an empty certificate or key
    (a failed check in its C core); raised instead, like a failed connect, so that the next
    connect reads the file again."""


def read_pem(key: str, path: str) -> bytes:
    """The file's bytes unless gRPC would abort on it or it is clearly half written: empty,
    no BEGIN line, or a BEGIN without its END (TLSFileError, saying which). The rest is left
    to OpenSSL, which accepts comments, trailing blanks, CRLF and chains."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise TLSFileError(f"etcd_tls: {key} {path}: {exc.strerror or exc}") from exc
    problem = pem_problem(data)
    if problem:
        raise TLSFileError(f"etcd_tls: {key} {path} {problem} ({len(data)} bytes)")
    return data


def pem_problem(data: bytes) -> str | None:
    """What makes ``data`` unusable as PEM now (None: nothing we can tell)."""
    if not data.strip():
        return "is empty"
    starts = [found.start() for found in re.finditer(rb"-----BEGIN ", data)]
    if not starts:
        return "holds no -----BEGIN line"
    for i, start in enumerate(starts):
        begin = PEM_BEGIN.match(data, start)
        if begin is None:
            return "is incomplete: its last -----BEGIN line is cut"
        # Its END before the next BEGIN: a cut block followed by a whole one is still cut.
        stop = starts[i + 1] if i + 1 < len(starts) else len(data)
        end = b"-----END " + begin[1] + b"-----"
        if data.find(end, begin.end(), stop) < 0:
            label = begin[1].decode("ascii", "replace")
            return f"is incomplete: -----BEGIN {label}----- without its END line"
    return None


class EtcdTLS(ConfigModel):
    """TLS to etcd. No ``ca_cert``: the system's CA roots. ``cert_cert`` + ``cert_key``:
    our client certificate (etcd's ``--client-cert-auth``)."""

    # Hashable: connections are shared by the services with the same endpoints and identity.
    model_config = ConfigDict(**ConfigModel.model_config, frozen=True)

    ca_cert: str | None = None
    cert_cert: str | None = None
    cert_key: str | None = None

    @model_validator(mode="after")
    def _usable(self) -> EtcdTLS:
        if (self.cert_cert is None) != (self.cert_key is None):
            raise ValueError("cert_cert and cert_key go together (client certificate and key)")
        for key in ("ca_cert", "cert_cert", "cert_key"):
            path = getattr(self, key)
            if path is not None and not Path(path).is_file():
                raise ValueError(f"{key}: no such file: {path}")
        return self

    def read(self) -> tuple[bytes | None, bytes | None, bytes | None]:
        """(root certificates, private key, certificate chain) for grpc.ssl_channel_credentials;
        TLSFileError when one is not a complete PEM file (a renewal under way)."""

        def load(key: str) -> bytes | None:
            path = getattr(self, key)
            return read_pem(key, path) if path else None

        return load("ca_cert"), load("cert_key"), load("cert_cert")


def check_etcd_security(
    endpoints: list[str], user: str | None, password: str | None, tls: EtcdTLS | None
) -> None:
    """ValueError for etcd settings that could never work, or would not be what they say."""
    if (user is None) != (password is None):
        raise ValueError("etcd user and password go together")
    for endpoint in endpoints:
        # An https:// endpoint reached in clear text would carry the password unencrypted.
        if endpoint.startswith("https://") and tls is None:
            raise ValueError(f"endpoint {endpoint} is https: set etcd_tls (at least {{}})")
        if endpoint.startswith("http://") and tls is not None:
            raise ValueError(f"endpoint {endpoint} is http but etcd_tls is set: use https://")
