"""The express path (pure part): a membership-only change's commands, planned from the new
specs before any render, are the whole plan's; anything else is left to the whole plan."""

from __future__ import annotations

import dataclasses

from haproxy_helpers import haproxy_config, running_from, server, service

from synapse.haproxy.express import Express, plan_early
from synapse.haproxy.planner import plan
from synapse.haproxy.render import Renderer
from synapse.haproxy.running import Capabilities, RunningServer
from synapse.haproxy.template_file import load_template
from synapse.haproxy.view import RunningIds
from synapse.model import DesiredService

V26 = Capabilities(version=(2, 6, 12))


def three() -> list[DesiredService]:
    return [
        service(f"s{i}", [server(f"10.0.{i}.{j}", 8080) for j in (1, 2, 3)], port=None)
        for i in range(3)
    ]


def with_servers(old: DesiredService, servers: list) -> DesiredService:
    return dataclasses.replace(old, servers=servers)


def rendered() -> tuple[Renderer, list[DesiredService], object]:
    renderer = Renderer(haproxy_config())
    services = three()
    first = renderer.render(services, {}, set())
    return renderer, services, running_from(first)


def early(renderer: Renderer, services: list[DesiredService], running, unread=(), stale=()):
    ids = RunningIds().use(running.backends)
    return plan_early(renderer, services, running, ids, V26, set(unread), set(stale))


def test_a_membership_change_sends_what_the_whole_plan_would_before_any_render():
    renderer, services, running = rendered()
    s0, s1, s2 = services
    changed = [
        with_servers(s0, [*s0.servers, server("10.0.0.9", 8080)]),  # added
        with_servers(s1, s1.servers[:2]),  # removed
        with_servers(s2, [s2.servers[0], server("10.0.2.2", 8080, weight=5), s2.servers[2]]),
    ]
    pieces = renderer.rendered_pieces
    planned = early(renderer, changed, running)
    assert planned is not None
    ops, backends = planned
    assert backends == {"s0", "s1", "s2"}
    assert renderer.rendered_pieces == pieces  # no text rendered for it
    whole = plan(Renderer(haproxy_config()).render(changed), running, V26)
    assert whole.reload is None and sorted(map(str, ops)) == sorted(map(str, whole.ops))
    # The render that follows takes the specs it built, and says the same as a fresh one.
    ids = RunningIds().use(running.backends)
    after = renderer.render(changed, ids, set())
    assert after.text == Renderer(haproxy_config()).render(changed).text
    assert plan(after, running, V26, backends).ops == whole.ops


def test_anything_but_membership_goes_the_whole_way():
    renderer, services, running = rendered()
    s0 = services[0]
    options = with_servers(s0, [server("10.0.0.1", 8080, registry_options="maxconn 5")])
    moved_config = service("s0", s0.servers, port=4000)  # a new config object: structural
    assert early(renderer, [options, *services[1:]], running) is None
    assert early(renderer, [moved_config, *services[1:]], running) is None
    assert early(renderer, services[:2], running) is None  # a service gone
    other_file = dataclasses.replace(running, config=None)  # the file is not the last render
    assert early(renderer, services, other_file) is None
    # A new server in a backend whose balance takes none at runtime: the reload decides.
    static = Renderer(haproxy_config())
    svc = service("st", [server("10.1.0.1", 8080)], port=None, backend=["balance static-rr"])
    static_running = running_from(static.render([svc], {}, set()))
    grown = with_servers(svc, [*svc.servers, server("10.1.0.2", 8080)])
    assert early(static, [grown], static_running) is None
    # An operator's template may write server lines its own way: the whole plan judges.
    jinja = Renderer(haproxy_config(), template_text=load_template(haproxy_config()))
    jinja_running = running_from(jinja.render(services, {}, set()))
    assert early(jinja, [with_servers(s0, s0.servers[:1]), *services[1:]], jinja_running) is None


