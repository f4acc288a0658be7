"""How a reload's plan is carried out, service by service: NerveDaemon's reload steps."""

from __future__ import annotations

from nerve.config import NerveConfig, ServiceConfig
from nerve.handover import Retirement, after_retirement, hand_over, pass_on, settled
from nerve.metrics import NerveMetrics
from nerve.registries import registration_for
from nerve.reload_plan import Placement, Step, placement
from nerve.reporters.base import Reporter
from nerve.service import Service

# Registrations being withdrawn by a reload: a new service at the same place starts after.
Retiring = dict[Placement, Retirement]


class ReloadSteps:
    """A mixin of NerveDaemon (nerve/daemon.py): the steps of ``reload``'s plan
    (nerve/reload_plan.py), each on the daemon's services, registries and tasks (its
    ``registries``, ``_build`` and ``_spawn``, and the attributes below)."""

    config: NerveConfig
    services: dict[str, Service]
    service_configs: dict[str, ServiceConfig]
    metrics: NerveMetrics
    _identities: dict[str, tuple[str, tuple[str, ...]]]
    _retiring: set[Reporter]
    _stopping: bool

    async def _apply(self, step: Step, retiring: Retiring) -> None:
        if step.change == "unchanged":
            return
        if step.previous is None:
            self._start_new(step.name, step.cfg, retiring)
            return
        old = self.services[step.previous]
        await self._replace(step, old, retiring)
        # A hand-over waiting for old's first write waits for its replacement's instead.
        pass_on(old, self.services.get(step.name))

    async def _replace(self, step: Step, old: Service, retiring: Retiring) -> None:
        name, cfg = step.name, step.cfg
        if step.change in ("checks", "renamed"):
            # The same registration: keep the reporter, swap the checks (and the name). The
            # new checks start from the old verdict and need `fall` failures to withdraw.
            await old.halt()
            if step.change == "renamed":
                self._take(step.previous)
                self.metrics.forget_service(step.previous)
                old.reporter.rename(name)
            self._continue(name, old, cfg, old.state.healthy, retiring)
            return
        # A new record or registry. Unless the checks moved with the address
        # (nerve/reload_plan.py), the old verdict holds and the new registration is written
        # before the old one goes (nerve/handover.py). A moved address has to prove itself
        # with `rise` passes like any new server: the old one stays while its checks pass,
        # until then. A registration whose state is unknown is withdrawn first.
        if step.moved and old.state.healthy and await settled(old) and old.state.healthy:
            service = self._build(name, cfg)
            if service is not None:
                self._retiring.add(old.reporter)
                self._spawn(self._hand_over(old, service, moved=True), f"replace-{name}")
                return
        carried = step.keeps_verdict and old.state.healthy
        if carried and await settled(old) and old.state.healthy:
            if step.change == "record":  # the same reporter writes the new record
                await old.halt()
                old.reporter.change_record(registration_for(self.config.instance_id, cfg))
                self._continue(name, old, cfg, True, retiring)
                return
            service = self._build(name, cfg, initially_up=True)
            if service is not None:
                self._retiring.add(old.reporter)
                self._spawn(self._hand_over(old, service), f"replace-{name}")
                return
        self._take(name)
        retired = self._retire(old)
        service = self._build(name, cfg, initially_up=carried)
        if service is not None:
            self._spawn(self._start_after(retired, service), f"replace-{name}")

    def _start_new(self, name: str, cfg: ServiceConfig, retiring: Retiring) -> None:
        service = self._build(name, cfg)
        if service is not None:
            previous = retiring.get(placement(self.config.instance_id, cfg))
            if previous is None:
                service.start()
            else:
                self._spawn(self._start_after(previous, service), f"replace-{name}")

    def _continue(
        self,
        name: str,
        old: Service,
        cfg: ServiceConfig,
        initially_up: bool,
        retiring: Retiring,
    ) -> None:
        """A halted service's registration goes on under new checks (and name); if they
        cannot be built, nothing vouches for it: it is withdrawn."""
        service = self._build(name, cfg, old.reporter, initially_up=initially_up)
        if service is not None:
            service.start()
            self.metrics.forget_stale(name, service)  # (old is halted: no write after this)
            return
        self._take(name)
        retiring[placement(self.config.instance_id, cfg)] = self._retire(old)

    def _take(self, name: str) -> None:
        """The name runs nothing any more (its service retires or goes on under another)."""
        self.services.pop(name, None)
        self.service_configs.pop(name, None)
        self._identities.pop(name, None)

    def _retire(self, service: Service) -> Retirement:
        reporter = service.reporter
        self._retiring.add(reporter)

        async def retire() -> None:
            await service.halt()
            # (retries through outages; a successor set meanwhile is left its own)
            await reporter.retire(successor=reporter.successor)
            self._retiring.discard(reporter)
            await self.registries.release(reporter)
            self.metrics.forget_stale(service.name, self.services.get(service.name))

        return Retirement(reporter, self._spawn(retire(), f"retire-{service.name}"))

    async def _hand_over(self, old: Service, new: Service, moved: bool = False) -> None:
        await hand_over(old, new, self.registries, start_new=not self._stopping, moved=moved)
        self._retiring.discard(old.reporter)
        self.metrics.forget_stale(new.name, self.services.get(new.name))

    async def _start_after(self, retired: Retirement, service: Service) -> None:
        await after_retirement(retired, service)  # (bounded: a withdrawal may never answer)
        if self.services.get(service.name) is service and not self._stopping:
            service.start()
