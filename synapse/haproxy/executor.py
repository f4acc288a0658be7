"""Runs a plan's runtime operations on every admin socket, and counts and logs what failed.

A failed operation needs a reload (the controller turns it into one) unless its kind
is ``tolerated`` (``del server`` while connections remain: the next apply retries it).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from smartstack.logs import event
from synapse.haproxy.metrics import HAProxyMetrics
from synapse.haproxy.ops import Op
from synapse.haproxy.runtime import SKIPPED, RuntimeClient
from synapse.haproxy.sockets import HAProxySocketError, NoAnswer, Unanswered

log = logging.getLogger("synapse.haproxy")

MAX_LOGGED_FAILURES = 20  # failed runtime commands logged one by one per apply


async def run_ops(
    clients: Sequence[RuntimeClient],
    ops: Sequence[Op],
    metrics: HAProxyMetrics,
    done: list[Op] | None = None,
) -> tuple[list[str], list[str]]:
    """Apply ops on every runtime socket, in one batch each; (commands applied,
    failures needing a reload). A server whose op failed gets none of its later ops.
    ``done``: gets the ops that succeeded on every socket."""
    errors: list[str | None] = [None] * len(ops)
    for client in clients:
        todo = [i for i, error in enumerate(errors) if error is None]
        if not todo:
            break
        try:
            results = await client.run_ops([ops[i] for i in todo])
        except HAProxySocketError as err:
            text = Unanswered(err) if isinstance(err, NoAnswer) else str(err)  # (slow_socket)
            results = [text] * len(todo)
        for i, result in zip(todo, results, strict=True):
            errors[i] = result
    applied: list[str] = []
    failures: list[str] = []
    logged = 0
    for op, error in zip(ops, errors, strict=True):
        if error is None:
            applied.append(op.command)
            if done is not None:
                done.append(op)
            metrics.applied(op.label)
            continue
        if error == SKIPPED:
            continue
        metrics.runtime_errors.labels(op.label).inc()
        if not op.tolerated:
            failure = f"runtime command failed: {error}"
            failures.append(Unanswered(failure) if isinstance(error, Unanswered) else failure)
        logged += 1
        if logged <= MAX_LOGGED_FAILURES:
            fallback = "retry later" if op.tolerated else "reload"
            level = logging.INFO if op.tolerated else logging.WARNING
            event(log, "haproxy_runtime_command_failed", level=level, command=op.command,
                  error=error, fallback=fallback)  # fmt: skip
    if logged > MAX_LOGGED_FAILURES:
        more = logged - MAX_LOGGED_FAILURES
        event(log, "haproxy_runtime_command_failed", level=logging.WARNING, more=more,
              detail="further failed commands are not logged one by one")  # fmt: skip
    if applied:  # at debug: the controller's haproxy_applied line counts them per change
        event(log, "haproxy_runtime_ops", level=logging.DEBUG, count=len(applied),
              first=applied[0])  # fmt: skip
    return applied, failures
