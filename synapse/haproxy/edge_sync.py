"""The edge's files beside the HAProxy config, and their runtime side (issue 13).

Two kinds of files are read by HAProxy along with the config: the route maps
(``synapse.haproxy.route_sync``) and the TLS crt-list with its placeholder certificate and
synapse's copies of the certificates (``synapse.haproxy.certstore``). ``EdgeSync`` is the
one place that keeps them:

- ``before_read``: the installer calls it before ``haproxy -c``, a start or a reload
  (a missing map file or crt-list fails the check); ``refused``: the candidate was not
  installed, the map files say again what HAProxy holds;
- ``started``: HAProxy (re)started: its maps are read again, and the certificate watcher
  (``synapse.haproxy.certwatch``) restarts from the certificates that process loaded (the
  store, and so the last good certificate of each name, stays);
- ``sync``: once per apply, the route changes at runtime (no reload), and the certificate
  watcher started when synapse adopted an HAProxy that was already running;
- ``stop``: the watcher stops with the controller.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

from synapse.config import HAProxyConfig
from synapse.haproxy import tls
from synapse.haproxy.certstore import CertStore
from synapse.haproxy.certwatch import CertWatcher, payload_sender
from synapse.haproxy.metrics import HAProxyMetrics
from synapse.haproxy.route_sync import RouteSync
from synapse.haproxy.running import RunningState
from synapse.haproxy.runtime import RuntimeClient
from synapse.haproxy.settings import Settings
from synapse.haproxy.zone_map import ZoneMapSync
from synapse.model import DesiredService

CERT_POLL_INTERVAL = 1.0  # seconds between scans of haproxy.tls.cert_dir


class EdgeSync:
    def __init__(
        self,
        config: HAProxyConfig,
        settings: Settings,
        runtime: Sequence[RuntimeClient],
        metrics: HAProxyMetrics,
    ) -> None:
        self.runtime = runtime
        self.routes = RouteSync(runtime, metrics)
        self.zones = ZoneMapSync(runtime, metrics)  # zone_routing.sticky's server zones
        self.cert_interval = CERT_POLL_INTERVAL
        self._watcher: CertWatcher | None = None
        self.certs: CertStore | None = None
        # What the last before_read listed: what a process started or reloaded after it
        # loads. The watcher may send and write copies meanwhile (a PEM deferred at the
        # reload, sent to the old process while the new one reads the files): the new
        # watcher must start from what that process read, not from the copies now.
        self._listed: dict[Path, tls.Cert] | None = None
        self.configure(config, settings)

    def configure(self, config: HAProxyConfig, settings: Settings) -> None:
        self.config = config
        self.routes.configure(settings.config_path)
        self.zones.configure(settings.config_path)
        path = settings.config_path
        self.tls_paths = tls.tls_paths(path) if path is not None and config.tls else None
        if self.tls_paths is None or config.tls is None:
            self.certs = None
        elif self.certs is not None and self.certs.paths == self.tls_paths:
            self.certs.config = config.tls  # (what it remembers stays)
        else:
            self.certs = CertStore(config.tls, self.tls_paths)

    # --- files: before HAProxy reads them ---------------------------------------------

    async def before_read(self) -> None:
        """Map files with every wanted route; the crt-list and the certificates' copies."""
        self.routes.write_wanted()
        self.zones.write_wanted()
        certs = self.certs
        if certs is not None:
            await certs.refresh_for_reload()
            self._listed = dict(certs.kept)

    def refused(self) -> None:
        self._listed = None
        self.routes.restore()
        self.zones.restore()

    async def started(self) -> None:
        """HAProxy started or reloaded from the files ``before_read`` wrote."""
        self.routes.invalidate()
        self.zones.invalidate()
        await self._stop_watcher()
        certs = self.certs
        listed, self._listed = self._listed, None
        if certs is not None:  # (the copies HAProxy just read: kept reads them once)
            if listed is None:
                listed = dict(await asyncio.to_thread(lambda: certs.kept))
            self._start_watcher(listed)

    # --- runtime -----------------------------------------------------------------------

    async def sync(
        self, desired: list[DesiredService], running: RunningState
    ) -> tuple[list[str], list[str]]:
        """Route changes at runtime, for the backends HAProxy runs (a new service's
        routes come with the reload that creates its backend). (commands applied,
        failures that need a reload)."""
        self.routes.want(desired)
        self.zones.want(desired)
        zoned, zone_failures = await self.zones.sync()
        if not self.runtime:
            return await self.routes.sync(())  # the files only: a reload reads them
        if self._watcher is not None and self.tls_paths is None:
            await self._stop_watcher()  # haproxy.tls removed on SIGHUP
        if running.backends is None:
            return zoned, zone_failures  # HAProxy does not answer (yet)
        if self._watcher is None and self._tls_running(running):
            self._start_watcher(self._adopted_certificates())
        applied, failures = await self.routes.sync(running.backends.keys())
        return zoned + applied, zone_failures + failures

    def _tls_running(self, running: RunningState) -> bool:
        """Whether the running config (the file synapse keeps equal to it) binds our
        crt-list: then the watcher has an HAProxy to talk to."""
        if self.tls_paths is None or running.config is None:
            return False
        needle = f"crt-list {self.tls_paths.crt_list}"
        return any(needle in line for lines in running.config.sections.values() for line in lines)

    def _adopted_certificates(self) -> dict[Path, tls.Cert]:
        """An HAProxy synapse did not start: the crt-list names what it loaded. Their text
        is unknown (empty), so the watcher sends each again once: idempotent."""
        assert self.certs is not None
        return {path: tls.Cert("") for path in self.certs.listed_names()}

    def _start_watcher(self, served: dict[Path, tls.Cert]) -> None:
        if self.certs is None or not self.runtime:
            return
        send = payload_sender(self.runtime[0].path)
        self._watcher = CertWatcher(self.certs, send, served, interval=self.cert_interval)
        self._watcher.start()

    async def _stop_watcher(self) -> None:
        watcher, self._watcher = self._watcher, None
        if watcher is not None:
            await watcher.stop()

    async def stop(self) -> None:
        await self._stop_watcher()
