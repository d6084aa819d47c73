"""The slips people make writing YAML by hand, and what ``validate`` says about them.

Each message names the place and says what to write instead, once: not
pydantic's words ("Input should be a valid string"), and not one message for
each member of a union ("subject.str", "subject.dict[str,str]").
"""

from __future__ import annotations

from pathlib import Path

import pytest

from nurture.core.loader import parse_sequence

EXAMPLE = (Path(__file__).resolve().parents[2] / "sequences" / "sales-process.yaml").read_text(
    encoding="utf-8"
)


def problems(old: str, new: str) -> list[str]:
    assert old in EXAMPLE
    loaded, found = parse_sequence(EXAMPLE.replace(old, new, 1), "s.yaml")
    assert loaded is None
    return [f"{d.line}:{d.column}: {d.message}" for d in found]


def line_of(text: str) -> int:
    return EXAMPLE[: EXAMPLE.index(text)].count("\n") + 1


@pytest.mark.parametrize(
    ("old", "where"),
    [
        ("      sv: Tre sätt att köpa – vilket använder dina kunder?", "subject.sv"),
        ("      en: Five short emails on how your customers really buy – and who I am.",
         "preheader.en"),
    ],
)  # fmt: skip
def test_a_text_after_an_unquoted_hash_is_one_message_about_the_comment(
    old: str, where: str
) -> None:
    indent, _, _ = old.partition(":")
    [message] = problems(old, f"{indent}: #1 in the series")
    assert message.endswith(
        f"{where}: this value is empty: YAML reads an unquoted # as the start of a "
        'comment; put the text in quotes ("#1 ...")'
    )
    assert message.startswith(f"{line_of(old)}:7: steps[")


def test_an_empty_language_is_named_once_without_the_union_s_members() -> None:
    old = "      en: Three ways to buy – which one do your customers use?"
    [message] = problems(old, "      en:")
    assert message.startswith(
        f"{line_of(old)}:7: steps[three-models].subject.en: this value is empty"
    )
    assert "str]" not in message and ".str" not in message


def test_a_price_written_as_a_number_says_to_quote_it() -> None:
    old = '      price: "4 900 kr"'
    [message] = problems(old, "      price: 4900")
    assert message == (
        f"{line_of(old)}:7: steps[offer].offer.price: 4900 is a number here, and this is "
        'a text: put it in quotes ("4900")'
    )


@pytest.mark.parametrize("written", ["24.12.2026", "12/24/2026", "2026-24-12"])
def test_a_date_in_another_form_says_which_form(written: str) -> None:
    old = '  dates: ["2026-12-24", "2026-12-31"]'
    [message] = problems(old, f'  dates: ["{written}", "2026-12-31"]')
    assert message.endswith(
        f"skip_dates.dates[#1]: '{written}' is not a date: write it as YYYY-MM-DD, "
        "for example 2026-12-24"
    )


WHEN = "    when: \"'customer' not in subscriber.tags\""


@pytest.mark.parametrize(
    ("condition", "column", "says"),
    [
        ("\u2018customer\u2019 not in subscriber.tags", 12,
         "\u2018 is a typographic quote (a word processor's); write texts in straight quotes"),
        ("subscriber.locale = 'sv'", 30, "to compare, write == (one = is not a comparison)"),
        ("subscriber.first_name | uppr == 'X'", 36,
         "no filter named 'uppr' — did you mean 'upper'?"),
        ("subscriber.first_name ==", 11,
         "the condition ends too soon: a comparison, 'and', 'or' or 'not' without"),
        ("(subscriber.first_name == 'X'", 11,
         "the condition ends too soon: a bracket is not closed: end it with ')'"),
        ("not clicked('welcom')", 11,
         "condition refers to 'welcom', which is not an earlier step of this sequence — "
         "did you mean 'welcome'?"),
    ],
)  # fmt: skip
def test_a_condition_s_slip_says_what_to_write_where(
    condition: str, column: int, says: str
) -> None:
    [message] = problems(WHEN, f'    when: "{condition}"')
    assert message.startswith(f"{line_of(WHEN)}:{column}: steps[case-study].when: ")
    assert says in message
