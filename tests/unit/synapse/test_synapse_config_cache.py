"""The per-service config cache (smartstack.config_sections): a reload validates only the
services that changed, and ends exactly where a load without the cache ends."""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import Any

import pytest

from smartstack.configfile import ConfigError
from synapse.config import load_synapse_config, service_cache


def service(i: int, **haproxy: Any) -> dict[str, Any]:
    return {
        "discovery": {"method": "base"},
        "default_servers": [{"name": "b", "host": "127.0.0.1", "port": 8000 + i}],
        "haproxy": {"routes": {"hosts": [f"s{i}.example.com"]}, **haproxy},
    }


def document(tmp_path: Path, count: int = 5, **top: Any) -> dict[str, Any]:
    return {
        "services": {f"s{i}": service(i) for i in range(count)},
        "haproxy": {
            "config_file_path": str(tmp_path / "haproxy.cfg"),
            "reload_command": "true",
            "shared_frontend": ["bind :80", "mode http"],
            **top,
        },
    }


def write(path: Path, doc: dict[str, Any]) -> Path:
    path.write_text(json.dumps(doc))
    return path


def both(path: Path, cache: Any, strict: bool = False) -> tuple[Any, list[str]]:
    """Load with the cache and without it: the same config and the same warnings."""
    cached, warnings = load_synapse_config(path, strict=strict, cache=cache)
    plain, plain_warnings = load_synapse_config(path, strict=strict)
    assert cached == plain
    assert warnings == plain_warnings
    return cached, warnings


def refused_alike(path: Path, cache: Any) -> str:
    """A load with ``cache`` refuses ``path`` with the very lines of a full validation."""
    with pytest.raises(ConfigError) as cached:
        load_synapse_config(path, cache=cache)
    with pytest.raises(ConfigError) as plain:
        load_synapse_config(path)
    assert cached.value.lines == plain.value.lines
    return str(cached.value)


def test_only_changed_services_are_validated_again(tmp_path: Path) -> None:
    doc = document(tmp_path)
    path = write(tmp_path / "synapse.json", doc)
    cache = service_cache()
    first, _ = both(path, cache)
    assert cache.validated == 5
    doc["services"]["s2"]["haproxy"]["routes"]["hosts"].append("new.example.com")
    second, _ = both(write(path, doc), cache)
    assert cache.validated == 6, "one service changed: one validated"
    assert second.services["s2"].haproxy.routes.hosts == ["s2.example.com", "new.example.com"]
    same = [name for name in first.services if second.services[name] is first.services[name]]
    assert same == ["s0", "s1", "s3", "s4"]
    del doc["services"]["s4"]
    doc["services"]["s9"] = service(9)
    third, _ = both(write(path, doc), cache)
    assert sorted(third.services) == ["s0", "s1", "s2", "s3", "s9"]
    assert cache.validated == 7


def test_unknown_keys_are_reported_in_the_same_order(tmp_path: Path) -> None:
    doc = document(tmp_path, mystery=1)
    doc["zzz"] = True
    doc["services"]["s1"]["colour"] = "blue"
    doc["services"]["s3"]["haproxy"]["shade"] = "dark"
    path = write(tmp_path / "synapse.json", doc)
    cache = service_cache()
    _, warnings = both(path, cache)
    assert [w.split(": ")[1] for w in warnings] == [
        "zzz",
        "services.s1.colour",
        "services.s3.haproxy.shade",
        "haproxy.mystery",
    ]
    _, again = both(path, cache)  # from the cache this time
    assert again == warnings and cache.validated == 5
    with pytest.raises(ConfigError) as refused:
        load_synapse_config(path, strict=True, cache=cache)
    assert "services.s1.colour: unknown key (refused by --strict)" in str(refused.value)


def test_a_typo_in_a_cached_service_is_still_refused(tmp_path: Path) -> None:
    doc = document(tmp_path)
    doc["services"]["s0"]["haproxy"]["server_optoins"] = "check"
    path = write(tmp_path / "synapse.json", doc)
    cache = service_cache()
    for _ in range(2):  # validated, then from the cache
        with pytest.raises(ConfigError, match="did you mean 'server_options'"):
            load_synapse_config(path, cache=cache)


def test_an_invalid_service_gives_the_errors_of_a_full_validation(tmp_path: Path) -> None:
    doc = document(tmp_path)
    path = write(tmp_path / "synapse.json", doc)
    cache = service_cache()
    both(path, cache)
    doc["services"]["s1"]["haproxy"]["port"] = "eighty"
    doc["services"]["s2"]["haproxy"]["routes"]["hosts"] = ["s1.example.com"]  # collision
    write(path, doc)
    assert "services.s1.haproxy.port" in refused_alike(path, cache)
    doc["services"]["s1"]["haproxy"].pop("port")
    with pytest.raises(ConfigError, match="routed to two services: 's1' and 's2'"):
        load_synapse_config(write(path, doc), cache=cache)
    doc["services"]["s2"] = service(2)
    both(write(path, doc), cache)  # valid again: the cache goes on


