"""The edge on a real HAProxy 2.6: routes by real requests, a runtime route, access logs over
UDP, proxy protocol in and out, queue keys. Configs are rendered by synapse's Renderer and
map files written by synapse.haproxy.routes."""

from __future__ import annotations

import http.client
import json
import socket
import time
from pathlib import Path

import pytest
from haproxy_helpers import haproxy_config, server, service

from synapse.config import load_synapse_config
from synapse.haproxy.fd_limit import fd_problem, host_limit
from synapse.haproxy.render import Renderer
from synapse.haproxy.routes import map_paths, routes_of, runtime_commands, write_map_files
from synapse.haproxy.tls import tls_paths, write_tls_files
from synapse.model import DesiredService
from testbed.haproxy import check_config
from testbed.process import free_port


def edge_config(directory: Path, **overrides):
    settings = {
        "config_file_path": str(directory / "haproxy.cfg"),
        "global": [f"stats socket {directory}/admin.sock mode 600 level admin", "maxconn 256"],
    }
    return haproxy_config(**{**settings, **overrides})


def start_edge(haproxy_factory, directory: Path, config, services: list[DesiredService]):
    """Render the config and the map files into ``directory`` and start HAProxy on them."""
    text = Renderer(config).render(services).text
    path = Path(config.config_file_path)
    path.write_text(text)
    write_map_files(routes_of(services), map_paths(path))
    check_config(path)
    return haproxy_factory(config_path=path, workdir=directory), text


def get(port: int, host: str | None, path: str = "/") -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.putrequest("GET", path, skip_host=True)
        if host is not None:
            conn.putheader("Host", host)
        conn.endheaders()
        response = conn.getresponse()
        return response.status, response.read().decode()
    finally:
        conn.close()


def routed(name: str, backend, **routes: list[str]) -> DesiredService:
    return service(
        name, [server("127.0.0.1", backend.port, backend.name)], backend_only=True, routes=routes
    )


@pytest.fixture
def backends(http_backend_factory):
    names = ("shop", "api", "api_v2", "tenant", "deep", "static", "fallback")
    return {name: http_backend_factory(name) for name in names}


def edge_services(backends) -> list[DesiredService]:
    b = backends
    return [
        routed("shop", b["shop"], hosts=["shop.example.com"]),
        routed("api", b["api"], hosts=["shop.example.com", "api.example.com"], paths=["/api"]),
        routed("api_v2", b["api_v2"], hosts=["shop.example.com"], paths=["/api/v2"]),
        routed("tenant", b["tenant"], hosts=["*.shop.example.com"]),
        routed("deep", b["deep"], hosts=["*.shop.example.com"], paths=["/deep"]),
        routed("static", b["static"], paths=["/static"]),
    ]


def test_routes_on_a_real_haproxy(haproxy_factory, sockdir, backends):
    port = free_port()
    config = edge_config(sockdir, shared_frontend=[f"bind 127.0.0.1:{port}"])
    services = edge_services(backends)
    proc, _ = start_edge(haproxy_factory, sockdir, config, services)
    expected = [
        ("shop.example.com", "/", 200, "shop"),  # exact host, hosts only: any path
        ("SHOP.example.com:8080", "/cart", 200, "shop"),  # case and port do not matter
        ("shop.example.com.", "/", 200, "shop"),  # an FQDN's trailing dot neither
        ("eu.shop.example.com.:443", "/", 200, "tenant"),
        ("shop.example.com..", "/", 404, ""),  # (one dot only: that is no host name)
        ("shop.example.com", "/api/x", 200, "api"),  # host + path
        ("shop.example.com", "/api/v2/items", 200, "api_v2"),  # longest prefix wins
        ("shop.example.com", "/api/v", 200, "api"),
        ("shop.example.com", "/static/a.css", 200, "shop"),  # exact host beats paths-only
        ("api.example.com", "/api", 200, "api"),
        ("api.example.com", "/other", 404, ""),  # host known, path not: nothing else fits
        ("eu.shop.example.com", "/", 200, "tenant"),  # wildcard
        ("eu.shop.example.com", "/deep/1", 200, "deep"),  # wildcard + path
        ("a.eu.shop.example.com", "/", 404, ""),  # a wildcard covers one label
        ("other.example.com", "/static/x", 200, "static"),  # paths only: any host
        (None, "/static/x", 200, "static"),  # no Host header at all
        ("other.example.com", "/", 404, ""),
        # A Host holding a path is no host: it routed by host + path ("/api" + "/secret"
        # matched shop.example.com/api, the api service got /secret).
        ("shop.example.com/api", "/secret", 404, ""),
        ("shop.example.com/api/v2", "/", 404, ""),
        ("x.shop.example.com/deep", "/", 404, ""),
        ("shop.example.com/", "/static/x", 200, "static"),  # as without a Host
        # One Host header listing two names is neither (HAProxy's hdr() took the last).
        ("api.example.com, shop.example.com", "/", 404, ""),
    ]
    got = [(h, p, *get(port, h, p)) for h, p, _, _ in expected]
    assert got == [(h, p, s, body) for h, p, s, body in expected]

    # A new host at runtime: `add map` on the admin socket, no reload.
    worker = proc.worker_pids()
    assert get(port, "new.example.com", "/")[0] == 404
    old = routes_of(services)
    services[0] = routed("shop", backends["shop"], hosts=["shop.example.com", "new.example.com"])
    new = routes_of(services)
    commands = runtime_commands(old, new, map_paths(Path(config.config_file_path)))
    assert commands == [f"add map {sockdir}/haproxy.routes-exact.map new.example.com/ shop"]
    for command in commands:
        assert proc.runtime(command).strip() == ""
    assert get(port, "new.example.com", "/x") == (200, "shop")
    assert proc.worker_pids() == worker
    # ... and removing it again
    for command in runtime_commands(new, old, map_paths(Path(config.config_file_path))):
        assert proc.runtime(command).strip() == ""
    assert get(port, "new.example.com", "/x")[0] == 404
    assert proc.worker_pids() == worker


