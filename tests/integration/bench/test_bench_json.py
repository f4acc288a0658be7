"""The benchmarks' JSON files and BENCHMARKS.md (write_json runs haproxy, zkServer and etcd
for their versions)."""

from __future__ import annotations

import json

from bench.markdown import load, render, update
from bench.report import Result, Target, write_json


def test_markdown_is_rendered_from_the_json_files(tmp_path) -> None:
    result = Result("propagation")
    result.section("zookeeper").add("p99", 12.5, "ms", Target("<=", 10, "ms"))
    write_json(result, quick=False, directory=tmp_path)
    text = render(load(tmp_path))
    assert "### propagation" in text and "Machine:" in text
    assert "| p99 | 12.5 ms | ≤ 10 ms | **missed** |" in text
    doc = tmp_path / "BENCHMARKS.md"
    doc.write_text("intro\n<!-- results:begin -->\nold\n<!-- results:end -->\noutro\n")
    update(doc, text)
    new = doc.read_text()
    assert "old" not in new and text in new and new.startswith("intro") and "outro" in new


def test_json_has_machine_versions_and_figures(tmp_path) -> None:
    result = Result("demo")
    result.section("s").add("x", 1.0, "ms", Target("<=", 2, "ms"))
    result.figures["raw"] = [1, 2]
    data = json.loads(write_json(result, quick=True, directory=tmp_path).read_text())
    assert data["name"] == "demo" and data["quick"] is True
    assert data["machine"]["nproc"] >= 1 and data["machine"]["kernel"]
    assert set(data["versions"]) >= {"haproxy", "zookeeper", "etcd", "python", "smartstack_git"}
    assert data["sections"][0]["rows"][0]["met"] is True
    assert data["figures"]["raw"] == [1, 2] and data["missed_targets"] == []
