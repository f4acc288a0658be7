"""synapse's status page in a real browser (headless chromium driven by selenium).

1. A real synapse (managed HAProxy, ZooKeeper, real HTTP backends) with a few services:
   the summary and the service rows, the server rows with HAProxy's states, zones and
   live request rates, the filter box, and a refresh that keeps the scroll position,
   the filter and the open services. A screenshot goes to the test's tmp directory.
2. 1,000 services (file_output only, no HAProxy): the HTML stays under 50 KB, the JSON
   under 1 MB, and the page shows every service within 10 s.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml
from browser import headless_chromium
from kazoo.client import KazooClient
from selenium.webdriver.common.by import By
from synapse_e2e import SYNAPSE, Synapse, nerve_record, wait, wait_serving

from testbed.process import ManagedProcess, free_port
from testbed.zookeeper import ZooKeeperServer

HTML_LIMIT = 50_000  # bytes: the page is static, whatever the number of services
JSON_LIMIT = 1_000_000  # bytes for 1,000 services (about 250 per server)
# seconds from navigation to 1,000 rows laid out; ~1 s on an idle 2-core machine, the
# bound leaves room for a loaded one
RENDER_LIMIT = 10.0
CHECKS = "check inter 300ms fall 1 rise 1"
CLEAR_FILTER = (
    "const box = document.getElementById('filter');"
    "box.value = ''; box.dispatchEvent(new Event('input'));"
)


def fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=5) as answer:
        return answer.read()


def page_json(admin_port: int) -> dict[str, Any]:
    return json.loads(fetch(f"http://127.0.0.1:{admin_port}/status/page.json"))


def service_of(data: dict[str, Any], name: str) -> dict[str, Any]:
    return next(s for s in data["services"] if s["n"] == name)


@contextmanager
def traffic(urls: list[str], limit: int = 2000, seconds: float = 60.0) -> Iterator[None]:
    """Requests to ``urls`` in a background thread while the block runs (bounded)."""
    stop = threading.Event()

    def run() -> None:
        deadline = time.monotonic() + seconds
        for count in range(limit):
            if stop.is_set() or time.monotonic() > deadline:
                return
            with contextlib.suppress(OSError):
                urllib.request.urlopen(urls[count % len(urls)], timeout=2).close()
            time.sleep(0.01)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=10)


def refreshes(driver) -> int:
    return int(driver.find_element(By.TAG_NAME, "body").get_attribute("data-refreshes") or 0)


def cells(row) -> list:
    return row.find_elements(By.XPATH, "./span")


def visible_services(driver) -> list[str]:
    return driver.execute_script(
        "return [...document.querySelectorAll('#rows > .item')]"
        ".filter(r => r.style.display !== 'none').map(r => r.dataset.service)"
    )


def test_status_page_in_a_browser(
    zk: ZooKeeperServer, http_backend_factory, tmp_path: Path
) -> None:
    api = [http_backend_factory(f"api-{i}") for i in (1, 2)]
    pay_ok, pay_bad = http_backend_factory("pay-1"), http_backend_factory("pay-2")
    pay_bad.set_healthy(False)
    flaky = http_backend_factory("checkout-1")
    flaky.set_healthy(False)
    search = [http_backend_factory(f"search-{i}") for i in (1, 2, 3)]
    writer = KazooClient(hosts=zk.hosts)
    writer.start(timeout=30)
    try:
        for backend, zone in zip(search, ("az1", "az1", "az2"), strict=True):
            record = nerve_record(backend, labels={"zone": zone})
            writer.create("/page/search/n_", record, sequence=True, makepath=True)
    finally:
        writer.stop()
        writer.close()

    def static(*backends: Any, **haproxy: Any) -> dict[str, Any]:
        servers = [{"name": b.name, "host": "127.0.0.1", "port": b.port} for b in backends]
        hap = {"port": free_port(), "bind_address": "127.0.0.1", **haproxy}
        return {"discovery": {"method": "base"}, "default_servers": servers, "haproxy": hap}

    checked = {"server_options": CHECKS, "backend": ["option httpchk GET /health"]}
    services = {
        "api": static(*api),
        "payments": static(pay_ok, pay_bad, **checked),
        "checkout": static(flaky),
        "search": {
            "discovery": {"method": "zookeeper", "hosts": [zk.hosts], "path": "/page/search"},
            "haproxy": {"port": free_port(), "bind_address": "127.0.0.1"},
            "zone_routing": {},  # this synapse is in az1: az1 takes everything
        },
        "legacy-billing": {
            "discovery": {"method": "base"},
            "default_servers": [{"name": "old", "host": "127.0.0.1", "port": free_port()}],
            "haproxy": {"port": free_port(), "bind_address": "127.0.0.1", **checked},
        },
        # enough services to scroll
        **{f"svc-{i:02d}": static(api[i % 2]) for i in range(30)},
    }
    with (
        Synapse(services, zone="az1") as synapse,
        headless_chromium(tmp_path / "profile") as driver,
    ):
        api_port = services["api"]["haproxy"]["port"]
        wait_serving(api_port, {"api-1", "api-2"})
        wait_serving(services["search"]["haproxy"]["port"], {"search-1", "search-2"})  # az1

        def checks_settled() -> bool:
            data = page_json(synapse.admin_port)
            pay, legacy = service_of(data, "payments"), service_of(data, "legacy-billing")
            return (pay["up"], legacy["up"], legacy["t"]) == (1, 0, 1)

        wait(checks_settled, what="health checks: pay-2 and legacy-billing DOWN")

        driver.get(f"http://127.0.0.1:{synapse.admin_port}/?refresh=1")
        wait(lambda: refreshes(driver) >= 1, what="the page's first data")
        assert len(visible_services(driver)) == len(services)
        cards = driver.execute_script(
            "return Object.fromEntries([...document.querySelectorAll('#summary .card')]"
            ".map(c => [c.dataset.key, c.querySelector('.v').textContent]))"
        )
        assert cards["services"] == str(len(services))
        assert cards["without an UP server"] == "1"  # legacy-billing
        total = 2 + 2 + 1 + 3 + 1 + 30
        assert cards["servers UP"] == f"{total - 2} / {total}"

        def row(name: str):
            return driver.find_element(By.CSS_SELECTOR, f'.item[data-service="{name}"] > .svc')

        pill = row("payments").find_element(By.CLASS_NAME, "pill")
        assert (pill.text, pill.get_attribute("class")) == ("1 / 2", "pill st-PART")
        assert "bad" in row("legacy-billing").get_attribute("class")
        zones = [z.text for z in row("search").find_elements(By.CLASS_NAME, "zone")]
        assert zones == ["az1 2/2 · 100%", "az2 1/1 · 0%"]  # UP/total, share of traffic

        # Servers: open a service, its rows carry HAProxy's state, weight, zone, origin.
        row("payments").click()
        servers = {
            tr.get_attribute("data-server"): tr.find_elements(By.TAG_NAME, "td")
            for tr in driver.find_elements(By.CSS_SELECTOR, ".detail tr[data-server]")
        }
        states = {name: tds[0].text for name, tds in servers.items()}
        assert states == {f"pay-1_127.0.0.1:{pay_ok.port}": "UP",
                          f"pay-2_127.0.0.1:{pay_bad.port}": "DOWN"}  # fmt: skip
        assert servers[f"pay-1_127.0.0.1:{pay_ok.port}"][5].text == "default"
        row("search").click()

        # Traffic through HAProxy shows up as rates once two samples were taken: requests
        # on api, 5xx on checkout (its server answers /health with 503, no checks).
        checkout_port = services["checkout"]["haproxy"]["port"]
        with traffic([f"http://127.0.0.1:{api_port}/",
                      f"http://127.0.0.1:{checkout_port}/health"]):  # fmt: skip
            wait(lambda: cells(row("api"))[5].text not in ("", "—", "0"), what="api's rate")
            wait(lambda: cells(row("checkout"))[6].text not in ("", "—", "0"), what="5xx rate")
            assert "err" in cells(row("checkout"))[6].get_attribute("class")
            # The screenshot: the top of the page, two services open, traffic flowing.
            shot = tmp_path / "status-page.png"
            driver.save_screenshot(str(shot))
        print(f"status page screenshot: {shot}")
        assert shot.stat().st_size > 10_000
        if os.environ.get("STATUS_PAGE_SHOT"):  # a copy that outlives pytest's tmp dirs
            shutil.copy(shot, os.environ["STATUS_PAGE_SHOT"])

        # The filter box.
        box = driver.find_element(By.ID, "filter")
        box.send_keys("pay")
        assert visible_services(driver) == ["payments"]
        box.clear()
        box.send_keys("az2")  # a zone matches the services that have a server there
        assert visible_services(driver) == ["search"]
        box.clear()
        box.send_keys("svc-1")
        assert visible_services(driver) == [f"svc-{i}" for i in range(10, 20)]
        driver.execute_script(CLEAR_FILTER)  # (clear() fires no input event)
        assert len(visible_services(driver)) == len(services)

        # A refresh (every second here) keeps the scroll position and what is open.
        driver.execute_script("window.scrollTo(0, 600)")
        before = driver.execute_script("return window.scrollY")
        assert before == 600
        seen = refreshes(driver)
        wait(lambda: refreshes(driver) >= seen + 2, what="two refreshes")
        assert driver.execute_script("return window.scrollY") == before
        assert len(driver.find_elements(By.CSS_SELECTOR, ".detail")) == 2


def test_a_thousand_services_stay_small_and_render_quickly(tmp_path: Path) -> None:
    services = {
        f"service-{i:04d}": {
            "discovery": {"method": "base"},
            "default_servers": [
                {"name": f"n{j}", "host": f"10.{i // 250}.{i % 250}.{j + 1}", "port": 8000 + j}
                for j in range(3)
            ],
        }
        for i in range(1000)
    }
    admin = free_port()
    config = {
        "services": services,
        "file_output": {"output_directory": str(tmp_path / "out")},
        "admin": {"port": admin},
        "startup_wait": 1,
    }
    path = tmp_path / "synapse.yaml"
    path.write_text(yaml.safe_dump(config))
    process = ManagedProcess([str(SYNAPSE), "-c", str(path)], tmp_path, name="synapse")
    process.start()
    try:
        wait(lambda: len(page_json(admin)["services"]) == 1000, timeout=60,
             what="synapse with 1,000 services")  # fmt: skip
        html = fetch(f"http://127.0.0.1:{admin}/")
        body = fetch(f"http://127.0.0.1:{admin}/status/page.json")
        print(f"1,000 services: page {len(html)} bytes, JSON {len(body)} bytes")
        assert len(html) < HTML_LIMIT and len(body) < JSON_LIMIT
        assert len(json.loads(body)["services"][0]["s"]) == 3

        with headless_chromium(tmp_path / "profile") as driver:
            driver.get(f"http://127.0.0.1:{admin}/")
            wait(lambda: refreshes(driver) >= 1, timeout=60, what="the first render")
            # Measured by the page: from navigation to the first data laid out (fetch,
            # rows built, layout), so the browser's own start-up does not count.
            body = driver.find_element(By.TAG_NAME, "body")
            ready = int(body.get_attribute("data-ready-ms")) / 1000
            print(f"1,000 services shown {ready:.2f} s after navigation")
            assert len(visible_services(driver)) == 1000 and ready < RENDER_LIMIT
            driver.find_element(By.ID, "filter").send_keys("service-0999")
            assert visible_services(driver) == ["service-0999"]
            # no HAProxy here: nothing is flagged as a problem
            assert driver.find_elements(By.CSS_SELECTOR, ".svc.bad") == []
    finally:
        process.stop(timeout=15)


pytestmark = pytest.mark.timeout(240)
