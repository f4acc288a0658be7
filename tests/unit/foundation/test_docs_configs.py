"""The config files of examples/ and the config blocks of the docs load with the daemons' own
loaders (what ``nerve -k`` / ``synapse -k --config-only`` run): a key renamed or a rule added
since a doc was written shows up here, not in an operator's first start."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from nerve.config import ServiceConfig as NerveService
from nerve.config import load_nerve_config
from smartstack.configfile import ConfigError
from synapse.config import ServiceConfig as SynapseService
from synapse.config import load_synapse_config

ROOT = Path(__file__).resolve().parents[3]
DOCS = [
    ROOT / "README.md",
    *sorted((ROOT / "docs").glob("*.md")),
    *sorted(ROOT.glob("examples/**/*.md")),
]
EXAMPLES = [  # (the service files of service_conf_dir are read through their main file)
    p
    for p in sorted(ROOT.glob("examples/*/*"))
    if p.suffix in (".json", ".yaml", ".yml") and p.parent.name != "grafana"
]
FENCE = re.compile(r"^( *)```(\w*)\s*$")
CERT_KEYS = ("ca_cert", "cert_cert", "cert_key")


def _blocks() -> Iterator[tuple[str, str, str]]:
    """(where, language, text) of every fenced block of the docs."""
    for doc in DOCS:
        lines = doc.read_text().splitlines()
        i = 0
        while i < len(lines):
            fence = FENCE.match(lines[i])
            if not fence:
                i += 1
                continue
            indent, start = len(fence.group(1)), i + 1
            closing = (j for j in range(start, len(lines)) if lines[j].strip() == "```")
            end = next(closing, len(lines))
            text = "\n".join(line[indent:] for line in lines[start:end])
            yield f"{doc.relative_to(ROOT)}:{start}", fence.group(2), text
            i = end + 1


def _kind(doc: Any) -> str | None:
    """nerve, synapse, or None (a fragment: a record, a /status answer, a lone block)."""
    if not isinstance(doc, dict):
        return None
    services = doc.get("services")
    if "instance_id" in doc:
        blocks = services.values() if isinstance(services, dict) else []
        nerve_keys = set(NerveService.model_fields)
        if all(isinstance(b, dict) and set(b) <= nerve_keys for b in blocks):
            return "nerve"
        return None
    if isinstance(services, dict) and services:
        synapse_keys = set(SynapseService.model_fields) | {"discovery_multi"}
        if all(isinstance(b, dict) and set(b) <= synapse_keys for b in services.values()):
            return "synapse"
    return "synapse" if "docker_services" in doc else None


def doc_configs() -> list[tuple[str, str, dict[str, Any]]]:
    found = []
    for where, language, text in _blocks():
        if language not in ("", "yaml", "yml", "json"):
            continue
        try:
            doc = yaml.safe_load(text)
        except yaml.YAMLError:
            continue  # (shell sessions, HAProxy lines, ...)
        kind = _kind(doc)
        if kind is not None:
            found.append((where, kind, doc))
    return found


def _complete(doc: dict[str, Any], kind: str, tmp: Path) -> dict[str, Any]:
    """What a doc's block leaves out on purpose, filled in: the HAProxy block a service-level
    example does not repeat, a service's discovery, certificate files of this host."""

    def certs(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in CERT_KEYS and isinstance(value, str):
                    node[key] = str(tmp / Path(value).name)
                    Path(node[key]).touch()
                else:
                    certs(value)
        elif isinstance(node, list):
            for item in node:
                certs(item)

    certs(doc)
    if kind == "synapse":
        haproxy = doc.setdefault("haproxy", {})
        haproxy.setdefault("config_file_path", str(tmp / "haproxy.cfg"))
        if "reload_command" not in haproxy:
            haproxy.setdefault("managed", {})
        for block in (doc.get("services") or {}).values():
            block.setdefault("discovery", {"method": "base"})
    return doc


def _load(kind: str, path: Path) -> list[str]:
    loader = load_nerve_config if kind == "nerve" else load_synapse_config
    try:
        loader(path)
    except ConfigError as exc:
        return exc.lines
    return []


@pytest.fixture(autouse=True)
def _no_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("NERVE_INSTANCE_ID", "SYNAPSE_ZONE"):
        monkeypatch.delenv(name, raising=False)


def test_the_docs_have_config_blocks_of_both_daemons() -> None:
    kinds = [kind for _, kind, _ in doc_configs()]
    assert kinds.count("nerve") >= 3 and kinds.count("synapse") >= 8, kinds


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_example_config_loads(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)  # service_conf_dir is relative to the current directory, as Ruby's
    kind = "nerve" if "nerve" in path.name else "synapse"
    assert _load(kind, path) == []


def test_every_config_block_of_the_docs_loads(tmp_path: Path) -> None:
    failed = {}
    for index, (where, kind, doc) in enumerate(doc_configs()):
        path = tmp_path / f"block{index}.yaml"
        path.write_text(yaml.safe_dump(_complete(doc, kind, tmp_path)))
        if errors := _load(kind, path):
            failed[where] = errors
    assert not failed
