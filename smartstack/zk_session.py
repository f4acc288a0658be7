"""A ZooKeeper connection's session timeout: the one asked for and the one the server grants.

The server clamps what a client asks to [minSessionTimeout, maxSessionTimeout] (by
default 2 and 20 x tickTime: 4 s to 40 s) and says so in its handshake answer. kazoo
bases its timeouts and pings on that answer but keeps only the asked value: asked 30 s
of a server allowing 4 s, nerve's restart stop said `expire_within_s=30.0` and the node
it left was gone 3.8 s later. What lasts is the granted value.
"""

from __future__ import annotations

import logging

from smartstack.logs import event

log = logging.getLogger("smartstack.zookeeper")

# Under this, a far link flaps (a 1 s session at ~250 ms RTT: 97 reconnects in 120 s);
# a production ZooKeeper's floor is 2 x tickTime = 4 s by default anyway.
SHORT_SESSION_S = 4.0


class SessionTimeout:
    """The asked and the granted session timeout of one connection (seconds); warns when
    the asked one is short (at once) and when the server grants less or a short one (at the
    first handshake, and again when the granted value changes)."""

    def __init__(self, asked_s: float, hosts: str) -> None:
        self.asked_s = asked_s
        self.hosts = hosts
        self.granted_s: float | None = None  # no handshake yet
        if asked_s < SHORT_SESSION_S:  # once per connection: at start, per ensemble
            hint = f"under {SHORT_SESSION_S:g} s a far or loaded link drops the session"
            event(log, "zk_session_timeout_short", level=logging.WARNING,
                  zk_session_timeout=asked_s, hosts=hosts, hint=hint)  # fmt: skip

    @property
    def seconds(self) -> float:
        """How long the session outlives its last contact: the granted timeout (the asked
        one before any handshake)."""
        return self.asked_s if self.granted_s is None else self.granted_s

    def granted(self, granted_ms: float | None) -> None:
        """A handshake's answer (kazoo thread or loop; None: not known)."""
        if granted_ms is None or granted_ms <= 0:
            return
        granted_s = granted_ms / 1000.0
        changed, self.granted_s = granted_s != self.granted_s, granted_s
        # (granted as asked says nothing new: an asked one under 4 s was warned about at start)
        short = granted_s < self.asked_s or granted_s < SHORT_SESSION_S
        if changed and short and granted_s != self.asked_s:
            event(log, "zk_session_negotiated", level=logging.WARNING,
                  asked_s=round(self.asked_s, 3), granted_s=round(granted_s, 3), hosts=self.hosts,
                  detail="the server's minSessionTimeout / maxSessionTimeout bound the session: "
                  "nodes outlive a dead nerve by granted_s, and pings follow it")  # fmt: skip
