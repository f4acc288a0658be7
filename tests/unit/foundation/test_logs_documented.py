"""docs/logs.md lists every event of both daemons: each event name found in the code (an
``event(log, "name", ...)`` call, a name handed to a helper that calls ``event``, or a
``FailureStreak``'s or ``WriteStreak``'s two names) must be documented there."""

from __future__ import annotations

import ast
import functools
import re
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
PACKAGES = ("nerve", "synapse", "smartstack")
NAME = re.compile(r"^[a-z][a-z0-9_]*$")


def _strings(node: ast.AST) -> Iterator[str]:
    """The string constants an expression can evaluate to ("a" if x else "b": both)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        yield node.value
    elif isinstance(node, ast.IfExp):
        yield from _strings(node.body)
        yield from _strings(node.orelse)


def _call_name(call: ast.Call) -> str | None:
    func = call.func
    return func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)


def _arg(call: ast.Call, index: int, keyword: str) -> ast.AST | None:
    if len(call.args) > index:
        return call.args[index]
    return next((k.value for k in call.keywords if k.arg == keyword), None)


Function = ast.FunctionDef | ast.AsyncFunctionDef


def _pattern(node: ast.AST, func: Function, calls: list[ast.Call]) -> list[str]:
    """Names (regexes) an event-name expression inside ``func`` stands for."""
    names = [re.escape(s) for s in _strings(node)]
    if isinstance(node, ast.Name):
        params = [a.arg for a in func.args.args if a.arg != "self"]
        if node.id in params:  # a helper's parameter: what its callers pass
            for call in (c for c in calls if _call_name(c) == func.name):
                given = _arg(call, params.index(node.id), node.id)
                names += [re.escape(s) for s in _strings(given)] if given is not None else []
        for assign in (n for n in ast.walk(func) if isinstance(n, ast.Assign)):
            if any(isinstance(t, ast.Name) and t.id == node.id for t in assign.targets):
                names += [re.escape(s) for s in _strings(assign.value)]  # a local variable
    if isinstance(node, ast.JoinedStr):  # f"{what}_failed": every value it can take
        combos = [""]
        for value in node.values:
            if isinstance(value, ast.Constant):
                options = [re.escape(value.value)]
            else:
                options = _pattern(value.value, func, calls) or ["[a-z_]+"]
            combos = [c + o for c in combos for o in options]
        names += combos
    return names


@functools.cache  # three tests read the same tree
def events_in_code() -> dict[str, str]:
    """Event name pattern -> the file it is logged from."""
    found: dict[str, str] = {}
    trees = {
        path: ast.parse(path.read_text(), str(path))
        for package in PACKAGES
        for path in sorted((ROOT / package).rglob("*.py"))
        if not (path.name == "logs.py" and package == "smartstack")  # (the helpers themselves)
    }
    # A helper's callers in any module (a subclass in another module calls its base's helper).
    everywhere = [n for tree in trees.values() for n in ast.walk(tree) if isinstance(n, ast.Call)]
    for path, tree in trees.items():
        calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call)]
        funcs = (n for n in ast.walk(tree) if isinstance(n, Function))
        for func in funcs:
            for call in (n for n in ast.walk(func) if isinstance(n, ast.Call)):
                if _call_name(call) == "event" and len(call.args) >= 2:
                    for name in _pattern(call.args[1], func, everywhere):
                        found.setdefault(name, str(path.relative_to(ROOT)))
        for call in calls:
            if _call_name(call) in ("FailureStreak", "WriteStreak"):  # (its subclass)
                for node in (_arg(call, 1, "failed"), _arg(call, 2, "recovered")):
                    for name in _strings(node) if node is not None else ():
                        found.setdefault(re.escape(name), str(path.relative_to(ROOT)))
    return found


def documented_events() -> set[str]:
    """Event names of docs/logs.md: the first column of its tables headed ``| event |``."""
    names: set[str] = set()
    in_events = False
    for line in (ROOT / "docs" / "logs.md").read_text().splitlines():
        if not line.startswith("|"):
            in_events = False
        elif line.startswith("| event |"):
            in_events = True
        elif in_events and (found := re.match(r"^\| `([a-z][a-z0-9_]*)` \|", line)):
            names.add(found.group(1))
    return names


def test_the_code_has_events_and_no_name_is_a_wildcard() -> None:
    found = events_in_code()
    assert len(found) > 80, sorted(found)
    assert "registry_write_recovered" in found and "docker_disconnected" in found
    assert "withdraw_failed" in found and "maintenance_flag_not_removed" in found
    assert not [p for p in found if "[a-z_]+" in p], "an event name the test cannot resolve"


def test_every_event_in_the_code_is_in_docs_logs_md() -> None:
    documented = documented_events()
    missing = {
        pattern: where
        for pattern, where in events_in_code().items()
        if not any(re.fullmatch(pattern, name) for name in documented)
    }
    assert not missing, f"events missing from docs/logs.md: {missing}"


def test_docs_logs_md_lists_no_event_the_code_does_not_log() -> None:
    patterns = list(events_in_code())
    stale = [n for n in documented_events() if not any(re.fullmatch(p, n) for p in patterns)]
    assert not stale, f"docs/logs.md lists events no code logs: {sorted(stale)}"
