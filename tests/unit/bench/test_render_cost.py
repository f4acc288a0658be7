"""`python -m bench.render_cost` (the render micro-benchmark) runs, both layouts, small."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import render_cost

TEMPLATE = Path(__file__).resolve().parents[3] / "templates" / "haproxy.cfg.j2"


@pytest.mark.parametrize("template", [[], ["--template", str(TEMPLATE)]])
def test_render_cost_prints_its_figures(template: list[str], capsys) -> None:
    render_cost.main(["4", "3", "--runs", "1", *template])
    out = capsys.readouterr().out
    assert out.startswith("4 services x 3 servers, " + ("template" if template else "default"))
    assert "first render" in out and "one service changed" in out
