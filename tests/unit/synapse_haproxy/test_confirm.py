"""What a reloading apply reads at once (pure): the backends the reload changed, or
everything for a small config, or nothing specific on a first start."""

from __future__ import annotations

from synapse.haproxy.configtext import parse_config
from synapse.haproxy.confirm import changed_proxies, read_at_once
from synapse.haproxy.view import SWEEP_PART


def config(weights: dict[str, int], extra: str = "") -> str:
    text = "global\n  maxconn 10\n"
    for name, weight in weights.items():
        text += f"backend {name}\n  balance roundrobin{extra if name == 'b0' else ''}\n"
        text += f"  server s 10.0.0.1:80 weight {weight}\n"
    return text


def test_the_backends_a_reload_changed_are_read_at_once_the_rest_by_the_sweep():
    names = [f"b{i}" for i in range(SWEEP_PART + 5)]
    before = parse_config(config(dict.fromkeys(names, 1)))
    after = parse_config(
        config({**dict.fromkeys(names, 1), "b3": 2, "new": 1}, extra="\n  retries 2")
    )
    assert changed_proxies(before, after) == {"b0", "b3"}  # its lines, its servers (not new)
    assert read_at_once(before, after, set(names)) == {"b0", "b3"}
    assert read_at_once(before, after, {"b3", *names[5:]}) == {"b3"}  # read since: not again
    assert read_at_once(None, after, set(names)) == set()  # first start: the sweep reads
    assert read_at_once(before, after, set(names[:SWEEP_PART])) is None  # small: everything


def test_a_revive_reads_at_once_what_the_bridge_changes_and_what_commands_changed_lately():
    """After a crash the restart runs the file and the server-state file: read at once the
    services that differ from the ones the file was rendered from, and the backends
    commands changed lately (the state file may predate them); the rest by the sweep."""
    from haproxy_helpers import server, service

    from synapse.haproxy.bridge import Layout
    from synapse.haproxy.revive import read_at_revive

    services = [service(f"s{i}", [server("10.0.0.1", 80)], backend_only=True) for i in range(30)]
    layout = Layout(tuple(services), None)  # type: ignore[arg-type]
    desired = list(services)
    desired[3] = service("s3", [server("10.0.0.2", 80)], backend_only=True)  # came meanwhile
    desired.append(service("new", [], backend_only=True))  # not in the file: the reload's
    unread = {f"s{i}" for i in range(30)}
    assert read_at_revive(layout, desired, unread, {"s7", "gone"}) == {"s3", "s7"}
    assert read_at_revive(layout, services, unread - {"s7"}, {"s7"}) == set()
    assert read_at_revive(layout, desired, set(list(unread)[:SWEEP_PART]), set()) is None
    assert read_at_revive(None, desired, unread, {"s7"}) == {"s7"}  # no layout, no bridge
