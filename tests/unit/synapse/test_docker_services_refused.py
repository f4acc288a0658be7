"""docker_services: a container's service that the file's config refuses (its name, a route)
is said once while the clash lasts, not again at every container change (a standing clash
was logged 32 times in ~4 min of changes), and again once it recurs after ending."""

from __future__ import annotations

import pytest
from test_docker_services_saved import Source, container, events, listing

from synapse.config import SynapseConfig


def file_config(*names: str) -> SynapseConfig:
    services = {name: {"discovery": {"method": "base"}} for name in names}
    return SynapseConfig.model_validate({"services": services})


async def test_a_standing_refusal_is_said_once_until_the_clash_ends(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level("INFO", logger="synapse.docker_services")
    made = Source(None)
    source = made.source
    for i in range(30):  # container changes, each merged with the file's config
        source._changed(listing(container("w1", "web", "web.test"),
                                container(f"a{i}", "api", f"api{i}.test")))  # fmt: skip
        merged = source.merge(file_config("web"))
        assert "api" in merged.services
    said = [e["problem"] for e in events(caplog, "docker_service_refused")]
    assert said == ["web: the config file has a service of that name"]
    source.merge(file_config())  # the file no longer names web: the clash ended
    source.merge(file_config("web"))  # ... and it is back
    assert len(events(caplog, "docker_service_refused")) == 2
