"""Which `kill` events of a container mean "it is being stopped" (smartstack.docker_events).

dockerd sends a `kill` event for every signal: `docker stop` (the container's stop signal),
`docker kill -s X`, and also the signals that only ask a process to do something (gunicorn's
TTIN/TTOU, a reload's HUP, CONT...). Only the signals that end a process, plus the one the
container itself names as its stop signal (Apache: WINCH for a graceful stop), withdraw it.
QUIT is not among them: a JVM answers it with a thread dump and runs on (as does a PID 1 with
no handler); it withdraws only the containers whose stop signal it is (nginx's image). A
container still running well past the time a real stop would have killed it (``stop_deadline``)
evidently survived the signal: smartstack.docker_events serves it again.
"""

from __future__ import annotations

from typing import Any

_RTMIN, _RTMAX = 34, 64  # as moby's signal map (glibc keeps 32 and 33 for itself)
# Linux numbers (containers run on Linux whatever host reads the events): the event carries a
# number, a container's Config.StopSignal a name or a number.
_LINUX_SIGNALS = {
    "HUP": 1, "INT": 2, "QUIT": 3, "ILL": 4, "TRAP": 5, "ABRT": 6, "IOT": 6, "BUS": 7, "FPE": 8,
    "KILL": 9, "USR1": 10, "SEGV": 11, "USR2": 12, "PIPE": 13, "ALRM": 14, "TERM": 15,
    "STKFLT": 16, "CHLD": 17, "CLD": 17, "CONT": 18, "STOP": 19, "TSTP": 20, "TTIN": 21,
    "TTOU": 22, "URG": 23, "XCPU": 24, "XFSZ": 25, "VTALRM": 26, "PROF": 27, "WINCH": 28,
    "IO": 29, "POLL": 29, "PWR": 30, "SYS": 31, "RTMIN": _RTMIN, "RTMAX": _RTMAX,
}  # fmt: skip
# Signals that end a process unless it handles them (TERM: Docker's default stop signal).
ENDING_SIGNALS = frozenset({2, 9, 15})
# STOP, TSTP: the process is frozen (its port still accepts connections, nothing answers)
# until CONT, which brings it back.
FREEZING_SIGNALS = frozenset({19, 20})
RESUMING_SIGNAL = 18
STOP_TIMEOUT_S = 10  # Docker's default grace period before `docker stop` sends KILL
STOP_MARGIN_S = 10.0  # beyond it: the KILL takes a moment, clocks of a tcp:// engine differ
# A stop's own `-t N` (docker stop -t, compose down -t, systemd ExecStop) is not in the
# events: a container draining past its StopTimeout is not served again before this much
# (review: `docker stop -t 45` re-served a draining container for 18.5 s). A process that
# really survived the signal waits this long to come back: capacity, not failed requests.
STOP_GRACE_MIN_S = 300.0


def parse_signal(raw: str | int | None) -> int | None:
    """'SIGWINCH', 'winch', '28', 'RTMIN+3' -> a Linux signal number; None when unknown."""
    text = str(raw if raw is not None else "").strip().upper()
    if text.isdigit():
        number = int(text)
        return number if 0 < number <= _RTMAX else None
    text = text.removeprefix("SIG")
    if text in _LINUX_SIGNALS:
        return _LINUX_SIGNALS[text]
    for prefix, base, step in (("RTMIN+", _RTMIN, 1), ("RTMAX-", _RTMAX, -1)):
        offset = text.removeprefix(prefix)
        if offset != text and offset.isdigit():
            number = base + step * int(offset)
            return number if _RTMIN <= number <= _RTMAX else None
    return None


def is_stopping_kill(message: dict[str, Any], stop_signal: int | None) -> bool:
    """Whether a container event is a `kill` whose signal stops the container.

    `stop_signal`: the container's own (its Config.StopSignal, parsed), None when it has none
    or it is unknown. A kill event that does not say which signal (dockerd always does) counts
    as stopping: taking a container out early is safer than sending it traffic as it stops."""
    if str(message.get("Action") or message.get("status") or "") != "kill":
        return False
    sent = kill_signal(message)
    return sent is None or sent in ENDING_SIGNALS | FREEZING_SIGNALS or sent == stop_signal


def kill_signal(message: dict[str, Any]) -> int | None:
    """The signal a `kill` event names (None: another event, or one it does not name)."""
    if str(message.get("Action") or message.get("status") or "") != "kill":
        return None
    return parse_signal(((message.get("Actor") or {}).get("Attributes") or {}).get("signal"))


def stop_deadline(sent_at: float, stop_timeout: int | None) -> float:
    """When a stop signalled at ``sent_at`` (epoch seconds) would have killed the container
    (its Config.StopTimeout, None: Docker's default), plus a margin, and at least
    STOP_GRACE_MIN_S; a container still running then survived the signal. Infinite for a
    StopTimeout of -1 (no limit)."""
    if stop_timeout is not None and stop_timeout < 0:
        return float("inf")
    timeout = STOP_TIMEOUT_S if stop_timeout is None else stop_timeout
    return sent_at + max(timeout + STOP_MARGIN_S, STOP_GRACE_MIN_S)