def test_a_change_of_read_backends_goes_express_while_others_wait_for_the_sweep():
    """Right after a start or reload the sweep reads every backend in 1-3 s at 1,000: a
    change whose backends the apply has read goes express meanwhile; its commands are
    the whole plan's. One touching a backend not read since (or changed by commands and
    not read since) is planned the usual way: the view's servers there are not HAProxy's."""
    renderer, services, running = rendered()
    s0, s1, s2 = services
    changed = [with_servers(s0, [*s0.servers, server("10.0.0.9", 8080)]), s1, s2]
    planned = early(renderer, changed, running, unread={"s1", "s2"}, stale={"s2"})
    assert planned is not None and planned[1] == {"s0"}
    whole = plan(Renderer(haproxy_config()).render(changed), running, V26, {"s0"})
    assert sorted(map(str, planned[0])) == sorted(map(str, whole.ops)) and whole.ops
    # After a start an unread backend is empty in the view: planned on it, every
    # server would be added again.
    started = dataclasses.replace(running, backends={**(running.backends or {}), "s0": {}})
    assert early(renderer, changed, started, unread={"s0"}) is None
    assert early(renderer, changed, running, stale={"s0"}) is None
    both = [changed[0], with_servers(s1, s1.servers[:1]), s2]  # s0 read, s1 not yet
    assert early(renderer, both, running, unread={"s1"}) is None
    assert early(renderer, both, running, unread={"s2"}) is not None


def test_nothing_changed_plans_nothing():
    renderer, services, running = rendered()
    assert early(renderer, list(services), running) is None  # (no changed service)


def test_a_render_keeps_the_specs_of_unchanged_servers_and_builds_the_others():
    renderer, services, _ = rendered()
    s0 = services[0]
    before = renderer.render(services, {}, set()).backends["s0"].servers
    a, b, c = s0.servers
    changed = with_servers(s0, [a, dataclasses.replace(b, weight=7), c, server("10.0.0.9", 80)])
    ids = {"s0": {a.name: before[a.name].id, b.name: before[b.name].id, c.name: 4242}}
    after = renderer.render([changed, *services[1:]], ids, {"s0"}).backends["s0"].servers
    assert after[a.name] is before[a.name]  # equal server, same id: kept
    assert after[b.name] is not before[b.name] and after[b.name].weight == 7
    assert after[c.name].id == 4242  # HAProxy runs it with another id: built again
    fresh = Renderer(haproxy_config()).render([changed, *services[1:]], ids).backends["s0"]
    assert after == fresh.servers


def test_the_backends_sent_first_are_left_out_of_the_next_plan_only():
    express = Express(None, lambda: V26, None)  # type: ignore[arg-type]  # (not used here)
    express.backends = frozenset({"a"})
    assert express.unplanned(None, ["a", "b"]) == {"b"}  # (None: every backend)
    assert express.unplanned({"a", "c"}, ["a", "b", "c"]) == {"a", "c"}  # (a later plan)


class _Reader:
    """What ``Express.send`` asks of the RunningReader."""

    unread: set[str] = set()

    def stale(self) -> set[str]:
        return set()

    def id_hints(self, running):
        return RunningIds().use(running.backends)

    def settle_later(self, backends) -> None:
        pass


def recording() -> tuple[Express, list]:
    """An Express whose last apply ended clean, and the ops it sends (all succeed)."""
    sent: list = []

    async def run(ops):
        sent.extend(ops)
        return [str(op) for op in ops], []

    express = Express(_Reader(), lambda: V26, run)  # type: ignore[arg-type]
    express.ready = True
    return express, sent


async def test_the_backends_it_sent_commands_to_stay_to_be_planned_once():
    """A refused `del server` there changes nothing HAProxy reports: unless they stay among
    the backends to plan, the delete would never be tried again."""
    renderer, services, running = rendered()
    express, sent = recording()
    s0, s1, s2 = services
    early_sent = await express.send(renderer, [with_servers(s0, s0.servers[:2]), s1, s2], running)
    assert early_sent.backends == {"s0"} and sent
    assert express.owed() == {"s0"} and express.owed() == frozenset()  # (once)


def test_a_render_after_servers_sharing_a_name_keeps_the_spec_of_the_first():
    renderer = Renderer(haproxy_config())
    a1, a5 = server("10.0.0.1", 80, "a", weight=1), server("10.0.0.1", 80, "a", weight=5)
    web = service("web", [a1, a5], port=None)  # (the second is refused: name used twice)
    renderer.render([web], {}, set())
    again = with_servers(web, [a5])
    after = renderer.render([again], {}, {"web"}).backends["web"].servers
    assert after == Renderer(haproxy_config()).render([again], {}).backends["web"].servers
    assert after[a5.name].weight == 5


