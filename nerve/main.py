"""Running the nerve daemon as a process: until SIGTERM/SIGINT (or SIGUSR2, the restart
stop), re-reading its config on SIGHUP (``nerve -c FILE``; the daemon itself is
``nerve.daemon.NerveDaemon``)."""

from __future__ import annotations

import asyncio
import logging
import signal
from argparse import Namespace
from pathlib import Path
from typing import TYPE_CHECKING

from nerve.daemon import NerveDaemon
from nerve.reload_fold import ReloadFold
from nerve.restart_stop import restart_despite
from smartstack import identity_lock, sd_notify
from smartstack.early_signals import take_over, take_over_sighup
from smartstack.logs import event
from smartstack.stop_signals import hold_while_stopping, ignore_after_loop

if TYPE_CHECKING:
    from nerve.config import NerveConfig
    from nerve.config_load import ConfigSource

log = logging.getLogger("nerve")

RESTART = (signal.SIGUSR2,)  # the restart stop: healthy registrations left (nerve/restart_stop.py)


async def serve(
    config: NerveConfig,
    config_path: Path,
    instance_id: str | None,
    strict: bool = False,
    source: ConfigSource | None = None,
) -> int:
    loop = asyncio.get_running_loop()
    identity_lock.answer_on(loop)  # a copy waiting for our registrations is told who we are
    daemon = NerveDaemon(config, config_path, instance_id)
    daemon.strict = strict  # --strict holds for SIGHUP reloads too
    daemon.source = source
    if source is not None:  # 1 while the last good copy runs (nerve/last_good.py)
        last_good = source.last_good
        daemon.metrics.config_last_good.set_function(lambda: float(last_good.info is not None))
    stop = asyncio.Event()
    restart = [False]  # the first stop signal decides: SIGUSR2 is a restart stop
    fold = ReloadFold(daemon.reload_from_file)  # SIGHUPs: one reload running, one to come
    daemon.reload_retry.reload = fold.retry  # (its validating child could not start)
    applying = [0]  # the changes of a reload plan being applied when the stop began

    def on_stop(signum: int) -> None:
        first = not stop.is_set()
        if first:
            restart[0] = signum == signal.SIGUSR2
            fold.close()  # (no reload starts or applies a plan from now on)
            daemon.reload_retry.begin()  # (nor a retry of one)
            applying[0] = daemon.close_reloads(restart=restart[0])
        action = "restart_stop" if signum == signal.SIGUSR2 else "shutdown"
        event(log, "signal", signal=signal.Signals(signum).name, action=action,
              **({} if first else {"detail": "a stop has begun already"}))  # fmt: skip
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_stop, signum)
    # (and one that came while it started: a restart stop once started, a reload)
    take_over(loop, signal.SIGUSR2, lambda: on_stop(signal.SIGUSR2))
    take_over_sighup(loop, fold.sighup)
    await daemon.start()
    sd_notify.ready()  # systemd (Type=notify): started, and a SIGHUP is a reload now
    await stop.wait()
    hold_while_stopping(loop, log, RESTART)  # (a SIGHUP now is no reload, a SIGTERM no kill)
    restarting = restart[0] and restart_despite(applying[0])
    reload = fold.close()
    if reload is not None:  # (waiting, reading, or applying: cancelled, its cleanup first)
        if not daemon.finishing_held:  # (held for its file, restart stop: applied first)
            reload.cancel()
        await asyncio.gather(reload, return_exceptions=True)
    await daemon.stop(restart=restarting)
    return 0


def run(config: NerveConfig, args: Namespace, source: ConfigSource | None = None) -> int:
    """Entry point from ``nerve -c FILE``: run until SIGTERM/SIGINT, then exit 0."""
    try:
        return asyncio.run(
            serve(
                config,
                Path(args.config),
                getattr(args, "instance_id", None),
                getattr(args, "strict", False),
                source,
            )
        )
    finally:
        ignore_after_loop(RESTART)
