"""Operations: what the planner tells the controller to do (no I/O here).

Runtime API commands (``Op`` and its kinds, each with its command line and how to tell
HAProxy's answer means success), or a ``Reload`` with its reasons; a ``Plan`` holds both.
``synapse.haproxy.runtime`` sends the commands; ``synapse.haproxy.planner`` makes plans.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar


@dataclass(frozen=True)
class Op:
    backend: str
    server: str

    kind: ClassVar[str] = "op"
    # The runtime API command, ``op`` this operation: ``str.format``'s fields.
    template: ClassVar[str] = ""
    # What HAProxy answers when the command worked ("" = an empty answer).
    success_prefixes: ClassVar[tuple[str, ...]] = ("",)
    # A failure that needs no reload (the next apply retries it).
    tolerated: ClassVar[bool] = False

    @property
    def label(self) -> str:
        """The metric label of this operation."""
        return self.kind

    @property
    def target(self) -> str:
        return f"{self.backend}/{self.server}"

    @property
    def command(self) -> str:
        if not self.template:  # (an empty line: HAProxy answers its whole help text)
            raise NotImplementedError(f"{type(self).__name__} has no command template")
        # (rstrip: an empty last field, `add server` without options, leaves no space)
        return self.template.format(op=self).rstrip()

    def succeeded(self, answer: str) -> bool:
        text = answer.strip()
        if self.success_prefixes == ("",):
            return text == ""
        return any(text.startswith(prefix) for prefix in self.success_prefixes)

    def __str__(self) -> str:
        return self.command


@dataclass(frozen=True)
class SetState(Op):
    state: str = "ready"  # ready | drain | maint
    template: ClassVar[str] = "set server {op.target} state {op.state}"

    @property
    def label(self) -> str:
        return f"set_{self.state}"


@dataclass(frozen=True)
class SetWeight(Op):
    weight: int = 1
    kind: ClassVar[str] = "set_weight"
    template: ClassVar[str] = "set weight {op.target} {op.weight}"


@dataclass(frozen=True)
class SetAddr(Op):
    addr: str = ""
    port: int = 0
    kind: ClassVar[str] = "set_addr"
    template: ClassVar[str] = "set server {op.target} addr {op.addr} port {op.port}"
    success_prefixes: ClassVar[tuple[str, ...]] = (
        "IP changed",
        "no need to change",
        "nothing changed",
        "port changed",
    )


@dataclass(frozen=True)
class AddServer(Op):
    address: str = ""
    options: str = ""
    kind: ClassVar[str] = "add_server"
    template: ClassVar[str] = "add server {op.target} {op.address} {op.options}"
    success_prefixes: ClassVar[tuple[str, ...]] = ("New server registered",)


@dataclass(frozen=True)
class EnableHealth(Op):
    kind: ClassVar[str] = "enable_health"
    template: ClassVar[str] = "enable health {op.target}"


@dataclass(frozen=True)
class DelServer(Op):
    kind: ClassVar[str] = "del_server"
    template: ClassVar[str] = "del server {op.target}"
    success_prefixes: ClassVar[tuple[str, ...]] = ("Server deleted",)
    tolerated: ClassVar[bool] = True  # refused while connections remain: retried on the next apply


@dataclass(frozen=True)
class DelLeftover(DelServer):
    """`del server` of a server that left long ago, beyond the leftovers' cap of its
    backend (``synapse.haproxy.leftovers``): counted apart from ``remove_servers: delete``'s."""

    kind: ClassVar[str] = "del_leftover"


@dataclass(frozen=True)
class Reload:
    """Why a reload is needed: (kind, detail) pairs; ``kind`` labels the metric."""

    reasons: tuple[tuple[str, str], ...]

    @property
    def kind(self) -> str:
        return self.reasons[0][0]

    @property
    def summary(self) -> str:
        details = [detail for _, detail in self.reasons]
        text = "; ".join(details[:5])
        return text + (f" (+{len(details) - 5} more)" if len(details) > 5 else "")


@dataclass(frozen=True)
class Plan:
    ops: tuple[Op, ...] = ()
    reload: Reload | None = None
    # backends the server-by-server comparison found something to do for (ops or reasons)
    active: frozenset[str] = frozenset()

    @property
    def empty(self) -> bool:
        return not self.ops and self.reload is None
