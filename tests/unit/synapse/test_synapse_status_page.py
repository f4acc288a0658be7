"""The HTML status page shows every service and server and escapes everything."""

from __future__ import annotations

from synapse.status import merge_service_status, render_html


def test_page_lists_services_servers_origins_and_haproxy_state() -> None:
    services = {
        "web": {
            "origin": "discovery",
            "servers": [{"name": "a_10.0.0.1:80", "host": "10.0.0.1", "port": 80,
                         "weight": None, "origin": "zookeeper:/web/a_0000000001"}],
            "haproxy_disabled": False,
        },
        "<script>": {"origin": "default_servers", "servers": [], "haproxy_disabled": True},
    }  # fmt: skip
    watchers = {"web": {"method": "zookeeper", "connected": True, "skipped_records": 2}}
    running = {"a_10.0.0.1:80": {"state": "UP", "weight": 1, "address": "10.0.0.1:80"}}
    haproxy = {"last_reload": {"reason": "new service <b>"}, "backends": {"web": running}}
    merged = merge_service_status(services, watchers, haproxy)
    assert merged["web"]["haproxy"] == {"backend": "web", "servers": running}
    assert merged["<script>"]["haproxy"] is None
    reconciler = {"last_apply": {"reason": "zookeeper:web", "at": 0}}
    page = render_html(
        {"services": merged, "haproxy": haproxy, "host": "h", "reconciler": reconciler}
    )
    assert "zookeeper:/web/a_0000000001" in page
    assert "<td>UP</td>" in page
    assert "skipped records 2" in page
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert "new service <b>" not in page and "new service &lt;b&gt;" in page
