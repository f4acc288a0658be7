"""Registry security settings refused at load when they could never hold."""

from __future__ import annotations

import pytest

from synapse.config import SynapseConfig


def test_synapse_refuses_https_endpoints_without_etcd_tls() -> None:
    discovery = {"method": "etcd", "endpoints": ["https://127.0.0.1:2379"], "path": "/x"}
    with pytest.raises(ValueError, match="is https: set etcd_tls"):
        SynapseConfig.model_validate({"services": {"web": {"discovery": discovery}}})
