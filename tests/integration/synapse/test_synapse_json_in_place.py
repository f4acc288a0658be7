"""A SIGHUP right after the config was rewritten in place: applied at once when the file is
a whole JSON object, held until it has been still when it is YAML (real synapse, HAProxy).

A JSON object has no prefix that parses as one, so a JSON file written in place a moment
ago is no writer's prefix (smartstack.config_read.whole_json). Before, it held the SIGHUP
~2 s as a YAML file does (`config_reload_held`): the edge bench measured 2,010 ms from the
SIGHUP to a new route. A YAML prefix cut at a line end is valid YAML: that hold stays.
"""

from __future__ import annotations

import re
import signal

import pytest
from synapse_e2e import Synapse, wait_serving

from testbed.process import free_port


def service(backend, port: int) -> dict:
    return {
        "discovery": {"method": "base"},
        "default_servers": [{"name": backend.name, "host": "127.0.0.1", "port": backend.port}],
        "haproxy": {"port": port},
    }


@pytest.mark.parametrize(("name", "held"), [("synapse.json", False), ("synapse.yaml", True)])
def test_a_config_written_in_place_holds_the_sighup_only_when_it_is_not_json(
    http_backend_factory, name: str, held: bool
) -> None:
    alpha, bravo = http_backend_factory("alpha"), http_backend_factory("bravo")
    ports = {"alpha": free_port(), "bravo": free_port()}
    with Synapse({"alpha": service(alpha, ports["alpha"])}, config_name=name) as syn:
        wait_serving(ports["alpha"], {"alpha"})
        syn.config["services"]["bravo"] = service(bravo, ports["bravo"])
        syn.config_path.write_text(syn.config_text())  # in place (`>`), then SIGHUP
        syn.signal(signal.SIGHUP)
        wait_serving(ports["bravo"], {"bravo"})
        wait_serving(ports["alpha"], {"alpha"})
        log = syn.process.log_path.read_text(errors="replace")
    assert re.findall(r"event=config_reloaded .* services=(\d+)", log) == ["2"]
    assert ("event=config_reload_held" in log) == held, log[-2000:]
