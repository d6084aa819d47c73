"""``nurture init`` never writes a project that later commands refuse: a
``--base-url`` the settings would refuse (a line break, a space, a quote, a
query ...) is refused up front, exit 2, and nothing is written; a value with a
quote, a backslash or a ``#`` is escaped and reads back as given; one with a
character no TOML or YAML line can carry (a control character, a line
separator, a byte that was not UTF-8) is refused like a bad URL."""

from __future__ import annotations

import itertools
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from click.testing import Result
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

import nurture.cli.project as init_cli
from nurture.app.settings import load_settings
from nurture.authoring.project import EXAMPLE_SEQUENCE, parse_sender
from nurture.cli.main import app
from nurture.core.loader import parse_sequence
from nurture.urls import url_problem

SENDER = "Maja Berg <maja@bergdesign.se>"
POSTAL = "Berg Design AB, Sveavägen 10, 113 57 Stockholm, Sweden"
_folders = itertools.count()


def init(where: Path, *options: str, input: str | None = None) -> tuple[Result, Path]:
    folder = where / f"shop{next(_folders)}"
    result = CliRunner().invoke(
        app, ["init", str(folder), *options], input=input, env={"COLUMNS": "500"}
    )
    return result, folder


def refused(result: Result, folder: Path, option: str) -> str:
    """``result`` is a usage error naming ``option``, and nothing was written."""
    output = " ".join(re.sub("[│╭╮╰╯─]", " ", result.output).split())  # no box
    assert result.exit_code == 2, output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert f"Invalid value for '{option}'" in output
    assert not folder.exists()
    return output


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("https://mail.shop.se\r\nX-Injected: 1", "(found '\\r')"),
        ("https://mail.shop.se\nbase_url = 1", "(found '\\n')"),
        ("https://mail.shop.se/a b", "(found ' ')"),
        ('https://mail.shop.se/"quote', "(found '\"')"),
        ("https://mail.shop.se/back\\slash", "(found '\\\\')"),
        ("https://mail.shop.se/\x7f", "(found '\\x7f')"),
        ("https://mail.shop.se/a\u2028b", "(found '\\u2028')"),
        ("https://maja@mail.shop.se", "must not contain a user name"),
        ("https://mail.shop.se/?utm=1", "must not have a query"),
        ("https://mail.shop.se/#top", "must not have a fragment"),
        ("https://mail.shop.se:99999", "is not a valid URL"),
        ("https://mail.shop.se/\udcff", "is not UTF-8 text"),
    ],
)
def test_init_refuses_a_base_url_the_settings_would_refuse(
    tmp_path: Path, url: str, says: str
) -> None:
    result, folder = init(tmp_path, "--base-url", url)
    assert says in refused(result, folder, "--base-url")


@pytest.mark.parametrize(
    ("option", "value", "says"),
    [
        ("--postal-address", "Berg AB\x7f, Gatan 1, Malmö", "'\\x7f' in it: nurture.toml takes"),
        ("--postal-address", "Berg AB\x00, Gatan 1, Malmö", "'\\x00' in it"),
        ("--postal-address", "Berg AB\x9b, Gatan 1, Malmö", "'\\x9b' in it"),
        ("--postal-address", "Berg AB\ufffe, Gatan 1, Malmö", "'\\ufffe' in it"),
        ("--postal-address", "Berg \udcf6 AB, Gatan 1", "which is not UTF-8 text"),
        ("--from", "Maja\x7fBerg <maja@bergdesign.se>", f"in it: {EXAMPLE_SEQUENCE} takes"),
        ("--from", "Maja\x85Berg <maja@bergdesign.se>", "'\\x85' in it"),
        ("--from", "Maja\u2029Berg <maja@bergdesign.se>", "'\\u2029' in it"),
        ("--from", "Maja\uffff <maja@bergdesign.se>", "'\\uffff' in it"),
        ("--from", "Maja \udce5 <maja@bergdesign.se>", "which is not UTF-8 text"),
    ],
)
def test_init_refuses_a_value_no_line_of_its_file_can_carry(
    tmp_path: Path, option: str, value: str, says: str
) -> None:
    result, folder = init(tmp_path, option, value)
    assert says in refused(result, folder, option)
    assert "Traceback" not in result.output


def test_quotes_backslashes_and_hashes_are_escaped_and_read_back(tmp_path: Path) -> None:
    sender = '"Maja \\"Ace\\" # Berg" <maja@bergdesign.se>'
    postal = 'Berg "Design" AB \\ Co, Gatan 1 # 2, \'\'\' """ Malmö'
    result, folder = init(
        tmp_path, "--from", sender, "--postal-address", postal, "--base-url", "https://x.se/p/"
    )
    assert result.exit_code == 0, result.output
    settings = load_settings(folder)
    assert (settings.postal_address, settings.base_url) == (postal, "https://x.se/p")
    assert loaded_sender_name(folder) == 'Maja "Ace" # Berg'


def loaded_sender_name(folder: Path) -> str:
    text = (folder / EXAMPLE_SEQUENCE).read_text(encoding="utf-8")
    loaded, problems = parse_sequence(text, EXAMPLE_SEQUENCE)
    assert loaded is not None, problems
    return loaded.sequence.sender.name


# Text with what breaks a TOML or YAML line, or a quoted string in one.
AWKWARD = st.text(
    st.one_of(
        st.characters(codec="utf-8"),
        st.sampled_from(list("\"\\'#[]{}=:\n\r\t\x00\x1b\x7f\x85\x9b\u2028\u2029\ufeff\ufffe")),
        st.sampled_from(["\ud800", "\udcff"]),
    ),
    min_size=1,
    max_size=30,
)


@settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(name=AWKWARD, postal=AWKWARD, path=AWKWARD)
def test_whatever_init_is_given_it_refuses_or_writes_a_project_that_reads_it_back(
    tmp_path: Path, name: str, postal: str, path: str
) -> None:
    base_url = f"https://mail.shop.se/{path}"
    result, folder = init(
        tmp_path,
        "--from", f"{name} <maja@bergdesign.se>",
        "--postal-address", postal,
        "--base-url", base_url,
    )  # fmt: skip
    assert "Traceback" not in result.output
    event("refused" if result.exit_code else "written")
    if result.exit_code != 0:
        assert result.exit_code == 2, result.output
        assert isinstance(result.exception, SystemExit), repr(result.exception)
        assert not folder.exists()
        return
    settings = load_settings(folder)
    assert settings.postal_address == " ".join(postal.split())
    assert settings.base_url == base_url.strip().rstrip("/")
    assert url_problem(settings.base_url) is None
    assert loaded_sender_name(folder) == parse_sender(f"{name} <maja@bergdesign.se>").name


def test_the_prompt_asks_again_for_a_base_url_the_settings_would_refuse(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    terminal: Any = SimpleNamespace(stdin=SimpleNamespace(isatty=lambda: True))
    monkeypatch.setattr(init_cli, "sys", terminal)
    answers = f"{SENDER}\n{POSTAL}\nhttps://mail.shop.se/a b\nhttps://mail.shop.se\n"
    result, folder = init(tmp_path, input=answers)
    assert result.exit_code == 0, result.output
    assert "'https://mail.shop.se/a b' must not contain spaces" in result.output
    assert load_settings(folder).base_url == "https://mail.shop.se"
