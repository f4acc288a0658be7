"""Where the HAProxy config template comes from: the operator's file or the packaged one."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from synapse.config import HAProxyConfig

DEFAULT_TEMPLATE = "haproxy.cfg.j2"


def load_template(config: HAProxyConfig) -> str:
    """The operator's template (``haproxy.template``) or the packaged default."""
    if config.template:
        return Path(config.template).read_text(encoding="utf-8")
    return (resources.files("synapse.templates") / DEFAULT_TEMPLATE).read_text(encoding="utf-8")