def test_changes_since_an_owed_apply_plan_only_what_is_new_and_keep_the_earlier_specs():
    """An apply whose render is owed (``synapse.haproxy.owed``) leaves the last render
    behind: the next plans only the services changed since that apply, not all of them
    since the render, and the render that pays takes every spec built meanwhile."""
    renderer, services, running = rendered()
    s0, s1, s2 = services
    first = [with_servers(s0, s0.servers[:2]), s1, s2]
    ids = RunningIds().use(running.backends)
    built = renderer.membership_specs(first, ids)
    assert built is not None and [spec.name for spec in built] == ["s0"]
    second = [first[0], with_servers(s1, s1.servers[1:]), s2]
    again = renderer.membership_specs(second, ids, since=first)
    assert again is not None and [spec.name for spec in again] == ["s1"]  # s0: sent already
    assert [spec.name for spec in renderer.membership_specs(second, ids) or ()] == ["s0", "s1"]
    kept = renderer.membership_specs(second, ids, since=first)
    assert kept is not None and kept[0] is again[0]  # (built once, kept while the same)
    other = renderer.membership_specs(second, ids, since=first[:2])  # (not that apply's)
    assert [spec.name for spec in other or ()] == ["s0", "s1"]
    pieces = renderer.rendered_pieces
    after = renderer.render(second, ids, set())
    assert renderer.rendered_pieces == pieces + 2
    assert after.backends["s0"] is built[0] and after.backends["s1"] is again[0]
    assert after.text == Renderer(haproxy_config()).render(second).text


async def test_a_deferred_apply_hands_its_backends_to_the_next_plan_and_is_the_next_base():
    renderer, services, running = rendered()
    express, sent = recording()
    s0, s1, s2 = services
    first = [with_servers(s0, s0.servers[:2]), s1, s2]
    assert (await express.send(renderer, first, running)).backends == {"s0"}
    assert express.deferred() == {"s0"} and express.unplanned(None, ["s0"]) is None
    express.ready = True  # (the controller's, after a deferred apply)
    sent.clear()
    second = [first[0], with_servers(s1, s1.servers[:1]), s2]
    assert (await express.send(renderer, second, running)).backends == {"s1"}
    assert {op.backend for op in sent} == {"s1"}  # s0's commands are not sent again


def test_a_spec_whose_servers_run_with_its_ids_is_kept_after_the_view_followed_them():
    """After its commands the view has the added server with the spec's id: the spec still
    holds (built again it would be the same), so it is neither built nor planned again;
    with another id there (HAProxy's own), it is built again on that id."""
    renderer, services, running = rendered()
    s0, s1, s2 = services
    first = [with_servers(s0, [*s0.servers, server("10.0.0.9", 8080)]), s1, s2]
    built = renderer.membership_specs(first, RunningIds().use(running.backends))
    assert built is not None
    added = built[0].servers[first[0].servers[-1].name]
    backends = dict(running.backends or {})
    ran = RunningServer("s0", added.name, added.id or 0, "10.0.0.9", 8080)
    backends["s0"] = {**backends["s0"], added.name: ran}
    followed = RunningIds().use(backends)
    second = [first[0], with_servers(s1, s1.servers[:2]), s2]
    kept = renderer.membership_specs(second, followed, since=first)
    assert [spec.name for spec in kept or ()] == ["s1"]
    assert renderer._early["s0"][2] is built[0]  # (not built again)
    other = dict(backends)
    other["s0"] = {**backends["s0"], added.name: dataclasses.replace(ran, id=(added.id or 0) + 1)}
    unseen = renderer.membership_specs(second, RunningIds().use(other), since=first)
    assert [spec.name for spec in unseen or ()] == ["s1"]  # (s0: looked at when rendered)
    again = renderer.membership_specs(second, RunningIds().use(other))
    assert again is not None and [spec.name for spec in again] == ["s0", "s1"]
    assert again[0].servers[added.name].id == (added.id or 0) + 1
    renderer.membership_specs(second, followed, since=first)
    assert renderer.render(second, followed, set()).backends["s0"] == built[0]  # (rebuilt)


def test_new_servers_of_the_same_options_share_their_traits_from_one_change_to_the_next():
    """What a server's options mean (``_traits``) is worked out once per options and
    inheritance, not again for each new server of each change; other options, other ones."""
    renderer, services, _ = rendered()
    s0, s1 = services[0], services[1]
    first = renderer.render(services, {}, set()).backends
    one = with_servers(s0, [*s0.servers, server("10.0.0.9", 80)])
    two = with_servers(s1, [*s1.servers, server("10.0.1.9", 80, weight=3)])
    after = renderer.render([one, two, *services[2:]], {}, {"s0", "s1"}).backends
    added = after["s0"].servers[server("10.0.0.9", 80).name]
    assert added.traits is first["s2"].servers[services[2].servers[0].name].traits
    reweighed = after["s1"].servers[server("10.0.1.9", 80, weight=3).name]
    assert reweighed.traits is not added.traits and reweighed.weight == 3
