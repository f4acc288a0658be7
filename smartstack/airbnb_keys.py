"""Where Airbnb's nerve and synapse read each key (docs: /work/shared/reference/airbnb-config.md,
plus discovery keys of watchers we do not implement).

A real Airbnb file may carry a key we do not use, so an Airbnb key is never a "did you
mean" error. But it is only Airbnb's at its own level: ``label`` (a ``label_filters`` entry
key in synapse) typed for ``labels`` in a nerve service, or ``backend_port_override``
put under ``haproxy`` (Airbnb reads it beside ``discovery``), are mistakes whose warning
must say what was meant (a nerve service that loses its labels is dropped by every
synapse ``label_filters``).
"""

from __future__ import annotations

from typing import Any

# Levels as dotted paths; '*' is a service name or a list index.
_NERVE = {
    "": "instance_id services service_conf_dir heartbeat_path max_repeated_report_failures statsd",
    "statsd": "host port",
    "services.*": "host port check_interval checks weight haproxy_server_options labels"
    " reporter_type zk_hosts zk_path node_type use_path_encoding etcd_host etcd_port"
    " etcd_path rate_limiting load_test_concurrency",
    "services.*.checks.*": "type name host port timeout rise fall uri ssl headers expect"
    " open_timeout read_timeout ssl_timeout username password",
    "services.*.rate_limiting": "average_rate max_burst shadow_mode",
}
_DISCOVERY = (
    "method label_filters label_filter hosts path decode generator_config_path retry_policy"
    " polling_interval_sec servers nameserver check_interval image_name container_port"
    " watchers resolver discovery_jitter tag_name tag_value aws_region aws_access_key_id"
    " aws_secret_access_key marathon_api_url application_name port_index"
)
_SYNAPSE = {
    "": "services haproxy file_output statsd service_conf_dir",
    "statsd": "host port sample_rate",
    "file_output": "output_directory",
    "services.*": "discovery default_servers keep_default_servers use_previous_backends"
    " backend_port_override haproxy file_output leader_election",
    "services.*.file_output": "disabled",
    "services.*.default_servers.*": "name host port haproxy_server_options weight labels",
    "services.*.discovery": _DISCOVERY,
    "services.*.discovery.watchers.*": _DISCOVERY,
    "services.*.discovery.resolver": "method",
    "services.*.discovery.label_filters.*": "label value condition",
    "services.*.discovery.label_filter.*": "label value condition",
    "services.*.discovery.decode": "method endpoint_name",
    "services.*.discovery.retry_policy": "max_attempts max_delay base_interval max_interval",
    "services.*.discovery.servers.*": "name host port",
    "services.*.haproxy": "disabled port bind_address bind_options server_options frontend"
    " backend listen backend_name backend_order shared_frontend cookie_value_method"
    " use_nerve_weights server_port_override",
    "haproxy": "global defaults extra_sections config_file_path do_writes reload_command"
    " do_reloads socket_file_path do_socket do_checks check_command"
    " candidate_config_file_path bind_address shared_frontend restart_interval"
    " restart_jitter state_file_path state_file_ttl server_order_seed max_server_id",
}


def _levels(table: dict[str, str]) -> dict[tuple[str, ...], frozenset[str]]:
    return {tuple(p.split(".")) if p else (): frozenset(keys.split()) for p, keys in table.items()}


LEVELS: dict[str, dict[tuple[str, ...], frozenset[str]]] = {
    "nerve": _levels(_NERVE),
    "synapse": _levels(_SYNAPSE),
}
AIRBNB_KEYS = frozenset().union(*(keys for table in LEVELS.values() for keys in table.values()))


def _shared(pattern: tuple[str, ...], loc: tuple[Any, ...]) -> int:
    """How many leading parts of ``loc`` the pattern matches."""
    n = 0
    while n < min(len(pattern), len(loc)) and pattern[n] in ("*", str(loc[n])):
        n += 1
    return n


def _render(pattern: tuple[str, ...], loc: tuple[Any, ...]) -> str:
    """``services.*`` seen from ``services.web.haproxy``: ``services.web``."""
    same = _shared(pattern, loc)
    parts = [str(loc[i]) if p == "*" and i < same else p for i, p in enumerate(pattern)]
    return ".".join(parts) or "the top level"


def daemon_of(model: Any) -> str | None:
    """'nerve' or 'synapse' from a config model's module (None: neither, use both)."""
    top = type(model).__module__.partition(".")[0]
    return top if top in LEVELS else None


def elsewhere(daemon: str | None, level: tuple[Any, ...], key: str) -> tuple[str, ...] | None:
    """None when ``key`` is Airbnb's at ``level`` (the dict holding it); otherwise where
    Airbnb reads it, nearest first (empty: not an Airbnb key)."""
    tables = [LEVELS[daemon]] if daemon else list(LEVELS.values())
    homes: list[tuple[str, ...]] = []
    for table in tables:
        for pattern, keys in table.items():
            if key in keys:
                if len(pattern) == len(level) == _shared(pattern, level):
                    return None
                homes.append(pattern)

    homes.sort(key=lambda p: (-_shared(p, level), len(p)))
    return tuple(dict.fromkeys(_render(p, level) for p in homes))[:2]
