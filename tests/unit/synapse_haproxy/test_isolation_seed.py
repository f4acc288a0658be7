"""Per-service isolation after a restart: the last good block read back from the running file."""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from haproxy_helpers import haproxy_config, managed_config, render, server, service
from prometheus_client import CollectorRegistry

from synapse.config import HAProxyConfig, ServiceConfig
from synapse.contract import ApplyOutcome, ApplyResult
from synapse.haproxy.configtext import ParsedConfig, parse_config
from synapse.haproxy.isolation import FROM_FILE, Isolation
from synapse.haproxy.render import Renderer
from synapse.haproxy.seeding import seed_block
from synapse.haproxy.settings import settings_for
from synapse.haproxy.template_file import load_template
from synapse.model import DesiredService

BAD = "no-such-keyword 1"
SERVERS = [server("10.0.0.1", 80, "a"), server("10.0.0.2", 80, "b")]


def _owned(parsed: ParsedConfig, *names: str) -> dict[str, tuple[str, ...]]:
    return {h: v for h, v in parsed.sections.items() if h.split()[1:2] in ([n] for n in names)}


def _refused(service_: DesiredService) -> DesiredService:
    """The service with a line `haproxy -c` refuses added to its backend."""
    hap = service_.config.haproxy
    block = hap.model_copy(update={"backend": [*hap.backend, BAD]})
    return replace(service_, config=service_.config.model_copy(update={"haproxy": block}))


def _zoned(**haproxy: Any) -> DesiredService:
    config = ServiceConfig.model_validate(
        {
            "discovery": {"method": "base"},
            "haproxy": {"port": 3300, **haproxy},
            "zone_routing": {"zones": ["az1", "az2"], "sticky": "zone", "header": "X-Zone"},
        }
    )
    return DesiredService("api", config, list(SERVERS), zones=("az1", "az2"))


