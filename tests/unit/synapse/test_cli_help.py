"""What `synapse --help` and `nerve --help` show a newcomer (review s44 newuser)."""

from __future__ import annotations

import nerve.cli
import synapse.cli


def test_synapse_help_names_the_zone_command() -> None:
    # Before: `synapse --help` listed the daemon's flags only; `synapse zone evacuate|restore`
    # (docs/zone-routing.md) was found nowhere in it, while `nerve --help` lists maint/up.
    text = synapse.cli.build_parser().format_help()
    assert "synapse zone evacuate|restore ZONE" in text
    assert "synapse -c FILE [-k]" in text


def test_help_shows_no_rst_markup() -> None:
    # The module docstrings are the descriptions: ``nerve`` printed with its backquotes.
    for parser in (synapse.cli.build_parser(), nerve.cli.build_parser()):
        assert "``" not in parser.format_help()
