"""compile_routes patches its last result when a few services change (SIGHUP on a big
edge): every result must be what compiling from scratch gives, collisions included."""

from __future__ import annotations

import random

import pytest

from synapse.haproxy import routes
from synapse.haproxy.routes import RouteCollision, RouteSpec, compile_routes

HOSTS = [f"h{i}.test" for i in range(12)] + ["*.w.test", "*.h1.test"]
PATHS = ["/", "/api/", "/api/v2/", "/static/"]


whole = routes._compile


def scratch(specs: dict[str, RouteSpec]) -> routes.RouteMaps | str:
    """From scratch (the previous result untouched), or the collision's message."""
    try:
        flat = {n: (s.backend, tuple(s.hosts), tuple(s.paths)) for n, s in specs.items()}
        return whole(flat).maps
    except RouteCollision as err:
        return str(err)


def patched(specs: dict[str, RouteSpec]) -> routes.RouteMaps | str:
    try:
        return compile_routes(specs)
    except RouteCollision as err:
        return str(err)


def random_spec(rng: random.Random, name: str) -> RouteSpec:
    hosts = rng.sample(HOSTS, rng.randint(0, 2))
    paths = rng.sample(PATHS, rng.randint(0 if hosts else 1, 2))
    return RouteSpec(f"be_{name}", hosts, paths)


def test_patched_results_equal_compiling_from_scratch(monkeypatch: pytest.MonkeyPatch) -> None:
    compiled = []
    whole = routes._compile
    monkeypatch.setattr(routes, "_compile", lambda specs: compiled.append(1) or whole(specs))
    rng = random.Random(13)
    specs = {f"s{i}": RouteSpec(f"be_s{i}", [f"s{i}.test"], []) for i in range(40)}
    routes._last = None
    patched(specs)  # the starting point
    collisions = 0
    for _ in range(300):  # bounded: a few services change at a time, as SIGHUPs do
        new = dict(specs)
        for _ in range(rng.randint(0, 3)):
            name = f"s{rng.randrange(45)}"
            if rng.random() < 0.2:
                new.pop(name, None)
            else:
                new[name] = random_spec(rng, name)
        got = patched(new)  # patches the last good result, patched itself
        want = scratch(new)
        assert got == want
        if isinstance(want, str):
            collisions += 1
        else:
            specs = new
    assert collisions > 10, "the walk must meet collisions too"
    # Only the start and the collisions (whose message a whole compile words) compiled
    # everything: every other change was a patch.
    assert len(compiled) == 1 + collisions


def test_a_collision_keeps_the_last_good_result_and_names_both_services() -> None:
    base = {"a": RouteSpec("a", ["a.test"], []), "b": RouteSpec("b", ["b.test"], [])}
    good = compile_routes(base)
    with pytest.raises(RouteCollision, match=r"host a\.test path / .* 'a' and 'b'"):
        compile_routes({**base, "b": RouteSpec("b", ["b.test", "a.test"], [])})
    assert compile_routes(base) is good, "unchanged input: the kept result"
    with pytest.raises(ValueError, match="must be lowercase"):
        compile_routes({**base, "b": RouteSpec("b", ["B.test"], [])})
    more = compile_routes({**base, "c": RouteSpec("c", ["a.test"], ["/api/"])})
    assert more.exact == {"a.test/": "a", "b.test/": "b", "a.test/api/": "c"}
