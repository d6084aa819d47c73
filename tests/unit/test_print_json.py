"""--json output cannot drive the admin's terminal, and stays valid JSON."""

from __future__ import annotations

import json

import pytest

from nurture.cli.console import print_json


def test_controls_are_escaped_and_the_json_round_trips(capsys: pytest.CaptureFixture[str]) -> None:
    data = {"name": "Välkommen \x9b31mred\x1b[0m \u202eevil\x7f", "n": [1, "å"]}
    print_json(data)
    printed = capsys.readouterr().out
    assert json.loads(printed) == data
    assert "Välkommen" in printed and "å" in printed  # readable, not \u00e4
    for raw in ("\x9b", "\x1b", "\u202e", "\x7f"):
        assert raw not in printed
    assert "\\u009b" in printed and "\\u202e" in printed


def test_bidi_marks_and_unicode_line_separators_are_escaped_too(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from nurture.cli.console import clean

    data = {"name": "a\u061cb\u2028c\u2029d\u200fe"}
    print_json(data)
    printed = capsys.readouterr().out
    assert json.loads(printed) == data
    for raw in ("\u061c", "\u2028", "\u2029", "\u200f"):
        assert raw not in printed
        assert raw not in clean(data["name"])
    assert clean(data["name"]) == "a\\u061cb\\u2028c\\u2029d\\u200fe"
