"""Pure logic of Docker mode: labels -> nerve services, container addresses, image matching."""

from __future__ import annotations

from typing import Any

import pytest

from nerve.docker_config import DockerModeConfig, LabelError, selected, wanted_for
from smartstack.docker_events import ContainerInfo, PortBinding
from synapse.discovery_config import ServerEntry
from synapse.watchers.docker import engine_host, image_matches

DEFAULTS = {"zk_hosts": ["127.0.0.1:2181"], "zk_path": "/services/{service}"}


def mode(**extra: Any) -> DockerModeConfig:
    return DockerModeConfig.model_validate({"service_defaults": DEFAULTS, **extra})


def container(labels: dict[str, str], health: str | None = None, bind: str = "127.0.0.1",
              **extra: Any) -> ContainerInfo:  # fmt: skip
    fields: dict[str, Any] = {
        "id": "c0ffee" * 8, "name": "app1", "image": "shop/web:1.2", "labels": labels,
        "running": True, "health": health, "started_at": "t0",
        "networks": {"front": "172.20.0.5", "back": "172.21.0.5"},
        "ports": {"80/tcp": (PortBinding(bind, 32001),), "81/tcp": (PortBinding(bind, 32002),)},
    }  # fmt: skip
    fields.update(extra)
    return ContainerInfo(**fields)


def test_one_service_per_port_with_record_fields() -> None:
    info = container({"smartstack.service": "web", "smartstack.port": "80,81",
                      "smartstack.weight": "5", "smartstack.zone": "az1",
                      "smartstack.label.team": "shop", "smartstack.check": "http:/health",
                      "smartstack.rise": "2", "smartstack.check_interval": "1.5"})  # fmt: skip
    wanted = wanted_for(mode(), "host1", info)
    assert [(w.key, w.instance_id) for w in wanted] == [
        ("web@app1:80", "host1_app1_80"), ("web@app1:81", "host1_app1_81")]  # fmt: skip
    cfg = wanted[0].config
    assert (cfg.host, cfg.port, cfg.weight, cfg.zk_path) == ("127.0.0.1", 32001, 5, "/services/web")
    assert cfg.labels == {"team": "shop", "zone": "az1"}
    assert cfg.check_interval == 1.5
    assert [(c.type, c.uri, c.rise) for c in cfg.checks] == [("http", "/health", 2)]


def test_default_check_depends_on_healthcheck() -> None:
    labels = {"smartstack.service": "web", "smartstack.port": "80"}
    [plain] = wanted_for(mode(), "h", container(labels))
    [with_hc] = wanted_for(mode(), "h", container(labels, health="healthy"))
    assert [c.type for c in plain.config.checks] == ["tcp"]
    assert with_hc.config.checks == []  # Docker's health status gates it


def test_addresses_published_and_container_modes() -> None:
    labels = {"smartstack.service": "web", "smartstack.port": "80", "smartstack.instance": "w1"}
    with pytest.raises(LabelError, match=r"set docker\.host"):
        wanted_for(mode(), "h", container(labels, bind="0.0.0.0"))
    [w] = wanted_for(mode(host="10.1.2.3"), "h", container(labels, bind="0.0.0.0"))
    assert (w.config.host, w.config.port, w.instance_id) == ("10.1.2.3", 32001, "w1")
    [c] = wanted_for(mode(address="container", network="front"), "h", container(labels))
    assert (c.config.host, c.config.port) == ("172.20.0.5", 80)
    [first] = wanted_for(mode(address="container"), "h", container(labels))
    assert first.config.host == "172.21.0.5"  # the first network by name: "back"
    with pytest.raises(LabelError, match="not published"):
        wanted_for(mode(), "h", container({**labels, "smartstack.port": "8080"}))


@pytest.mark.parametrize(
    ("labels", "error"),
    [
        ({"smartstack.port": "80"}, "smartstack.service is missing"),
        ({"smartstack.service": "web"}, "smartstack.port is missing"),
        ({"smartstack.service": "web", "smartstack.port": "80", "smartstack.check": "ping"},
         "expected http:/path"),
        ({"smartstack.service": "web", "smartstack.port": "80", "smartstack.weight": "heavy"},
         "is not a number"),
        ({"smartstack.service": "web", "smartstack.port": "80", "smartstack.weight": "999"},
         "weight"),
    ],
)  # fmt: skip
def test_bad_labels_are_refused_with_a_reason(labels: dict[str, str], error: str) -> None:
    with pytest.raises(LabelError, match=error):
        wanted_for(mode(), "h", container(labels))


def test_selection_and_serving() -> None:
    cfg = mode(label_selector={"app": "{instance_id}", "tier": "*"})
    base = {"smartstack.service": "web", "smartstack.port": "80"}
    assert selected(cfg, container({**base, "app": "one", "tier": "x"}), "one")
    assert not selected(cfg, container({**base, "app": "two", "tier": "x"}), "one")
    assert not selected(cfg, container({**base, "app": "one"}), "one")
    assert not selected(cfg, container({"app": "one", "tier": "x"}), "one")
    assert not container(base, health="starting").serving
    assert not container(base, stopping=True).serving
    assert container(base, health="healthy").serving


def test_invalid_service_defaults_fail_at_load() -> None:
    with pytest.raises(ValueError, match="zk_hosts"):
        DockerModeConfig.model_validate({"service_defaults": {"zk_path": "/x"}})


def test_watcher_image_and_engine_helpers() -> None:
    assert image_matches("shop/web:1.2", "shop/web")
    assert image_matches("shop/web:1.2", "shop/web:1.2")
    assert image_matches("registry:5000/shop/web", "registry:5000/shop/web")
    assert not image_matches("shop/web-admin:1", "shop/web")
    assert engine_host(ServerEntry.model_validate("unix:///var/run/docker.sock")) == "127.0.0.1"
    assert engine_host(ServerEntry.model_validate({"host": "10.0.0.7", "port": 2375})) == "10.0.0.7"


def test_server_strings_take_ipv6_in_brackets_and_refuse_it_bare() -> None:
    """'fd00::13' was read as host 'fd00:', port 13 (a dns service never served), and
    '[fd00::13]' kept its brackets (a bad record): now brackets, or a clear refusal."""
    assert ServerEntry.model_validate("[fd00::13]").host == "fd00::13"
    entry = ServerEntry.model_validate("[fd00::13]:8086")
    assert (entry.host, entry.port) == ("fd00::13", 8086)
    assert ServerEntry.model_validate("tcp://10.0.0.7:2375").port == 2375
    # No port could be meant (the last group is not a number): a host, as before.
    assert ServerEntry.model_validate("2001:db8::a").host == "2001:db8::a"
    for bad in ("fd00::13", "::1", "fd00::1:8080", "[fd00::13", "[fd00::13]x"):
        with pytest.raises(ValueError, match="IPv6"):
            ServerEntry.model_validate(bad)
