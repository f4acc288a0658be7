"""synapse's docker watcher when its event stream fails: what a reconnect's resync keeps."""

from __future__ import annotations

import socket
import threading

from dockerproxy import BlackholeProxy
from dockertestlib import Collector, docker_service, eventually, published_port, watcher_context

from synapse.watchers.docker import DockerWatcher


async def test_a_reconnect_keeps_stopping_and_frozen_containers_withdrawn(
    dockerd, docker_client, container_factory
):
    """`docker stop -t 30` (the app drains 20 s) and `docker kill -s STOP`: both still run, and
    the resync after the event stream dropped must not list them again."""
    draining = container_factory("fdrain", labels={"app": "fs"}, environment={"STOP_DELAY": "20"})
    frozen = container_factory("ffrozen", labels={"app": "fs"})
    sink = Collector()
    discovery = {"servers": [dockerd.base_url], "container_port": 80,
                 "label_selector": {"app": "fs"}}  # fmt: skip
    watcher = DockerWatcher("web", docker_service(**discovery), sink, watcher_context())
    await watcher.start()
    try:
        both = [f"127.0.0.1:{published_port(c)}" for c in (draining, frozen)]
        await sink.wait_addresses(both)
        threading.Thread(target=docker_client.api.stop, args=(draining.id, 30), daemon=True).start()
        docker_client.api.kill(frozen.id, signal="SIGSTOP")
        await sink.wait_addresses([])
        watch = watcher._watches[0]
        resyncs = watch.resyncs
        watch._close_stream()  # the connection to the engine dropped
        await eventually(lambda: watch.resyncs > resyncs, what="the resync after reconnecting")
        draining.reload()
        assert draining.status == "running"  # still in its grace period
        assert sink.addresses() == []
        docker_client.api.kill(frozen.id, signal="SIGCONT")
        await sink.wait_addresses([both[1]])
    finally:
        await watcher.stop()


async def test_a_silently_dead_event_stream_is_mended_by_the_periodic_resync(
    dockerd, container_factory
):
    """A tcp:// engine whose stream's path died (no RST, nothing received): the next full
    resync (`check_interval`) lists what happened since; the stream socket has keepalive."""
    from smartstack.docker_stream import stream_socket

    proxy = BlackholeProxy(str(dockerd.socket_path))
    a = container_factory("fdead-a", labels={"app": "fd"})
    engine = {"name": "e1", "host": "127.0.0.1", "port": proxy.port}
    discovery = {"servers": [engine], "container_port": 80, "label_selector": {"app": "fd"},
                 "check_interval": 1.5}  # fmt: skip
    sink = Collector()
    watcher = DockerWatcher("web", docker_service(**discovery), sink, watcher_context())
    await watcher.start()
    try:
        await sink.wait_addresses([f"127.0.0.1:{published_port(a)}"])
        sock = stream_socket(watcher._watches[0]._stream)
        assert sock is not None and sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE)
        proxy.freeze()
        b = container_factory("fdead-b", labels={"app": "fd"})
        a.stop(timeout=1)
        await sink.wait_addresses([f"127.0.0.1:{published_port(b)}"], timeout=10)
        assert watcher.connected
    finally:
        await watcher.stop()
        proxy.close()
