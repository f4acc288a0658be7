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
