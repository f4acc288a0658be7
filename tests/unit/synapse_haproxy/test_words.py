"""An HAProxy config line's words as HAProxy 2.6 reads them (review s31: `line.split()` kept
quotes and `${VAR}` in paths, and valid configs were refused)."""

from __future__ import annotations

import pytest

from synapse.haproxy.words import has_env, words


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("", []),
        ("  # only a comment", []),
        ("pidfile /run/h.pid", ["pidfile", "/run/h.pid"]),
        ('pidfile "/run/x y/h.pid"', ["pidfile", "/run/x y/h.pid"]),
        ("pidfile '/run/x/h.pid'  # said", ["pidfile", "/run/x/h.pid"]),
        ("stats socket /run/a#b.sock", ["stats", "socket", "/run/a"]),  # (as HAProxy 2.6)
        ('log-tag "a#b"', ["log-tag", "a#b"]),
        (r"name a\ b\#c", ["name", "a b#c"]),
        (r"""x "a\"b" 'c\d'""", ["x", 'a"b', r"c\d"]),  # (no escape in '...')
        ('x "" y', ["x", "", "y"]),
        ('x pre"mid"post', ["x", "premidpost"]),
        ('stats socket "${SOCKDIR}/admin.sock"', ["stats", "socket", "${SOCKDIR}/admin.sock"]),
    ],
)
def test_words(line: str, expected: list[str]) -> None:
    assert words(line) == expected


def test_a_word_with_an_environment_variable_is_not_judged() -> None:
    assert has_env("${SOCKDIR}/admin.sock") and has_env("$HOME/a")
    assert not has_env("/run/admin.sock")


def test_a_quoted_stats_socket_is_the_path_synapse_connects_to() -> None:
    from synapse.haproxy.settings import unix_stats_sockets

    assert unix_stats_sockets(['stats socket "/run/a b.sock" level admin']) == ["/run/a b.sock"]


def test_a_stats_socket_with_a_variable_is_expanded_or_left_out(monkeypatch) -> None:
    """A managed HAProxy expands ${VAR} with the environment it has from synapse; one still
    unset is left out (review s31: a literal `${SOCKDIR}` dir was made, and every reload
    waited on a socket that never answered)."""
    from synapse.haproxy.settings import unix_stats_sockets

    monkeypatch.setenv("SOCKDIR", "/run/hap")
    monkeypatch.delenv("NO_SUCH_DIR", raising=False)
    lines = ['stats socket "${SOCKDIR}/a.sock" level admin', "stats socket ${NO_SUCH_DIR}/b.sock"]
    assert unix_stats_sockets(lines) == ["/run/hap/a.sock"]