def test_unrouted_requests_go_to_the_default_backend(haproxy_factory, sockdir, backends):
    port = free_port()
    shared = [f"bind 127.0.0.1:{port}", "default_backend fallback"]
    config = edge_config(sockdir, shared_frontend=shared)
    fallback = service(
        "fallback",
        [server("127.0.0.1", backends["fallback"].port, "fallback")],
        backend_only=True,
    )
    start_edge(haproxy_factory, sockdir, config, [*edge_services(backends), fallback])
    assert get(port, "other.example.com", "/") == (200, "fallback")
    assert get(port, "shop.example.com", "/") == (200, "shop")


class SyslogListener:
    """A UDP socket on 127.0.0.1 collecting datagrams."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.address = f"127.0.0.1:{self.sock.getsockname()[1]}"

    def collect(self, count: int, timeout: float = 10.0) -> list[str]:
        lines: list[str] = []
        deadline = time.monotonic() + timeout
        while len(lines) < count and time.monotonic() < deadline:
            try:
                lines.append(self.sock.recv(65536).decode())
            except TimeoutError:
                continue
        # anything more that arrives shortly after is an extra line (must not exist)
        end = time.monotonic() + 0.5
        while time.monotonic() < end:
            try:
                lines.append(self.sock.recv(65536).decode())
            except TimeoutError:
                continue
        return lines


@pytest.fixture
def syslog():
    listener = SyslogListener()
    yield listener
    listener.sock.close()


def test_json_access_logs_one_line_per_request(haproxy_factory, sockdir, backends, syslog):
    port, web_port = free_port(), free_port()
    config = edge_config(
        sockdir,
        shared_frontend=[f"bind 127.0.0.1:{port}"],
        logging={"address": syslog.address, "format": "json"},
    )
    web = service("web", [server("127.0.0.1", backends["shop"].port, "shop")], port=web_port)
    start_edge(haproxy_factory, sockdir, config, [*edge_services(backends), web])
    requests = [
        ("shop.example.com", '/cart?q="x"'),
        ("eu.shop.example.com", "/a\\b"),
        ("nowhere.example.com", "/"),
        # routed as no host (404): logged whole, not as its last name (hdr splits at ',')
        ("api.example.com, shop.example.com", "/list"),
    ]
    for host, path in requests:
        get(port, host, path)
    get(web_port, "web.local", "/w")
    lines = syslog.collect(len(requests) + 1)
    assert len(lines) == len(requests) + 1, lines
    records = [json.loads(line[line.index("{") :]) for line in lines]
    by_path = {(r["host"], r["path"]): r for r in records}
    assert by_path[("shop.example.com", "/cart")]["backend"] == "shop"
    assert by_path[("shop.example.com", "/cart")]["status"] == 200
    assert by_path[("eu.shop.example.com", "/a\\b")]["backend"] == "tenant"
    assert by_path[("nowhere.example.com", "/")]["status"] == 404
    assert by_path[("api.example.com, shop.example.com", "/list")]["status"] == 404
    assert by_path[("web.local", "/w")]["frontend"] == "web"
    assert all(line.startswith("<134>") for line in lines)  # local0.info


@pytest.mark.parametrize("fmt", ["httplog", "tcplog"])
def test_httplog_and_tcplog_access_logs(haproxy_factory, sockdir, backends, syslog, fmt):
    port = free_port()
    config = edge_config(
        sockdir,
        shared_frontend=[f"bind 127.0.0.1:{port}"],
        logging={"address": syslog.address, "format": fmt, "facility": "local3"},
    )
    start_edge(haproxy_factory, sockdir, config, edge_services(backends))
    for _ in range(3):
        assert get(port, "shop.example.com", "/x") == (200, "shop")
    lines = syslog.collect(3)
    assert len(lines) == 3, lines
    assert all(line.startswith("<158>") for line in lines)  # local3.info
    assert all(("GET /x HTTP/1.1" in line) == (fmt == "httplog") for line in lines)
    assert all("shared-frontend shop/shop" in line for line in lines)


def test_proxy_protocol_in_and_out_and_queue_keys(haproxy_factory, sockdir, backends):
    """outer (send_proxy_v2) -> inner (accept_proxy) -> backend: both ends must agree."""
    outer_port, inner_port = free_port(), free_port()
    inner = service(
        "inner",
        [server("127.0.0.1", backends["shop"].port, "shop")],
        port=inner_port,
        accept_proxy=True,
        maxconn=2,
        maxqueue=10,
        timeout_queue="2s",
    )
    outer = service(
        "outer",
        [server("127.0.0.1", inner_port, "inner")],
        port=outer_port,
        send_proxy_v2=True,
        server_options="check inter 30s",
    )
    config = edge_config(sockdir)
    proc, text = start_edge(haproxy_factory, sockdir, config, [inner, outer])
    assert f"bind localhost:{inner_port} accept-proxy" in text
    assert "timeout queue 2s" in text
    assert get(outer_port, "x", "/") == (200, "shop")

    # A PROXY v1 header written by hand; without it the inner frontend refuses the request.
    with socket.create_connection(("127.0.0.1", inner_port), timeout=5) as sock:
        sock.sendall(f"PROXY TCP4 192.0.2.7 127.0.0.1 40000 {inner_port}\r\n".encode())
        sock.sendall(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
        answer = b"".join(iter(lambda: sock.recv(65536), b""))
    assert answer.startswith(b"HTTP/1.0 200") and answer.endswith(b"shop")
    assert not _answers(inner_port)

    # the queue keys reached HAProxy: the server's limits as its stats report them
    stats = proc.runtime("show stat -1 4 -1 typed")
    assert _stat(stats, "inner", "shop", "slim") == 2
    assert _stat(stats, "inner", "shop", "qlimit") == 10


def _answers(port: int) -> bool:
    """A request without the PROXY header gets no HTTP answer (HAProxy closes)."""
    try:
        get(port, "x", "/")
    except (http.client.HTTPException, ConnectionError):
        return False
    return True


def _stat(stats: str, backend: str, server_prefix: str, field: str) -> int | None:
    """One field of one server from `show stat typed` (`S.<iid>.<sid>.<n>.<field>.1:...:v`)."""
    rows: dict[tuple[str, str], dict[str, str]] = {}
    for line in stats.splitlines():
        fields = line.split(":", 3)  # name:origin+nature+scope:type:value
        parts = fields[0].split(".")
        if parts[0] == "S" and len(parts) >= 5 and len(fields) == 4:
            rows.setdefault((parts[1], parts[2]), {})[parts[4]] = fields[3]
    for row in rows.values():
        if row.get("pxname") == backend and row.get("svname", "").startswith(server_prefix):
            return int(row[field]) if row.get(field, "").isdigit() else None
    return None


def test_the_documented_edge_example_passes_haproxy_check(tmp_path):
    example = Path(__file__).parents[3] / "examples" / "edge" / "synapse.yaml"
    config, warnings = load_synapse_config(example)
    assert warnings == []
    assert config.haproxy is not None
    assert config.haproxy.tls is not None
    certs = config.haproxy.tls.model_copy(update={"cert_dir": str(tmp_path)})
    hap = config.haproxy.model_copy(
        update={"config_file_path": str(tmp_path / "haproxy.cfg"), "tls": certs}
    )
    services = [
        DesiredService(name, svc, [server("10.0.0.1", 8080, "a")])
        for name, svc in config.services.items()
    ]
    text = Renderer(hap).render(services).text
    path = tmp_path / "haproxy.cfg"
    path.write_text(text)
    write_map_files(routes_of(services), map_paths(path))
    write_tls_files(certs, tls_paths(path))  # an empty cert_dir: the placeholder only
    check_config(path)
    # `synapse -k` also checks the host's open-file limit: the example's maxconn 20000
    # fits the unit of docs/deploy.md (LimitNOFILE=65536), not a 20,000 default.
    global_lines = list(config.haproxy.global_)
    assert fd_problem("haproxy", global_lines, host_limit(65536, 1048576, False)) is None
    assert "40013" in (fd_problem("haproxy", global_lines, host_limit(20000, 1048576, False)) or "")
    assert "bind 0.0.0.0:80 accept-proxy" in text
    assert f"bind 0.0.0.0:443 ssl crt-list {tmp_path}/haproxy.crt-list" in text
    assert "bind 0.0.0.0:8443 accept-proxy" in text
    assert (tmp_path / "haproxy.routes-wildcard.map").read_text().splitlines()[1:] == [
        ".shop.example.com/ tenants"
    ]
