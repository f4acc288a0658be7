"""A fake admin socket answering `show servers state` and friends from one dump's text
(pure tests of synapse.haproxy.statedump / stateblocks)."""

from __future__ import annotations


def backends_of(dump: str) -> list[str]:
    """The backends with rows in ``dump``, in its order."""
    names: dict[str, None] = {}
    for line in dump.splitlines()[2:]:
        if line and not line.startswith("#"):
            names[line.split()[1]] = None
    return list(names)


def answer_from(dump: str, command: str, extra: tuple[str, ...] = ()) -> str:
    """What HAProxy would answer to ``command`` when `show servers state` answers ``dump``;
    ``extra``: backends without servers, listed by `show backend` after the others."""
    if command == "show info":
        return "Name: HAProxy\nPid: 1\n"
    if command == "show backend":
        names = backends_of(dump)
        return "# name\n" + "".join(
            f"{n}\n" for n in [*names, *(e for e in extra if e not in names)]
        )
    if command == "show servers state" or not dump.startswith("1\n"):
        return dump
    backend = command.removeprefix("show servers state ")
    if backend not in backends_of(dump) and backend not in extra:
        return "Can't find backend.\n"
    lines = dump.splitlines()
    rows = [line for line in lines[2:] if line and line.split()[1] == backend]
    return "".join(f"{line}\n" for line in [*lines[:2], *rows])


class KeptConnection:
    """What the state dumper asks of a runtime client besides ``ask``: a round's batch on
    the connection kept between rounds (``ask_kept``), and ``release`` at its stop."""

    released = False

    async def ask(self, commands: list[str]) -> list[str]:
        raise NotImplementedError

    async def ask_kept(self, commands: list[str]) -> list[str]:
        return await self.ask(commands)

    async def release(self) -> None:
        self.released = True
