"""The names a ``when`` condition uses, checked without running it, and
reported at the name's own line and column in the YAML, however it is quoted."""

from __future__ import annotations

import pytest

from nurture.core.conditions import name_problems
from nurture.core.loader import parse_sequence

SEQUENCE = """\
version: 1
id: onboarding
name: Onboarding
sender: {name: Anna, email: anna@example.com}
steps:
  - id: welcome
    wait: 0
    subject: Hi
    template: welcome.md
  - id: offer
    wait: 2 days
WHEN
    subject: Offer
    template: offer.md
    offer: {name: Review, price: "100", checkout_url: "https://shop.example.com/buy"}
"""


@pytest.mark.parametrize(
    ("source", "offset", "message"),
    [
        (
            "not cliked('first-dashboard')",
            4,
            "unknown function 'cliked' — did you mean 'clicked'? (a condition can call "
            "opened('step-id') and clicked('step-id'))",
        ),
        (
            "subscribr.tags",
            0,
            "unknown name 'subscribr' — did you mean 'subscriber'? (a condition can use "
            "subscriber, converted, opened('step-id') and clicked('step-id'))",
        ),
        (
            "subscriber.atributes.get('plan') == 'free'",
            11,
            "subscriber has no field 'atributes' — did you mean 'attributes'? (fields: "
            "email, name, first_name, locale, timezone, tags, attributes)",
        ),
        (
            "subscriber['frist_name'] == 'Karin'",
            12,
            "subscriber has no field 'frist_name' — did you mean 'first_name'? (fields: "
            "email, name, first_name, locale, timezone, tags, attributes)",
        ),
        ("converted()", 0, "converted is true or false, not a function: write converted"),
        ("not opened", 4, "opened is a function: write opened('step-id')"),
    ],
)
def test_an_unknown_name_is_found_with_its_offset(source: str, offset: int, message: str) -> None:
    [problem] = name_problems(source)
    assert (problem.offset, problem.message) == (offset, message)


@pytest.mark.parametrize(
    "source",
    [
        "not clicked('welcome') and not converted",
        "'cliked' in subscriber.tags",  # a typo inside a string is data
        "subscriber.attributes.plan == 'pro'",  # attributes differ per subscriber
        "subscriber.get('first_name') and subscriber['email']",
        "subscriber.first_name | length > 2 and 3 in range(5)",
        "opened('welcome') or subscriber.locale.startswith('sv')",
    ],
)
def test_known_names_are_fine(source: str) -> None:
    assert name_problems(source) == []


def test_problems_come_in_the_order_they_are_written() -> None:
    problems = name_problems("subscribr.tags and cliked('x') and subscriber.nam")
    assert [p.offset for p in problems] == [0, 19, 46]


@pytest.mark.parametrize(
    ("when", "line", "column"),
    [
        ("    when: not cliked('welcome')", 12, 15),
        ("    when: \"not cliked('welcome')\"", 12, 16),
        ("    when: 'not cliked(''welcome'')'", 12, 16),
        # Each escaped quote before the name takes two columns in the file.
        ('    when: "\\"x\\" in subscriber.tags and cliked(\'welcome\')"', 12, 41),
        ("    when: >-\n      'x' in subscriber.tags\n      and cliked('welcome')", 14, 11),
        ("    when: |\n      'x' in subscriber.tags and\n      cliked('welcome')", 14, 7),
    ],
)
def test_the_problem_is_at_the_name_in_the_file(when: str, line: int, column: int) -> None:
    loaded, problems = parse_sequence(SEQUENCE.replace("WHEN", when), "seq.yaml")
    assert loaded is None
    [problem] = problems
    assert (problem.line, problem.column) == (line, column), problem
    assert problem.message.startswith("steps[offer].when: unknown function 'cliked'")


def test_a_typo_no_sample_reaches_is_still_an_error() -> None:
    # `converted and ...`: the samples are never converted, so evaluating
    # against them alone never runs `cliked`.
    when = "    when: \"converted and cliked('welcome')\""
    _, problems = parse_sequence(SEQUENCE.replace("WHEN", when), "seq.yaml")
    assert [str(p) for p in problems] == [
        "seq.yaml:12:26: steps[offer].when: unknown function 'cliked' — did you mean "
        "'clicked'? (a condition can call opened('step-id') and clicked('step-id'))"
    ]
