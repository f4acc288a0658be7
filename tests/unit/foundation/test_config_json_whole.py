"""A JSON config changed a moment ago is read at once when it is a whole JSON object and
no writer has it open (smartstack.config_read.whole_json).

No prefix of a JSON object is one: it ends with its closing brace and only whitespace may
follow. Before, every file changed less than SETTLE_CLOSED_S ago waited that long: a route
change by SIGHUP took ~58 ms, ~50 of them that wait (`python -m bench edge --quick`).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from smartstack import config_read
from smartstack.configfile import load_document

JSON_SPACE = " \t\n\r"
EXAMPLES = Path(__file__).resolve().parents[3] / "examples" / "airbnb"
CONFIG = {"services": {"web": {"discovery": {"method": "base"}, "haproxy": {"port": 3001},
                               "default_servers": [{"name": "w", "host": "10.0.0.1",
                                                    "port": 8080}]}}}  # fmt: skip


def real_texts() -> list[tuple[str, str]]:
    texts = [(p.name, p.read_text()) for p in sorted(EXAMPLES.rglob("*.json"))]
    texts.append(("compact", json.dumps(CONFIG)))
    texts.append(
        ("bom, indent 2, CRLF", "\ufeff" + json.dumps(CONFIG, indent=2).replace("\n", "\r\n"))
    )
    return texts


@pytest.mark.parametrize(("name", "text"), real_texts(), ids=[n for n, _ in real_texts()])
def test_no_prefix_of_a_real_config_is_whole_only_the_whole_text_is(name: str, text: str) -> None:
    whole = text.rstrip(JSON_SPACE)
    is_whole = config_read.whole_json
    wrong = [cut for cut in range(len(text) + 1)
             if is_whole(text[:cut]) != (text[:cut].rstrip(JSON_SPACE) == whole)]  # fmt: skip
    assert wrong == [], (name, [text[:cut][-30:] for cut in wrong[:3]])


def test_a_real_config_has_comment_lines() -> None:
    assert any(line.lstrip().startswith("#") for _, t in real_texts() for line in t.splitlines())


@pytest.mark.parametrize(
    "text",
    ["", " \n", "\ufeff", "[]", '"services"', "12", "null", "{}{}", '{"a": 1}\n{"b": 2}\n',
     '{"a": 1}\n---\n{"b": 2}\n', "a: 1\n", "{a: 1}\n", '{"a": 1,}', '{"a": 1} x',
     '{"a": 1}\n...\n', '{"a": 1}\u00a0', '{"a": 1} # a comment after the brace'],
)  # fmt: skip
def test_what_is_not_one_whole_json_object(text: str) -> None:
    assert not config_read.whole_json(text)


@pytest.mark.parametrize(
    "text",
    ["{}", '{"a": 1}\n\n', '\ufeff{"a": 1}', '# made by chef\n{"a": 1}\n# end\n',
     '{\n  # a comment line, as Ruby (YAML) reads .json files\n  "a": 1\n}\n'],
)  # fmt: skip
def test_one_whole_json_object(text: str) -> None:
    assert config_read.whole_json(text)


def test_a_too_deep_object_is_not_whole_and_no_error() -> None:
    assert not config_read.whole_json('{"a": ' * 100_000 + "1" + "}" * 100_000)


def fresh(path: Path, text: str) -> None:
    path.write_text(text)  # closed again: no writer has it open


def no_sleep(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(config_read.time, "sleep", lambda s: pytest.fail(f"slept {s}"))


@pytest.mark.parametrize("name", ["synapse.json", "synapse.yaml"])
def test_a_whole_json_file_changed_a_moment_ago_is_read_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    path = tmp_path / name  # (a .yaml file holding JSON text: YAML reads it alike)
    fresh(path, json.dumps(CONFIG, indent=1))
    no_sleep(monkeypatch)
    assert load_document(path) == CONFIG


@pytest.mark.parametrize("text", ["alpha: 1\n", "", '{"alpha": 1'])
def test_yaml_an_empty_file_or_a_json_prefix_changed_a_moment_ago_still_waits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str
) -> None:
    path = tmp_path / "synapse.json"
    fresh(path, text)
    slept: list[float] = []
    monkeypatch.setattr(config_read.time, "sleep", slept.append)
    assert config_read.read_settled(path) == text
    assert slept and slept[0] <= config_read.SETTLE_CLOSED_S


def writer_thread(path: Path, write: Callable[[threading.Event], None]) -> threading.Thread:
    started = threading.Event()
    thread = threading.Thread(target=write, args=(started,))
    thread.start()
    started.wait(5)
    return thread


def test_a_whole_json_file_a_writer_still_has_open_is_waited_for(tmp_path: Path) -> None:
    """A writer may write it whole, then truncate and write it again."""
    path = tmp_path / "synapse.json"

    def write(started: threading.Event) -> None:
        with path.open("w") as file:
            file.write('{"a": 1}')
            file.flush()
            started.set()
            time.sleep(0.4)
            file.seek(0)
            file.truncate()
            file.write('{"a": 2}')

    thread = writer_thread(path, write)
    try:
        assert load_document(path) == {"a": 2}
    finally:
        thread.join()


def test_without_the_kernel_s_word_a_whole_json_text_still_settles(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A writer overwriting without truncating first leaves its new head on the old tail:
    ``{"a": 2, "b": 22}`` is a whole JSON object neither wrote. Whether one has the file
    open, only the kernel can say."""
    monkeypatch.setattr(config_read, "open_for_writing", lambda fd: None)
    path = tmp_path / "synapse.json"
    path.write_text('{"a": 1, "b": 22}')

    def write(started: threading.Event) -> None:
        with path.open("r+") as file:
            file.write('{"a": 2,')
            file.flush()
            started.set()
            time.sleep(config_read.SETTLE_S / 2)
            file.write(' "b": 3}')
            file.truncate()

    thread = writer_thread(path, write)
    try:
        assert load_document(path) == {"a": 2, "b": 3}
    finally:
        thread.join()
