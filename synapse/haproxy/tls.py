"""TLS termination on the shared frontend (edge): certificates from a directory, by SNI.

``haproxy.tls.cert_dir`` holds one PEM per domain (certificate chain and key in one
file). synapse lists the valid ones in a crt-list file beside the HAProxy config and binds
``ssl crt-list`` on the shared frontend; HAProxy picks a certificate by SNI from each
certificate's names. The crt-list always starts with a self-signed placeholder that synapse
generates: HAProxy refuses an ``ssl`` bind without a certificate (an empty directory must
still start), and the first certificate of a bind is its default one, which the runtime
API can never remove. So the placeholder answers a client without SNI or with a name no
certificate covers, and every real certificate can come and go at runtime.

The crt-list never names the operator's files: synapse writes each PEM it accepted into
its own directory beside the config (``<name>.certs/``, normalised, mode 0600) and lists
those copies. A reload or a restart then reads what HAProxy served, even when the file in
``cert_dir`` is half-written or broken at that moment (a broken file listed would make
HAProxy refuse the whole config); ``synapse.haproxy.certstore`` decides which copies stay.
A copy carries the files HAProxy loads beside a certificate (``.ocsp``, ``.issuer``:
``synapse.haproxy.certfiles``) when cert_dir has them beside the PEM and they are fit
(``synapse.haproxy.extracheck``).

A certificate added, replaced or removed later (its PEM or an extra file) is a runtime
change (``new ssl cert`` / ``set ssl cert`` / ``commit ssl cert`` / ``add ssl crt-list`` /
``del ...``) on the copy's name, never a reload: ``runtime_commands`` computes them. PEMs
are checked with the ``openssl`` CLI (``synapse.haproxy.pemcheck``).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from synapse.atomic import read_text, write_atomic
from synapse.edge_config import HAProxyTLS
from synapse.haproxy import certfiles, extracheck
from synapse.haproxy.certfiles import Cert, normalised
from synapse.haproxy.pemcheck import checked_problem, is_checked, openssl


@dataclass(frozen=True)
class TLSPaths:
    crt_list: Path
    placeholder: Path
    copies: Path  # synapse's copies of the accepted PEMs: what the crt-list names

    def copy_of(self, source: Path) -> Path:
        """The copy of ``cert_dir``'s file ``source`` (cert_dir is flat: names are unique)."""
        return self.copies / source.name


def tls_paths(config_path: Path) -> TLSPaths:
    """Files synapse keeps beside the HAProxy config."""
    return TLSPaths(
        crt_list=config_path.with_name(f"{config_path.stem}.crt-list"),
        placeholder=config_path.with_name(f"{config_path.stem}.placeholder.pem"),
        copies=config_path.with_name(f"{config_path.stem}.certs"),
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


def candidates(cert_dir: Path) -> list[Path]:
    """The files of ``cert_dir`` the scan takes: ``*.pem`` regular files (or links to one),
    not hidden (``.ansible_tmp…pem``, an editor's or synapse's own temp files)."""
    return [p for p in sorted(cert_dir.glob("*.pem")) if not p.name.startswith(".") and p.is_file()]


DEFERRED = "not checked yet"  # scan's reason for a PEM ``defer`` left to the watcher


def scan(
    cert_dir: Path, defer: Callable[[Path], bool] | None = None
) -> tuple[dict[Path, str], dict[Path, str]]:
    """The usable PEMs of ``cert_dir`` (path -> text) and the refused ones (path -> why).
    A PEM openssl has not checked yet goes as ``DEFERRED`` when ``defer(path)`` says so."""
    usable: dict[Path, str] = {}
    refused: dict[Path, str] = {}
    for path in candidates(cert_dir):
        text = read_text(path)
        if text is not None and defer is not None and not is_checked(text) and defer(path):
            refused[path] = DEFERRED
            continue
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
        done = openssl(
            "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-subj", "/CN=synapse-placeholder", "-days", "3650",
            "-keyout", str(key), "-out", str(cert),
        )  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"cannot make a placeholder certificate: {done.stderr[-300:]}")
        write_atomic(path, cert.read_text() + key.read_text(), mode=0o600)


def crt_list_text(certs: Iterable[Path], placeholder: Path) -> str:
    """The crt-list: the placeholder (the default certificate), then every listed copy."""
    return "".join(f"{path}\n" for path in [placeholder, *sorted(certs)])


def write_listed(paths: TLSPaths, certs: Mapping[Path, Cert]) -> None:
    """Make the copies (copy path -> certificate, with its extra files) and the crt-list
    naming them what HAProxy reads next; then remove every other file of the copies'
    directory (copies no longer listed and their extra files). Copies first and removals
    last: the crt-list on disk never names a missing file (a restart from the files)."""
    if checked_problem(read_text(paths.placeholder) or "") is not None:
        make_placeholder(paths.placeholder)
    paths.copies.mkdir(mode=0o700, exist_ok=True)
    for path, cert in certs.items():
        certfiles.write_copy(path, cert)
    text = crt_list_text(certs, paths.placeholder)
    if read_text(paths.crt_list) != text:
        write_atomic(paths.crt_list, text)
    wanted = {file for path, cert in certs.items() for file in certfiles.files_of(path, cert)}
    for stale in paths.copies.iterdir():  # (hidden: a temp file being written)
        if stale not in wanted and not stale.name.startswith(".") and stale.is_file():
            stale.unlink(missing_ok=True)


def write_tls_files(tls: HAProxyTLS, paths: TLSPaths) -> tuple[dict[Path, Cert], dict[Path, str]]:
    """Scan ``cert_dir`` and write copies of its usable PEMs (with their fit extra files)
    and the crt-list (and the placeholder when it is needed), with no memory of earlier
    scans (``synapse -k``'s check; synapse itself keeps the last good ones: ``certstore``).
    Returns the listed copies (copy -> certificate) and the refused PEMs (file -> why)."""
    usable, refused = scan(Path(tls.cert_dir))
    listed = {
        paths.copy_of(path): extracheck.checked(path, normalised(text)).cert
        for path, text in usable.items()
    }
    write_listed(paths, listed)
    return listed, refused


def runtime_commands(
    old: Mapping[Path, Cert], new: Mapping[Path, Cert], paths: TLSPaths
) -> list[str]:
    """Runtime API commands that turn the served certificates ``old`` into ``new`` (both
    keyed by the name HAProxy knows them by: the copy's path).

    Payloads use the runtime API's ``<<`` form (no empty line inside, then an empty line);
    a changed PEM or extra file sends the whole certificate in one transaction
    (``certfiles.set_commands``). The placeholder stays first in the crt-list: it is never
    touched.
    """
    crt_list = paths.crt_list
    commands: list[str] = []
    for path in sorted(new):
        sets = certfiles.set_commands(path, new[path])
        if path not in old:
            commands += [f"new ssl cert {path}", *sets, f"commit ssl cert {path}",
                         f"add ssl crt-list {crt_list} {path}"]  # fmt: skip
        elif old[path] != new[path]:
            commands += [*sets, f"commit ssl cert {path}"]
    for path in sorted(set(old) - set(new)):
        commands += [f"del ssl crt-list {crt_list} {path}", f"del ssl cert {path}"]
    return commands
