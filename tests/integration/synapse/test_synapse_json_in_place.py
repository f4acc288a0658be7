"""A SIGHUP right after the config was rewritten in place: applied at once when the file is
a whole JSON object, held until it has been still when it is YAML (real synapse, HAProxy).

A JSON object has no prefix that parses as one, so a JSON file written in place a moment
ago is no writer's prefix (smartstack.config_read.whole_json). Before, it held the SIGHUP
~2 s as a YAML file does (`config_reload_held`): the edge bench measured 2,010 ms from the
SIGHUP to a new route. A YAML prefix cut at a line end is valid YAML: that hold stays.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import threading
import time

import pytest
from synapse_e2e import Synapse, spread, wait_serving

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


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"), reason="root, setpriv")
def test_an_overwrite_without_truncating_paused_still_holds_when_no_lease_says(
    http_backend_factory,
) -> None:
    """synapse may not take a lease (the file nobody's, CAP_LEASE dropped): an ``r+``
    overwrite pauses after its new head, SIGHUP in the pause. The head on the old tail is a
    whole JSON object neither version is; review s45: alpha's new server and bravo's old one
    applied at once, and kept after the writer was done. Held, the whole new file is."""
    a1, a2, b1, b2 = (http_backend_factory(name) for name in ("a1", "a2", "b1", "b2"))
    assert len({len(str(backend.port)) for backend in (a1, a2, b1, b2)}) == 1
    pa, pb = free_port(), free_port()
    syn = Synapse({"alpha": service(a1, pa), "bravo": service(b1, pb)}, config_name="s.json")
    syn.process.args[:0] = ["setpriv", "--bounding-set=-lease", "--inh-caps=-lease", "--"]
    os.chown(syn.config_path, 65534, 65534)
    with syn:
        wait_serving(pa, {"a1"}), wait_serving(pb, {"b1"})
        old = syn.config_text()
        syn.config["services"] = {"alpha": service(a2, pa), "bravo": service(b2, pb)}
        new = syn.config_text()
        cut = new.index('"bravo"')
        assert len(old) == len(new) and json.loads(new[:cut] + old[cut:])  # the mix

        def overwrite() -> None:
            with open(syn.config_path, "r+") as file:
                file.write(new[:cut])
                file.flush()
                time.sleep(1.2)
                file.write(new[cut:])

        writer = threading.Thread(target=overwrite)
        writer.start()
        time.sleep(0.5)
        syn.signal(signal.SIGHUP)
        writer.join()
        wait_serving(pa, {"a2"})
        wait_serving(pb, {"b2"}, timeout=6.0)
        assert set(spread(pb, 6)) == {"b2"}
        log = syn.process.log_path.read_text(errors="replace")
    assert re.findall(r"event=config_reloaded .* services=(\d+)", log) == ["2"]
    assert "event=config_reload_held" in log, log[-2000:]
