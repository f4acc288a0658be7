"""The import graph of the shipped packages (nerve, synapse, smartstack), read with ast.

    python scripts/import_graph.py            cycles among their modules (exit 1 if any)
    python scripts/import_graph.py MODULE     what MODULE imports, directly and in all

An edge is every import that runs: at module level or inside a function (a lazy import
still ties the two modules together), but not one under ``if TYPE_CHECKING:``, which
exists for annotations only. ``from pkg import name`` is an edge to ``pkg.name`` when that
is a module, else to ``pkg``. Modules outside the packages appear by their top-level name
(``jinja2``), so "does the planner reach jinja2?" is a question the graph answers.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

PACKAGES = ("nerve", "synapse", "smartstack")
ROOT = Path(__file__).resolve().parent.parent

Graph = dict[str, set[str]]


def module_files(root: Path = ROOT, packages: Iterable[str] = PACKAGES) -> dict[str, Path]:
    """Module name -> file, for every .py file of the packages (``__init__`` is the package)."""
    out = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import node, except those in the body of ``if TYPE_CHECKING:``."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                yield from _imports(ast.Module(body=[child], type_ignores=[]))
            continue
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        yield from _imports(node)


def _targets(node: ast.Import | ast.ImportFrom, module: str, is_package: bool) -> Iterator[str]:
    if isinstance(node, ast.Import):
        for alias in node.names:
            yield alias.name
        return
    base = node.module or ""
    if node.level:  # relative: from the module's package, one level up per extra dot
        package = module.split(".") if is_package else module.split(".")[:-1]
        package = package[: len(package) - (node.level - 1)]
        base = ".".join([*package, base] if base else package)
    for alias in node.names:
        yield f"{base}.{alias.name}"
        yield base


def build_graph(files: dict[str, Path] | None = None) -> Graph:
    """Module -> the modules it imports (ours by full name, others by top-level name)."""
    files = module_files() if files is None else files
    graph: Graph = {}
    for module, path in files.items():
        tree = ast.parse(path.read_text(), str(path))
        edges: set[str] = set()
        for node in _imports(tree):
            names = list(_targets(node, module, path.name == "__init__.py"))
            if isinstance(node, ast.ImportFrom):
                # pairs (base.name, base): the submodule when it is one, else the base
                for sub, base in zip(names[::2], names[1::2], strict=True):
                    edges.add(sub if sub in files else base)
            else:
                edges.update(names)
        graph[module] = {_own(name, files) for name in edges} - {module}
    return graph


def _own(name: str, files: dict[str, Path]) -> str:
    """One of our modules by full name; anything else by its top-level name."""
    if name in files:
        return name
    top = name.split(".")[0]
    if top in PACKAGES:  # e.g. ``from synapse.x import y`` with x a module: handled above
        while name and name not in files:
            name = name.rpartition(".")[0]
        return name or top
    return top


def cycles(graph: Graph) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph.get(start, ()))))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next((c for c in children if c in graph), None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return sorted(found)


def reachable(graph: Graph, module: str) -> set[str]:
    """Everything ``module`` imports, directly or through other modules."""
    seen: set[str] = set()
    todo = list(graph.get(module, ()))
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(graph.get(name, ()))
    return seen


def main(argv: list[str]) -> int:
    graph = build_graph()
    if argv:
        module = argv[0]
        if module not in graph:
            print(f"error: {module} is not a module of {', '.join(PACKAGES)}", file=sys.stderr)
            return 2
        print(f"{module} imports: {', '.join(sorted(graph[module]))}")
        print(f"and through them: {', '.join(sorted(reachable(graph, module) - graph[module]))}")
        return 0
    found = cycles(graph)
    edges = sum(len(v) for v in graph.values())
    print(f"{len(graph)} modules, {edges} imports, {len(found)} cycles")
    for component in found:
        print("cycle: " + " <-> ".join(component))
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
