"""The import graph of nerve, synapse and smartstack (scripts/import_graph.py, read with ast):
no cycles, and the HAProxy side's layers stay apart (issue 9)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from scripts.import_graph import build_graph, cycles, module_files, reachable
from smartstack import configfile


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return build_graph()


def test_the_graph_holds_every_module_and_its_imports(graph: dict[str, set[str]]) -> None:
    assert {"nerve.daemon", "synapse.haproxy.planner", "smartstack.record"} <= graph.keys()
    assert {"synapse.haproxy.ops", "synapse.haproxy.desired"} <= graph["synapse.haproxy.planner"]
    assert "jinja2" in graph["synapse.haproxy.jinja_layout"]  # others' by top-level name


def test_no_import_cycles(graph: dict[str, set[str]]) -> None:
    assert cycles(graph) == []


def test_the_planner_needs_no_renderer_and_the_runtime_client_no_planner(
    graph: dict[str, set[str]],
) -> None:
    planner = reachable(graph, "synapse.haproxy.planner")
    assert "synapse.haproxy.render" not in planner
    assert "jinja2" not in planner
    assert "synapse.haproxy.planner" not in reachable(graph, "synapse.haproxy.runtime")


def test_cycles_are_found_and_annotation_only_imports_are_not_edges(tmp_path: Path) -> None:
    package = tmp_path / "synapse"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from synapse import b\n")
    (package / "b.py").write_text("def f():\n    from synapse.c import x\n")
    (package / "c.py").write_text("from . import a\n")
    (package / "d.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from synapse.a import A\n"
    )
    found = build_graph(module_files(tmp_path, ["synapse"]))
    assert cycles(found) == [["synapse.a", "synapse.b", "synapse.c"]]  # a lazy import counts
    assert found["synapse.d"] == {"typing"}


def test_only_an_operator_template_loads_jinja2(graph: dict[str, set[str]]) -> None:
    """jinja2 costs ~2 MB of RSS per synapse: the default layout is written without it, and
    the renderer imports the template's module only when ``haproxy.template`` is set (the
    runtime check, in a fresh process: tests/integration/synapse_haproxy/test_no_jinja.py)."""
    assert {module for module, edges in graph.items() if "jinja2" in edges} == {
        "synapse.haproxy.jinja_layout"
    }
    render = ast.parse(Path(module_files()["synapse.haproxy.render"]).read_text())
    top = {node.module for node in render.body if isinstance(node, ast.ImportFrom)}
    top |= {alias.name for node in render.body if isinstance(node, ast.ImportFrom)
            for alias in node.names}  # fmt: skip
    assert "jinja_layout" not in top and "synapse.haproxy.jinja_layout" not in top


def test_synapse_runs_without_aiohttp(graph: dict[str, set[str]]) -> None:
    """aiohttp costs ~11.6 MB of RSS per synapse: its admin server is smartstack.httpserver."""
    assert "aiohttp" not in reachable(graph, "synapse.cli")
    assert "aiohttp" not in reachable(graph, "smartstack.admin")


def test_yaml_is_imported_only_to_parse_yaml() -> None:
    """A daemon whose files are JSON never loads PyYAML (~1 MB of RSS): not at module level;
    nor pydantic (a daemon on plain models, smartstack.modelbase, never loads it)."""
    tree = ast.parse(Path(configfile.__file__).read_text())
    top = {alias.name for node in tree.body if isinstance(node, ast.Import) for alias in node.names}
    top |= {node.module or "" for node in tree.body if isinstance(node, ast.ImportFrom)}
    assert "smartstack.config_errors" in top and "yaml" not in top and "pydantic" not in top
