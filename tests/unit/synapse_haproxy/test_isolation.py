"""Per-service isolation's pure parts: haproxy -c errors mapped to services, stand-ins."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from haproxy_helpers import server, service
from prometheus_client import CollectorRegistry

from synapse.contract import ApplyOutcome, ApplyResult
from synapse.haproxy.isolation import Isolation, culprits
from synapse.model import DesiredService

CANDIDATE = """global
    maxconn 10

frontend web
    bind 127.0.0.1:1
    default_backend web

backend web
    no-such-directive here

backend api
    balance roundrobin

frontend shared-frontend
    bind 127.0.0.1:2
    http-request bad-thing
"""


def test_errors_name_the_services_whose_sections_hold_them():
    web = service("web", [server("10.0.0.1", 80, "a")])
    api = service("api", [], backend_only=True, shared_frontend=["http-request bad-thing"])
    error = (
        "[ALERT]    (1) : config : parsing [/x/haproxy.cfg.candidate:9] : unknown keyword\n"
        "[ALERT]    (1) : config : Error(s) found in configuration file : /x/haproxy.cfg.candidate"
    )
    assert culprits(error, "/x/haproxy.cfg.candidate", CANDIDATE, [web, api]) == {"web"}
    shared = "[ALERT] (1) : config : parsing [/x/haproxy.cfg.candidate:16] : 'http-request'"
    assert culprits(shared, "/x/haproxy.cfg.candidate", CANDIDATE, [web, api]) == {"api"}
    proxy = "[ALERT] (1) : config : backend 'api' has no server"
    assert culprits(proxy, "/x/haproxy.cfg.candidate", CANDIDATE, [web, api]) == {"api"}
    # global, or another file: nobody to isolate
    other = "[ALERT] (1) : config : parsing [/x/haproxy.cfg.candidate:2] : bad"
    assert culprits(other, "/x/haproxy.cfg.candidate", CANDIDATE, [web, api]) == set()


def isolate_bad(
    tmp_path: Path,
    good: DesiredService,
    bad: DesiredService,
    registry: CollectorRegistry | None = None,
) -> tuple[Isolation, Path, ApplyResult]:
    """``bad`` isolated (its candidate refused at its backend's line), ``good`` its last
    settled block: the isolation, the candidate and the refused apply."""
    isolation = Isolation(registry or CollectorRegistry())
    isolation.settled([good], ApplyResult(reload=ApplyOutcome.DONE))
    candidate = tmp_path / "haproxy.cfg.candidate"
    candidate.write_text(CANDIDATE)
    refused = ApplyResult(reload=ApplyOutcome.INVALID, error=f"parsing [{candidate}:9] : bad")
    assert isolation.isolate(refused, candidate, [bad])
    return isolation, candidate, refused


def test_an_isolated_service_runs_its_last_good_block_until_its_block_changes(tmp_path):
    good = service("web", [server("10.0.0.1", 80, "a")])
    bad = service("web", [server("10.0.0.1", 80, "a")], backend=["no-such-directive here"])
    isolation, candidate, refused = isolate_bad(tmp_path, good, bad)
    assert not isolation.isolate(refused, candidate, [bad])  # nobody new
    [stand_in] = isolation.substitute([bad])
    assert stand_in.config == good.config and stand_in.servers == bad.servers
    assert isolation.substitute([bad]) == [stand_in] and isolation.substitute([stand_in]) == [
        stand_in
    ]
    # A runtime-only apply meanwhile: INVALID (the refused change is not applied), naming
    # the isolated services: the rest of it went through (an evacuation reads that).
    meanwhile = isolation.outcome(refused, ApplyResult())
    assert meanwhile.reload is ApplyOutcome.INVALID and meanwhile.isolated == ("web",)
    assert isolation.outcome(refused, ApplyResult(reload=ApplyOutcome.DONE)).isolated == ()
    fixed = service("web", [], backend=["retries 2"])
    assert isolation.substitute([fixed]) == [fixed] and not isolation.isolated


def test_a_stand_in_keeps_the_zones_of_a_zone_routed_service(tmp_path):
    # Without its zones the stand-in would lose its frontend zone lines and map entries.
    good = replace(service("web", [server("10.0.0.1", 80, "a")]), zones=("az1", "az2"))
    bad = replace(
        service("web", [server("10.0.0.1", 80, "a")], backend=["no-such-directive here"]),
        zones=("az1", "az2"),
    )
    isolation, _, _ = isolate_bad(tmp_path, good, bad)
    [stand_in] = isolation.substitute([bad])
    assert stand_in.config == good.config and stand_in.zones == ("az1", "az2")
    assert stand_in.servers == bad.servers


def test_an_isolated_service_that_left_the_config_leaves_no_series(tmp_path):
    good = service("web", [server("10.0.0.1", 80, "a")])
    bad = service("web", [server("10.0.0.1", 80, "a")], backend=["no-such-directive here"])
    registry = CollectorRegistry()
    isolation, _, _ = isolate_bad(tmp_path, good, bad, registry)
    isolated = {"service": "web"}
    assert registry.get_sample_value("synapse_service_config_isolated", isolated) == 1
    assert isolation.substitute([]) == [] and not isolation.isolated  # web left the config
    assert registry.get_sample_value("synapse_service_config_isolated", isolated) is None


def test_last_good_blocks_stay_bounded_by_the_services_configured(tmp_path):
    # soak s45: every service name ever configured kept its last good block (its whole
    # ServiceConfig) for the process's life: a SIGHUP with a new name each time grew it.
    done = ApplyResult(reload=ApplyOutcome.DONE)
    web = service("web", [server("10.0.0.1", 80, "a")])
    bad = service("web", [server("10.0.0.1", 80, "a")], backend=["no-such-directive here"])
    isolation, _, _ = isolate_bad(tmp_path, web, bad)
    [stand_in] = isolation.substitute([bad])
    for k in range(50):
        tmp = service(f"tmp{k}", [server("10.0.0.2", 80, "b")])
        isolation.settled([stand_in, tmp], done)  # tmp<k> added
        isolation.settled([stand_in], done)  # and removed
        assert len(isolation._good) <= 2 * 1 + 16
    assert "web" in isolation._good  # the isolated one keeps its last good block
    assert {"tmp49", "tmp34"} <= set(isolation._good) and "tmp0" not in isolation._good
    assert isolation.substitute([bad]) == [stand_in]


def test_a_service_removed_and_added_back_with_a_refused_block_runs_its_old_one(tmp_path):
    # review s46: dropping a removed service's block at once, a re-add HAProxy refuses
    # left it out of HAProxy (480 requests refused in 3 s) where it ran its old block.
    done = ApplyResult(reload=ApplyOutcome.DONE)
    web = service("web", [server("10.0.0.1", 80, "a")])
    api = service("api", [server("10.0.0.3", 80, "c")])
    isolation = Isolation(CollectorRegistry())
    isolation.settled([web, api], done)
    isolation.settled([web], done)  # api removed, and its removal reloaded
    bad = service("api", [server("10.0.0.3", 80, "c")], backend=["no-such-directive here"])
    candidate = tmp_path / "haproxy.cfg.candidate"
    candidate.write_text(CANDIDATE.replace("\nbackend web\n", "\nbackend api\n"))
    refused = ApplyResult(reload=ApplyOutcome.INVALID, error=f"parsing [{candidate}:9] : bad")
    assert isolation.isolate(refused, candidate, [web, bad])
    [kept_web, stand_in] = isolation.substitute([web, bad])
    assert kept_web == web
    assert stand_in.servers == bad.servers
    assert stand_in.config == api.config
