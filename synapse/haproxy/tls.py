"""TLS termination on the shared frontend (edge): certificates from a directory, by SNI.

``haproxy.tls.cert_dir`` holds one PEM per domain (certificate chain and key in one
file). synapse lists the valid ones in a crt-list file beside the HAProxy config and binds
``ssl crt-list`` on the shared frontend; HAProxy picks a certificate by SNI from each
certificate's names. The crt-list always starts with a self-signed placeholder that synapse
generates: HAProxy refuses an ``ssl`` bind without a certificate (an empty directory must
still start), and the first certificate of a bind is its default one, which the runtime
API can never remove. So the placeholder answers a client without SNI or with a name no
certificate covers, and every real certificate can come and go at runtime.

A certificate added, replaced or removed later is a runtime change (``new ssl cert`` /
``set ssl cert`` / ``commit ssl cert`` / ``add ssl crt-list`` / ``del ...``), never a
reload: ``runtime_commands`` computes them from two scans; a PEM that does not hold a
certificate and its matching key (half-written, broken) is refused and the old one
keeps serving.

Certificates are checked with the ``openssl`` CLI (Debian package ``openssl``), so synapse
needs no crypto library.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from synapse.atomic import read_text, write_atomic
from synapse.edge_config import HAProxyTLS


@dataclass(frozen=True)
class TLSPaths:
    crt_list: Path
    placeholder: Path


def tls_paths(config_path: Path) -> TLSPaths:
    """Files synapse keeps beside the HAProxy config."""
    return TLSPaths(
        crt_list=config_path.with_name(f"{config_path.stem}.crt-list"),
        placeholder=config_path.with_name(f"{config_path.stem}.placeholder.pem"),
    )


def frontend_lines(
    tls: HAProxyTLS, bind_address: str, accept_proxy: bool, paths: TLSPaths
) -> list[str]:
    """The shared frontend's TLS bind, and the HTTPS redirect and HSTS when asked for."""
    bind = (
        f"bind {tls.bind_address or bind_address}:{tls.port} ssl crt-list {paths.crt_list} "
        f"ssl-min-ver {tls.min_version}"
    )
    if tls.alpn:
        bind += f" alpn {','.join(tls.alpn)}"
    if accept_proxy:
        bind += " accept-proxy"
    lines = [bind]
    if tls.redirect_http:
        lines.append("http-request redirect scheme https code 301 unless { ssl_fc }")
    if tls.hsts is not None:
        lines.append(
            f'http-response set-header Strict-Transport-Security "max-age={tls.hsts}" '
            "if { ssl_fc }"
        )
    return lines


def _openssl(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("openssl")
    if binary is None:
        raise FileNotFoundError("openssl not found on PATH (Debian package openssl)")
    return subprocess.run(
        [binary, *args], input=stdin, capture_output=True, text=True, timeout=30, check=False
    )


def pem_problem(text: str) -> str | None:
    """Why ``text`` is not a usable PEM (certificate plus its private key), or None."""
    if "-----BEGIN CERTIFICATE-----" not in text or "PRIVATE KEY-----" not in text:
        return "needs a certificate and its private key in one PEM file"
    cert = _openssl("x509", "-noout", "-pubkey", stdin=text)
    if cert.returncode != 0:
        return f"certificate unreadable: {cert.stderr.strip()[-200:]}"
    key = _openssl("pkey", "-pubout", stdin=text)
    if key.returncode != 0:
        return f"private key unreadable: {key.stderr.strip()[-200:]}"
    if cert.stdout.strip() != key.stdout.strip():
        return "the private key does not belong to the certificate"
    return None


_CHECKED: dict[str, str | None] = {}  # PEM sha256 -> pem_problem: the watcher scans every second
_CHECKED_MAX = 4096


def checked_problem(text: str) -> str | None:
    """``pem_problem``, asked of openssl once per content."""
    digest = hashlib.sha256(text.encode()).hexdigest()
    if digest not in _CHECKED:
        if len(_CHECKED) >= _CHECKED_MAX:
            _CHECKED.clear()
        _CHECKED[digest] = pem_problem(text)
    return _CHECKED[digest]


def scan(cert_dir: Path) -> tuple[dict[Path, str], dict[Path, str]]:
    """The usable PEMs of ``cert_dir`` (path -> text) and the refused ones (path -> why)."""
    usable: dict[Path, str] = {}
    refused: dict[Path, str] = {}
    for path in sorted(cert_dir.glob("*.pem")):
        text = read_text(path)
        problem = "unreadable" if text is None else checked_problem(text)
        if problem is None and text is not None:
            usable[path] = text
        else:
            refused[path] = problem or "unreadable"
    return usable, refused


def make_placeholder(path: Path) -> None:
    """A self-signed certificate (and key) for an empty ``cert_dir``."""
    with tempfile.TemporaryDirectory() as tmp:
        key, cert = Path(tmp) / "key.pem", Path(tmp) / "cert.pem"
        done = _openssl(
            "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-subj", "/CN=synapse-placeholder", "-days", "3650",
            "-keyout", str(key), "-out", str(cert),
        )  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"cannot make a placeholder certificate: {done.stderr[-300:]}")
        write_atomic(path, cert.read_text() + key.read_text(), mode=0o600)


def crt_list_text(certs: Mapping[Path, str], placeholder: Path) -> str:
    """The crt-list: the placeholder (the default certificate), then every usable one."""
    return "".join(f"{path}\n" for path in [placeholder, *sorted(certs)])


def write_tls_files(tls: HAProxyTLS, paths: TLSPaths) -> tuple[dict[Path, str], dict[Path, str]]:
    """Scan ``cert_dir`` and write the crt-list (and the placeholder when it is needed);
    call it before HAProxy reads the config. Returns the usable and refused PEMs."""
    usable, refused = scan(Path(tls.cert_dir))
    if pem_problem(read_text(paths.placeholder) or "") is not None:
        make_placeholder(paths.placeholder)
    text = crt_list_text(usable, paths.placeholder)
    if read_text(paths.crt_list) != text:
        write_atomic(paths.crt_list, text)
    return usable, refused


def runtime_commands(
    old: Mapping[Path, str], new: Mapping[Path, str], paths: TLSPaths
) -> list[str]:
    """Runtime API commands that turn the served certificates ``old`` into ``new``.

    Payloads use the runtime API's ``<<`` form (the PEM, then an empty line). The
    placeholder stays first in the crt-list: it is never touched.
    """
    crt_list = paths.crt_list
    commands: list[str] = []
    for path in sorted(new):
        text = new[path].strip()
        if path not in old:
            commands += [
                f"new ssl cert {path}",
                f"set ssl cert {path} <<\n{text}\n",
                f"commit ssl cert {path}",
                f"add ssl crt-list {crt_list} {path}",
            ]
        elif old[path].strip() != text:
            commands += [f"set ssl cert {path} <<\n{text}\n", f"commit ssl cert {path}"]
    for path in sorted(set(old) - set(new)):
        commands += [f"del ssl crt-list {crt_list} {path}", f"del ssl cert {path}"]
    return commands
