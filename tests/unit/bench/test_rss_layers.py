"""`python -m bench.rss_layers`: the layers are valid code, in the order the docstring says
(the process itself is measured by running the module; a unit test starts no process)."""

from __future__ import annotations

import pytest

from bench import rss_layers


@pytest.mark.parametrize("kind", ["zookeeper", "etcd"])
def test_each_layer_compiles_and_pydantic_comes_after_the_registry_client(kind: str) -> None:
    steps = rss_layers.layers(kind)
    for label, code in steps:
        compile(code + rss_layers._PROBE, label, "exec")
    labels = [label for label, _ in steps]
    assert labels.index(rss_layers.CLIENT[kind][0]) < labels.index(rss_layers.PYDANTIC[0][0])
    assert rss_layers.WATCHER[kind] in steps[-1][1]
