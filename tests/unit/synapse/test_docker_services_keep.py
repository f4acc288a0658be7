"""docker_services: a service outlives its last container by KEEP_GONE_S. A container
recreated (the old one stopped, then the new one run, as `docker compose up` does) used to
remove the service and add it back: two reloads, the second held by restart_interval, the
new container served 1.4-2.0 s after it ran and every request failed meanwhile (review s37,
`repro2_recreate.py`)."""

from __future__ import annotations

from test_docker_services_saved import Source, container, listing

from synapse.config import SynapseConfig
from synapse.docker_services import KEEP_GONE_S


async def live_with_web() -> Source:
    """A live source whose one container serves `web` at web.test."""
    made = Source(None)
    made.source._changed(listing(container("w1", "web", "web.test")))
    made.source.go_live()
    await made.settle()
    return made


async def test_a_recreated_container_keeps_its_service_and_a_gone_one_leaves_later() -> None:
    made = Source(None)
    source, now = made.source, [100.0]
    source.clock = lambda: now[0]
    source._changed(listing(container("w1", "web", "web.test"), container("a1", "api", "a.test")))
    source.go_live()
    await made.settle()
    applied = made.applied
    source._changed(listing(container("a1", "api", "a.test")))  # web's container stopped
    now[0] += 1.0
    source._changed(listing(container("w2", "web", "web.test"), container("a1", "api", "a.test")))
    await made.settle()
    assert sorted(source.services) == ["api", "web"] and made.applied == applied  # no change

    source._changed(listing(container("w2", "web", "web.test")))  # api's container went
    assert sorted(source.services) == ["api", "web"] and source._recheck is not None
    now[0] += KEEP_GONE_S - 0.5
    source._changed(listing(container("w2", "web", "web.test")))
    await made.settle()
    assert "api" in source.services and made.applied == applied
    now[0] += 0.5  # (what the recheck's timer does then)
    source._changed(listing(container("w2", "web", "web.test")))
    await made.settle()
    assert sorted(source.services) == ["web"] and made.applied == applied + 1
    assert source._recheck is None or source._recheck.cancelled()
    await source.stop()


async def test_a_kept_service_yields_its_routes_to_a_running_one() -> None:
    # `web` stopped, `web2` (a rename, or blue/green's standby) has its host: web2 serves at
    # once. Before: the kept `web` (first by name) held web.test for KEEP_GONE_S, web2 was
    # refused ("routed to two services") and the route answered 503 for 10 s (review s37 cr).
    made = await live_with_web()
    source = made.source
    source._changed(listing(container("g1", "web2", "web.test")))
    assert sorted(source.services) == ["web", "web2"]  # (web kept)
    merged = source.merge(SynapseConfig.model_validate({"services": {}}))
    assert sorted(merged.services) == ["web2"]
    assert source._refused == set()  # (nothing said: web is leaving)
    await source.stop()


async def test_a_refused_service_gets_the_route_its_kept_owner_leaves() -> None:
    # blue/green: `web-green` runs beside `web` (refused: web.test is web's), then web's
    # container stops: green is merged at once. Before: nothing changed in `services` (web
    # kept), no apply until the keep ended: 10.25 s of 503s, 412 requests (review s37 cr).
    made = await live_with_web()
    source = made.source
    file = SynapseConfig.model_validate({"services": {}})
    source._changed(
        listing(container("w1", "web", "web.test"), container("g1", "web-green", "web.test"))
    )
    await made.settle()
    assert sorted(source.merge(file).services) == ["web"] and source._refused
    applied = made.applied
    source._changed(listing(container("g1", "web-green", "web.test")))  # web's stopped
    await made.settle()
    assert made.applied == applied + 1  # merged again
    assert sorted(source.merge(file).services) == ["web-green"]
    await source.stop()
