"""A SIGHUP moving web's frontend onto api's port is refused (real synapse, managed HAProxy).

Applied, HAProxy bound the port twice (SO_REUSEPORT) and the kernel split api's connections
between the two frontends: 164 of 369 api requests were answered by web's backends and 355
of 372 web requests refused on web's old port. Now the load refuses the config
(synapse/port_clash.py): the running config stays, both keep their own backends.
"""

from __future__ import annotations

import signal
import time

from haproxy_helpers import section
from synapse_e2e import Load, Synapse, spread, wait, wait_serving
from synapse_reload import static_service

from testbed.process import free_port


def test_a_sighup_moving_web_onto_apis_port_is_refused(http_backend_factory):
    web_backend, api_backend = http_backend_factory("w"), http_backend_factory("x")
    web_port, api_port = free_port(), free_port()
    services = {
        "web": static_service(web_backend, web_port),
        "api": static_service(api_backend, api_port),
    }
    with Synapse(services, startup_wait=0) as syn:
        wait_serving(web_port, {"w"})
        wait_serving(api_port, {"x"})
        mark = len(syn.log(10**6))
        with Load(web_port, seconds=60) as web_load, Load(api_port, seconds=60) as api_load:
            syn.config["services"]["web"]["haproxy"]["port"] = api_port
            syn.write_config()
            syn.signal(signal.SIGHUP)
            # (config_reloaded, or config_reload_failed; then HAProxy's reload, if any)
            wait(lambda: "event=config_reload" in syn.log(10**6)[mark:], 30, "the SIGHUP")
            time.sleep(1.5)
            web_spread, api_spread = spread(web_port, 40), spread(api_port, 40)
        assert web_spread == {"w": 40} and api_spread == {"x": 40}, (web_spread, api_spread)
        assert web_load.failures == [] and api_load.failures == []
        log = syn.log(10**6)[mark:]
        assert "event=config_reload_failed" in log and 'keeping="running config"' in log, log
        assert f"port {api_port} on 127.0.0.1 is also bound by services." in log, log
        assert web_load.ok > 0 and api_load.ok > 0
        assert not syn.status()["config"]["last_reload"]["ok"]
        assert [x for x in section(syn.haproxy_config(), "frontend web") if "bind" in x] == [
            f"bind 127.0.0.1:{web_port}"
        ]
