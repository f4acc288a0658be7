"""Services share one instance of each config section left at its defaults (issue 15:
~3 MB at 1,000 services), and read, compare and dump exactly as before."""

from __future__ import annotations

from typing import Any

from synapse.config import ServiceConfig, SynapseConfig


def entry(path: str, **haproxy: Any) -> dict[str, Any]:
    return {"discovery": {"method": "zookeeper", "hosts": ["127.0.0.1:2181"], "path": path},
            "haproxy": {"port": 3000, **haproxy}}  # fmt: skip


def test_untouched_sections_are_one_instance_across_services() -> None:
    a = ServiceConfig.model_validate(entry("/a"))
    b = ServiceConfig.model_validate(entry("/b", health_check={}))
    assert a.file_output is b.file_output
    assert a.discovery.decode is b.discovery.decode
    assert a.discovery.retry_policy is b.discovery.retry_policy
    assert a.haproxy.routes is b.haproxy.routes
    assert a.haproxy.health_check is b.haproxy.health_check  # `{}`: at its defaults too
    assert a.haproxy is not b.haproxy and a.discovery is not b.discovery
    # what the entry wrote stays written: fields set are the entry's own
    assert b.haproxy.model_fields_set == {"port", "health_check"}
    assert a.haproxy.model_fields_set == {"port"}


def test_a_section_set_away_from_its_defaults_stays_its_own() -> None:
    a = ServiceConfig.model_validate(entry("/a", health_check={"rise": 5}))
    b = ServiceConfig.model_validate(entry("/b", health_check={"rise": 2}))  # = default value
    c = ServiceConfig.model_validate(entry("/c"))
    assert a.haproxy.health_check.rise == 5 and b.haproxy.health_check.rise == 2
    assert b.haproxy.health_check is not c.haproxy.health_check  # rise was written
    assert b.haproxy.health_check.model_fields_set == {"rise"}
    assert c.haproxy.health_check.rise == 2


def test_shared_sections_dump_and_compare_as_unshared_ones() -> None:
    a = ServiceConfig.model_validate(entry("/a"))
    built = ServiceConfig.model_construct(**dict(a))  # no validators: nothing shared
    built.discovery = a.discovery.model_copy(deep=True)
    assert a == built
    assert a.model_dump() == built.model_dump()
    assert a.model_dump(exclude_unset=True) == entry("/a")


def test_top_level_nerve_weights_do_not_leak_into_other_services() -> None:
    # SynapseConfig writes use_nerve_weights into each service's haproxy section: that
    # section stays each service's own, so an explicit per-service value is kept.
    config = SynapseConfig.model_validate(
        {
            "services": {"a": entry("/a"), "b": entry("/b", use_nerve_weights=False)},
            "haproxy": {
                "use_nerve_weights": True,
                "reload_command": "true",
                "config_file_path": "/nonexistent/haproxy.cfg",
            },
        }
    )
    assert config.services["a"].haproxy.use_nerve_weights is True
    assert config.services["b"].haproxy.use_nerve_weights is False
    assert ServiceConfig.model_validate(entry("/c")).haproxy.use_nerve_weights is False
