"""`python -m bench.rss_layers`: the layers are valid code, in the order the docstring says
(the process itself is measured by running the module; a unit test starts no process)."""

from __future__ import annotations

import pytest

from bench import rss_layers


@pytest.mark.parametrize("kind", ["zookeeper", "etcd"])
@pytest.mark.parametrize("pydantic", [False, True])
def test_each_layer_compiles_and_the_config_comes_after_the_registry_client(
    kind: str, pydantic: bool
) -> None:
    steps = rss_layers.layers(kind, pydantic)
    for label, code in steps:
        compile(code + rss_layers._PROBE, label, "exec")
    labels = [label for label, _ in steps]
    config = (rss_layers.PYDANTIC if pydantic else rss_layers.PLAIN)[0][0]
    assert labels.index(rss_layers.CLIENT[kind][0]) < labels.index(config)
    assert ("select_plain" in "".join(code for _, code in steps)) is not pydantic
    assert rss_layers.WATCHER[kind] in steps[-1][1]
