"""openssl runs once per PEM content even when threads check it at once (pemcheck): a
watcher restarted mid-renewal beside its predecessor's check ran most PEMs twice."""

from __future__ import annotations

import threading
import time

import pytest

from synapse.haproxy import pemcheck
from synapse.haproxy.pemcheck import Inspection


def test_threads_checking_one_content_run_openssl_once(monkeypatch: pytest.MonkeyPatch):
    runs: list[str] = []

    def slow_inspect(text: str) -> Inspection:
        runs.append(text)
        time.sleep(0.2)  # (openssl: ~40 ms a PEM, longer on a busy host)
        return Inspection(problem="not a certificate")

    monkeypatch.setattr(pemcheck, "inspect", slow_inspect)
    monkeypatch.setattr(pemcheck, "_CHECKED", {})
    verdicts: list[str | None] = []
    threads = [
        threading.Thread(target=lambda: verdicts.append(pemcheck.checked_problem("PEM text")))
        for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(5)
    assert verdicts == ["not a certificate"] * 4 and len(runs) == 1, runs
    assert pemcheck.is_checked("PEM text") and not pemcheck._RUNNING