def test_a_top_level_default_the_services_take_is_part_of_the_key(tmp_path: Path) -> None:
    doc = document(tmp_path, use_nerve_weights=True)
    path = write(tmp_path / "synapse.json", doc)
    cache = service_cache()
    first, _ = both(path, cache)
    assert all(s.haproxy.use_nerve_weights for s in first.services.values())
    doc["haproxy"]["use_nerve_weights"] = False
    second, _ = both(write(path, doc), cache)
    assert not any(s.haproxy.use_nerve_weights for s in second.services.values())
    assert all(s.haproxy.use_nerve_weights for s in first.services.values()), "not shared"


def test_service_conf_dir_files_are_named_in_warnings(tmp_path: Path) -> None:
    conf_dir = tmp_path / "services"
    conf_dir.mkdir()
    doc = document(tmp_path, count=1)
    doc["service_conf_dir"] = str(conf_dir)
    write(conf_dir / "extra.json", {**service(7), "colour": "red"})
    path = write(tmp_path / "synapse.json", doc)
    cache = service_cache()
    _, warnings = both(path, cache)
    assert warnings == [f"{conf_dir / 'extra.json'}: services.extra.colour: unknown key, ignored"]
    write(conf_dir / "extra.json", {**service(8), "colour": "red"})
    config, _ = both(path, cache)
    assert config.services["extra"].default_servers[0].port == 8008
    assert cache.validated == 3


def test_service_conf_dir_files_are_parsed_again_only_when_their_text_changes(
    tmp_path: Path,
) -> None:
    conf_dir = tmp_path / "services"
    conf_dir.mkdir()
    doc = document(tmp_path, count=1)
    doc["service_conf_dir"] = str(conf_dir)
    for i in range(3):
        (conf_dir / f"f{i}.yaml").write_text(
            f"discovery: {{method: base}}\n"
            f"default_servers: [{{name: b, host: 127.0.0.1, port: {9000 + i}}}]\n"
            # a legacy line the loader rewrites in place: a cached parse must stay as read
            f"haproxy: {{listen: ['option forceclose'], routes: {{hosts: [f{i}.example.com]}}}}\n"
        )
    (conf_dir / "odd.yaml").write_text("discovery: {method: base}\nsince: 2024-01-31\n")  # a date
    path = write(tmp_path / "synapse.json", doc)
    cache = service_cache()
    first, warnings = both(path, cache)
    assert cache.parsed == 4
    assert sum("'option forceclose' rewritten" in w for w in warnings) == 3
    again, again_warnings = both(path, cache)
    assert cache.parsed == 4, "no file changed: none parsed again"
    assert again_warnings == warnings and again == first
    assert again.services["odd"].model_extra == {"since": datetime.date(2024, 1, 31)}
    (conf_dir / "f1.yaml").write_text(
        "discovery: {method: base}\ndefault_servers: [{name: b, host: 127.0.0.1, port: 9999}]\n"
    )
    (conf_dir / "f2.yaml").unlink()
    third, _ = both(path, cache)
    assert cache.parsed == 5
    assert third.services["f1"].default_servers[0].port == 9999 and "f2" not in third.services


def test_non_string_server_options_are_named_in_both_service_formats(tmp_path: Path) -> None:
    from synapse.config_legacy import ignore_non_string_server_options

    path, conf = tmp_path / "synapse.yaml", tmp_path / "conf" / "web.yaml"
    listed = {"services": [{"name": "a", "server_options": ["x"]}, {"name": "b"}]}
    assert ignore_non_string_server_options(listed, path, {}) == [
        f"{path}: services[0].server_options: a list, not a string: ignored"
    ]
    mapped = {"services": {"web": {"haproxy": {"server_options": {"x": 1}}}, "db": {}}}
    assert ignore_non_string_server_options(mapped, path, {"web": conf}) == [
        f"{conf}: services.web.haproxy.server_options: a hash, not a string: ignored"
    ]
    assert mapped["services"]["web"]["haproxy"] == {}


@pytest.mark.parametrize("before, after", [(1, True), (1, 1.0), (0, False)])
def test_a_value_equal_only_across_types_is_validated_again(
    tmp_path: Path, before: Any, after: Any
) -> None:
    # 1 == 1.0 == True in Python: an edit between them must not keep the cached model.
    doc = document(tmp_path)
    doc["services"]["s1"]["haproxy"]["timeout_queue"] = before
    path = write(tmp_path / "synapse.json", doc)
    cache = service_cache()
    first, _ = both(path, cache)
    assert first.services["s1"].haproxy.timeout_queue == str(before)
    doc["services"]["s1"]["haproxy"]["timeout_queue"] = after
    write(path, doc)
    assert "services.s1.haproxy.timeout_queue" in refused_alike(path, cache)
