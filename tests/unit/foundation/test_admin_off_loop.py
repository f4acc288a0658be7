"""The admin server encodes /status and /metrics off the event loop: at 1,000 services
they cost ~0.3-1.6 s and ~0.5 s of CPU that would hold back every registry change."""

from __future__ import annotations

import json
import threading

from prometheus_client import CollectorRegistry, Counter

from smartstack import admin
from smartstack.admin import AdminServer


def server(status) -> AdminServer:
    registry = CollectorRegistry()
    Counter("x_total", "X.", registry=registry).inc()
    return AdminServer("127.0.0.1", 0, registry, status)


async def test_status_is_encoded_in_a_worker_thread(monkeypatch):
    threads = []

    def recording(data):
        threads.append(threading.get_ident())
        return json.dumps(data) + "\n"

    monkeypatch.setattr(admin, "json_text", recording)
    response = await server(lambda: {"services": {"web": [1, 2]}})._status_json(None)
    assert threads and threads[0] != threading.get_ident()
    assert json.loads(response.body) == {"services": {"web": [1, 2]}}


async def test_a_status_changed_under_the_thread_is_encoded_on_the_loop(monkeypatch):
    calls = []

    def changed_once(data):
        calls.append(threading.get_ident())
        if len(calls) == 1:
            raise RuntimeError("dictionary changed size during iteration")
        return json.dumps(data) + "\n"

    monkeypatch.setattr(admin, "json_text", changed_once)
    response = await server(lambda: {"ok": True})._status_json(None)
    assert calls[1] == threading.get_ident() != calls[0]
    assert json.loads(response.body) == {"ok": True}


async def test_metrics_are_generated_in_a_worker_thread(monkeypatch):
    threads = []
    real = admin.prometheus_lean.text

    def recording(registry):
        threads.append(threading.get_ident())
        return real(registry)

    monkeypatch.setattr(admin.prometheus_lean, "text", recording)
    response = await server(dict)._metrics(None)
    assert threads and threads[0] != threading.get_ident()
    assert b"x_total 1.0" in response.body


async def test_metrics_changed_under_the_thread_are_generated_on_the_loop(monkeypatch):
    calls = []
    real = admin.prometheus_lean.text

    def changed_once(registry):
        calls.append(threading.get_ident())
        if len(calls) == 1:
            raise RuntimeError("dictionary changed size during iteration")
        return real(registry)

    monkeypatch.setattr(admin.prometheus_lean, "text", changed_once)
    response = await server(dict)._metrics(None)
    assert calls[1] == threading.get_ident() != calls[0]
    assert b"x_total 1.0" in response.body