CASES: dict[str, tuple[DesiredService, HAProxyConfig]] = {
    "plain": (service("api", SERVERS, port=3300), haproxy_config()),
    "backend only": (service("api", SERVERS, backend_only=True), haproxy_config()),
    "every key": (
        service(
            "api",
            SERVERS,
            port=3300,
            bind_address="127.0.0.2",
            bind_options="tfo",
            accept_proxy=True,
            frontend=["timeout client 5s"],
            backend=["balance first"],
            listen=["option httplog", "option redispatch", "acl x path /x"],
            server_options="check inter 2s",
            send_proxy_v2=True,
            maxconn=5,
            maxqueue=2,
            timeout_queue="3s",
            backend_name="api-backend",
            backend_order="asc",
            retries={"count": 2},
            health_check={"enabled": True, "path": "/health"},
            observe={},
            shared_frontend=["acl is_api hdr(host) api", "use_backend api-backend if is_api"],
        ),
        haproxy_config(
            logging={"address": "127.0.0.1:514", "format": "json"},
            accept_proxy=True,
            shared_frontend=["bind 127.0.0.1:8080", "mode http"],
        ),
    ),
    "managed, logged": (
        service("api", SERVERS, port=3300, listen=["mode tcp"]),
        managed_config(Path("/tmp/x"), logging={"address": "/dev/log", "format": "httplog"}),
    ),
    "zone signals": (_zoned(), managed_config(Path("/tmp/x"))),
    "port null": (
        service("api", SERVERS, port=None, bind_address="unix@/tmp/api.sock"),
        haproxy_config(),
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_running_block_is_read_back_into_a_block_that_renders_it(case):
    api, config = CASES[case]
    other = service("web", [server("10.0.0.9", 80)], port=3301)
    running = render([other, api], config).parsed
    refused = _refused(api)
    seed = seed_block(refused, config, running)
    assert seed.config is not None, seed.why_not
    assert seed.added == ()  # (written by this version: nothing to add)
    again = render([replace(refused, config=seed.config)], config).parsed
    names = (api.name, api.backend_name)
    assert _owned(again, *names) == _owned(running, *names)
    assert again.servers[api.backend_name] == running.servers[api.backend_name]
    assert BAD not in str(seed.config.haproxy)  # (the refused line is not in it)


def test_a_block_with_the_lines_a_newer_haproxy_gets_is_read_back_without_a_change():
    """Managed HTTP frontends of HAProxy 2.6+ carry ``option idle-close-on-response``, which
    the seeding renderer (no version known) does not add: it is read back as the block's
    own line, and the controller's renderer then adds no second one (no reload)."""
    config = managed_config(Path("/tmp/x"), logging={"address": "/dev/log", "format": "httplog"})
    newer = Renderer(config, settings_for(config, (2, 6, 12)))
    api = service("api", SERVERS, port=3300)
    running = newer.render([api]).parsed
    assert "option idle-close-on-response" in running.sections["frontend api"]
    refused = _refused(api)
    seed = seed_block(refused, config, running)
    assert seed.config is not None, seed.why_not
    again = Renderer(config, settings_for(config, (2, 6, 12)))
    parsed = again.render([replace(refused, config=seed.config)]).parsed
    assert _owned(parsed, "api") == _owned(running, "api")


def _older(text: str, *generated: str) -> ParsedConfig:
    """``text`` as a synapse older than the ``generated`` lines wrote it: without them."""
    for line in generated:
        assert f"    {line}\n" in text
        text = text.replace(f"    {line}\n", "")
    return parse_config(text)


def test_a_running_backend_without_a_line_a_newer_synapse_adds_is_read_back_with_it():
    """After an upgrade, the running backend predates a line the new version renders for
    the same block (``timeout queue`` for servers with a maxconn, review s41): the block is
    read back all the same, the new line added, instead of leaving the service out (review
    s42: 2,801 of 6,307 requests failed, its port closed, until the block was fixed)."""
    config = managed_config(Path("/tmp/x"))
    api = service("api", SERVERS, port=3300, maxconn=4)
    now = render([api], config)
    queue = [x for x in now.parsed.sections["backend api"] if x.startswith("timeout queue")]
    assert len(queue) == 1
    running = _older(now.text, *queue)
    seed = seed_block(_refused(api), config, running)
    assert seed.config is not None, seed.why_not
    assert seed.added == tuple(queue)
    again = render([replace(api, config=seed.config)], config).parsed
    assert _owned(again, "api") == _owned(now.parsed, "api")
    assert again.servers["api"] == running.servers["api"]


def test_lines_from_the_refused_blocks_own_change_are_not_taken_for_an_upgrade():
    """Only an upgrade's `timeout queue` (servers that ran with a maxconn) is added: lines
    the refused block's own keys make (its new `maxconn` where no running server can tell,
    its new zone routing's `option allbackups`) would run a block HAProxy never ran."""
    config = managed_config(Path("/tmp/x"))
    running = render([service("api", [], port=3300)], config).parsed  # (no server then)
    seed = seed_block(_refused(service("api", SERVERS, port=3300, maxconn=4)), config, running)
    assert seed.config is None and "backend api" in seed.why_not
    running = render([service("api", SERVERS, backend_only=True)], config).parsed
    zoned = _zoned()
    block = zoned.config.haproxy.model_copy(update={"port": None})
    zoned = replace(zoned, config=zoned.config.model_copy(update={"haproxy": block}))
    seed = seed_block(_refused(zoned), config, running)
    assert seed.config is None and "backend api" in seed.why_not


def test_an_exact_block_is_preferred_to_one_that_adds_lines():
    """The refused block's `maxconn 2` on servers HAProxy does not run yet renders with an
    added `timeout queue`; the running servers' own options render the file exactly."""
    config = managed_config(Path("/tmp/x"))
    running = render([service("api", SERVERS, port=3300)], config).parsed
    api = service("api", [server("10.0.0.9", 80, "z")], port=3300, server_options="maxconn 2")
    seed = seed_block(_refused(api), config, running)
    assert seed.config is not None and seed.added == (), seed
    assert not seed.config.haproxy.server_options


def test_an_operator_template_is_read_back_through_its_own_render(tmp_path):
    template = tmp_path / "haproxy.cfg.j2"
    # (the packaged template, its backend lines spaced otherwise: rendered with jinja2)
    template.write_text(load_template(haproxy_config()).replace("backend {{", "backend  {{"))
    config = haproxy_config(template=str(template))
    api = service("api", SERVERS, port=3300, frontend=["timeout client 5s"])
    running = render([api], config).parsed
    seed = seed_block(_refused(api), config, running)
    assert seed.config is not None, seed.why_not
    assert seed.config.haproxy.frontend == ["timeout client 5s"]


def test_a_read_back_block_serves_the_servers_of_today_with_their_running_options():
    config = haproxy_config()
    api = service("api", SERVERS, port=3300, server_options="check inter 2s")
    running = render([api], config).parsed
    today = [SERVERS[1], server("10.0.0.3", 80, "c")]  # a left, c came
    refused = replace(_refused(api), servers=today)
    seed = seed_block(refused, config, running)
    assert seed.config is not None
    servers = render([replace(refused, config=seed.config)], config).parsed.servers["api"]
    assert set(servers) == {s.name for s in today}
    assert {line.tail for line in servers.values()} == {"check inter 2s"}


def test_refused_server_options_give_way_to_the_running_servers_options():
    config = haproxy_config()
    api = service("api", SERVERS, port=3300, server_options="check inter 2s")
    running = render([api], config).parsed
    refused = service("api", SERVERS, port=3300, server_options="check inter 2s fal 2")
    seed = seed_block(refused, config, running)
    assert seed.config is not None and seed.config.haproxy.server_options == "check inter 2s"


def seeded_with_check_inter(servers):
    """Seed "api" (running with ``check inter 2s``, refused with a typo in them): the
    running servers' options are read back as exactly the service's own."""
    config = haproxy_config()
    api = service("api", servers, port=3300, server_options="check inter 2s")
    running = render([api], config).parsed
    refused = service("api", servers, port=3300, server_options="check inter 2s fal 2")
    seed = seed_block(refused, config, running)
    assert seed.config is not None, seed.why_not
    assert seed.config.haproxy.server_options == "check inter 2s"
    return refused, seed.config


def test_the_running_options_of_dns_and_ip_servers_are_one_block_without_init_addr():
    # A DNS-named server's line adds `init-addr last,none` of synapse's own: the
    # running servers' options are still the same once it is left out.
    seeded_with_check_inter([SERVERS[0], server("gone.invalid", 80, "g")])


def test_a_backend_of_dns_named_servers_alone_seeds_no_init_addr():
    # One tail (every server DNS-named): synapse's init-addr is still its own, not the
    # service's options; seeded with it, no server (an IP one neither) could be added.
    servers = [server("a.example.internal", 80, "a"), server("b.example.internal", 80, "b")]
    refused, seeded = seeded_with_check_inter(servers)
    grown = replace(refused, config=seeded, servers=[*servers, server("10.0.0.9", 80, "c")])
    specs = render([grown], haproxy_config()).backends["api"].servers
    assert specs["c_10.0.0.9:80"].why_not_addable == ""


def test_a_dns_answer_moved_since_the_file_was_written_still_seeds_the_block():
    # The answer moves at runtime (set server addr): one that moved while synapse was down,
    # or not answered yet at its start, is no other option (before: "would run with other
    # options than HAProxy's", the refused service left out of HAProxy)
    config = haproxy_config()
    named = [server("a.example.internal", 80, "a", address="10.0.0.5")]
    running = render([service("api", named, server_options="check")], config).parsed
    for now in ("10.0.0.6", ""):
        moved = [replace(named[0], address=now)]
        seed = seed_block(_refused(service("api", moved, server_options="check")), config, running)
        assert seed.config is not None, seed.why_not


def test_only_shared_frontend_lines_the_running_frontend_has_are_kept():
    config = haproxy_config(shared_frontend=["bind 127.0.0.1:8080", "mode http"])
    api = service("api", SERVERS, port=3300, shared_frontend=["use_backend api if { path /a }"])
    running = render([api], config).parsed
    shared = ["use_backend api if { path /a }", "http-request bad-thing"]
    refused = service("api", SERVERS, port=3300, shared_frontend=shared)
    seed = seed_block(refused, config, running)
    assert seed.config is not None
    assert seed.config.haproxy.shared_frontend == ["use_backend api if { path /a }"]


def test_nothing_is_read_back_for_a_service_haproxy_does_not_run():
    config = haproxy_config()
    running = render([service("web", SERVERS, port=3301)], config).parsed
    seed = seed_block(_refused(service("api", SERVERS)), config, running)
    assert (seed.config, seed.why_not, seed.added) == (None, "", ())


def test_a_block_that_does_not_render_as_it_runs_is_not_read_back():
    config = haproxy_config(logging={"address": "/dev/log", "format": "httplog"})
    api = service("api", SERVERS, port=3300)
    text = render([api], config).text
    # edited by hand: without its log lines, or without its default_backend
    for edit in (("    log global\n", ""), ("    default_backend api\n", "")):
        running = parse_config(text.replace(*edit))
        seed = seed_block(_refused(api), config, running)
        assert seed.config is None and seed.why_not
    # the same block under another haproxy block (its log lines changed since)
    other = haproxy_config(logging={"address": "/dev/log", "format": "json"})
    seed = seed_block(_refused(api), other, parse_config(text))
    assert seed.config is None and "frontend" in seed.why_not


# --------------------------------------------------------------------------- Isolation


@dataclass
class RunningFile:
    path: Path
    parsed: ParsedConfig | None


def _refusal(tmp_path: Path, desired: list[DesiredService], config: HAProxyConfig) -> ApplyResult:
    """``haproxy -c``'s refusal of the line BAD in a candidate of ``desired``."""
    candidate = tmp_path / "haproxy.cfg.candidate"
    text = render(desired, config).text
    candidate.write_text(text)
    number = text.splitlines().index(f"    {BAD}") + 1
    error = f"[ALERT] (1) : config : parsing [{candidate}:{number}] : unknown keyword"
    return ApplyResult(reload=ApplyOutcome.INVALID, error=error)


def _events(caplog: pytest.LogCaptureFixture) -> list[tuple[str, dict[str, Any]]]:
    return [(r.getMessage(), getattr(r, "smartstack_fields", {})) for r in caplog.records]


def test_a_new_process_keeps_the_running_block_of_a_refused_service(tmp_path, caplog):
    caplog.set_level(logging.INFO, "synapse.haproxy")
    config = haproxy_config(config_file_path=str(tmp_path / "haproxy.cfg"))
    web, api = service("web", SERVERS, port=3301), service("api", SERVERS, port=3300)
    file = RunningFile(tmp_path / "haproxy.cfg", render([web, api], config).parsed)
    isolation = Isolation(CollectorRegistry(), lambda: (config, file))  # nothing in memory
    refused = _refused(api)
    assert isolation.isolate(_refusal(tmp_path, [web, refused], config),
                             tmp_path / "haproxy.cfg.candidate", [web, refused])  # fmt: skip
    [kept_web, stand_in] = isolation.substitute([web, refused])
    assert kept_web is web and stand_in.servers == refused.servers
    assert BAD not in str(stand_in.config.haproxy)
    assert isolation.status()["api"]["running"] == FROM_FILE
    events = _events(caplog)
    assert ("haproxy_isolation_seeded", {"service": "api", "path": str(file.path)}) in events
    isolated = next(fields for name, fields in events if name == "haproxy_service_isolated")
    assert isolated["detail"] == "its last good config, from the running config file"
    # Its fixed block is accepted: from then on its last good block is that one.
    fixed = service("api", SERVERS, port=3300, backend=["retries 2"])
    assert isolation.substitute([web, fixed]) == [web, fixed] and not isolation.isolated
    isolation.settled([web, fixed], ApplyResult(reload=ApplyOutcome.DONE))
    assert isolation.isolate(_refusal(tmp_path, [web, refused], config),
                             tmp_path / "haproxy.cfg.candidate", [web, refused])  # fmt: skip
    assert isolation.status()["api"]["running"] == "last good config"
    assert isolation.substitute([web, refused])[1].config is fixed.config


def test_a_read_back_block_refused_too_leaves_the_service_out(tmp_path, caplog):
    caplog.set_level(logging.INFO, "synapse.haproxy")
    config = haproxy_config()
    web, api = service("web", SERVERS, port=3301), service("api", SERVERS, port=3300)
    file = RunningFile(tmp_path / "haproxy.cfg", render([web, api], config).parsed)
    isolation = Isolation(CollectorRegistry(), lambda: (config, file))
    refused = _refused(api)
    candidate = tmp_path / "haproxy.cfg.candidate"
    assert isolation.isolate(_refusal(tmp_path, [web, refused], config), candidate, [web, refused])
    desired = isolation.substitute([web, refused], complete=False)
    assert desired[1] is not refused  # its read-back block...
    # ... refused too (as if something it needs had changed since)
    error = "[ALERT] (1) : config : backend 'api': no such thing"
    again = ApplyResult(reload=ApplyOutcome.INVALID, error=error)
    assert isolation.isolate(again, candidate, desired)
    assert isolation.substitute(desired, complete=False) == [web]  # left out, as before
    assert isolation.status()["api"]["running"] == (
        "not in HAProxy (its running block cannot be kept: haproxy -c refused it too)"
    )
    names = [name for name, _ in _events(caplog)]
    assert names[-1] == "haproxy_isolation_not_seeded"
    assert not isolation.isolate(again, candidate, [web, refused])  # nobody new


def test_without_a_running_file_a_service_never_accepted_is_left_out(tmp_path):
    config = haproxy_config()
    web, api = service("web", SERVERS, port=3301), service("api", SERVERS, port=3300)
    for file in (None, RunningFile(tmp_path / "haproxy.cfg", None),
                 RunningFile(tmp_path / "haproxy.cfg", render([web], config).parsed)):  # fmt: skip
        isolation = Isolation(CollectorRegistry(), lambda file=file: (config, file))
        refused = _refused(api)
        desired = [web, refused]
        candidate = tmp_path / "haproxy.cfg.candidate"
        assert isolation.isolate(_refusal(tmp_path, desired, config), candidate, desired)
        assert isolation.substitute(desired) == [web]
        assert isolation.status()["api"]["running"] == "not in HAProxy (never valid)"
