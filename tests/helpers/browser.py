"""Headless chromium (Debian's ``chromium`` + ``chromium-driver``) driven by selenium.

No network beyond loopback: background networking, component updates and sync are off,
and each browser gets a throw-away profile directory.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.service import Service

CHROMIUM = "/usr/bin/chromium"
FLAGS = (
    "--headless",
    "--no-sandbox",  # root in CI: chromium refuses its sandbox
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",  # small /dev/shm in containers
)


@contextmanager
def headless_chromium(profile: Path, width: int = 1440, height: int = 900) -> Iterator:
    """A selenium driver of a headless chromium; quit (and its profile removed) on exit."""
    driver_path = shutil.which("chromedriver")
    if driver_path is None or not Path(CHROMIUM).exists():
        raise RuntimeError("chromium and chromium-driver are missing: run `make install`")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=driver_path))
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
