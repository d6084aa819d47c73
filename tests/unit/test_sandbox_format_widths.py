"""Format widths are checked before the string is made, however they are written.

``str.format`` and ``format_map`` (which Jinja swaps for a wrapper of its own),
nested widths (``{0:>{1}}``), printf ``*`` widths and ``%(key)`` forms, and
bytes. The widths here are 10**8: past every limit, yet small enough that a
sandbox without the checks makes the string (100 MB) and the test fails
instead of the machine.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from nurture.core.conditions import ConditionError, Engagement, compile_condition
from nurture.core.rendering import TemplateLibrary
from nurture.errors import RenderError
from tests.factories import make_sequence
from tests.unit.test_budgets import ADA, ADDRESS, LAYOUT, LINKS, within

WIDE = 10**8
WIDTH = f"a format width of {WIDE}"

HUGE_WIDTHS = {
    "str.format": f"'{{0:>{WIDE}}}'.format(1)",
    "format_map": f"'{{a:>{WIDE}}}'.format_map({{'a': 1}})",
    "nested width": f"'{{0:>{{1}}}}'.format(1, {WIDE})",
    "nested keyword width": f"'{{:>{{w}}}}'.format(1, w={WIDE})",
    "nested whole spec": f"'{{0:{{1}}}}'.format(1, {WIDE})",
    "nested precision": f"'{{0:.{{1}}f}}'.format(1.0, {WIDE})",
    "Markup.format": f"('{{0:>{WIDE}}}'|safe).format(1)",
    "printf star width": f"'%*d'|format({WIDE}, 1)",
    "printf left-justified star": f"'%-*s'|format({WIDE}, 1)",
    "printf zero-padded star": f"'%0*d'|format({WIDE}, 1)",
    "printf star precision": f"'%.*f'|format({WIDE}, 1.0)",
    "printf mapping key": f"'%(a){WIDE}s'|format(a=1)",
    "printf nested key": f"'%(a(b)){WIDE}s' % {{'a(b)': 1}}",
    "% operator star width": f"'%*d' % ({WIDE}, 1)",
    "bytes % star width": f"'%*d'.encode() % ({WIDE}, 1)",
}

HUGE_VALUES = {
    "bytes times": (f"'a'.encode() * {WIDE}", "'*' would make a value"),
    "bytes doubled by +": ("('a'.encode() * 300000) + ('a'.encode() * 300000)", "would make"),
    "one printf key many times": ("('%(a)s' * 1000) % {'a': 'x' * 99000}", "'%' would make"),
    "one format field many times": ("('{0}' * 1000).format('x' * 99000)", "str.format would"),
}


def hostile() -> list[tuple[str, str]]:
    return [(source, WIDTH) for source in HUGE_WIDTHS.values()] + list(HUGE_VALUES.values())


IDS = [*HUGE_WIDTHS, *HUGE_VALUES]


@pytest.fixture
def templates(tmp_path: Path) -> Path:
    root = tmp_path / "templates"
    (root / "en").mkdir(parents=True)
    shutil.copy(LAYOUT, root / "layout.html")
    return root


def render(root: Path, body: str) -> str:
    (root / "en" / "welcome.md").write_text(body, encoding="utf-8")
    seq = make_sequence()
    return TemplateLibrary(root).render(seq, seq.steps[0], ADA, LINKS, ADDRESS).html


@pytest.mark.parametrize("source,reason", hostile(), ids=IDS)
def test_a_huge_format_in_a_condition_is_refused_before_it_is_made(
    source: str, reason: str
) -> None:
    # |length: the string is never printed, so only the value check can stop it.
    condition = compile_condition(f"({source})|length > 0")
    with within(2), pytest.raises(ConditionError, match="condition stopped") as caught:
        condition.evaluate({}, Engagement())
    assert reason in str(caught.value)


@pytest.mark.parametrize("source,reason", hostile(), ids=IDS)
def test_a_huge_format_in_a_template_is_refused_before_it_is_made(
    templates: Path, source: str, reason: str
) -> None:
    with within(3), pytest.raises(RenderError) as caught:
        render(templates, "Hello\n{{ (" + source + ")|length }}\n")
    message = str(caught.value)
    assert "welcome.md" in message and "rendering stopped" in message, message
    assert reason in message


def test_a_width_from_the_subscriber_is_held_to_the_condition_limit() -> None:
    condition = compile_condition("'%*d'|format(subscriber.w, 1)|length > 0")
    with pytest.raises(ConditionError, match=r"a format width of 100001 \(limit 100000\)"):
        condition.evaluate({"w": 100_001}, Engagement())
    assert condition.evaluate({"w": 90_000}, Engagement()) is True


ORDINARY = {
    "'{:.2f}'.format(3.14159)": "3.14",
    "'{name}'.format(name='Ada')": "Ada",
    "'{0:>{1}}'.format(7, 3)": "  7",
    "'{a}-{b}'.format_map({'a': 1, 'b': 2})": "1-2",
    "'{0:,}'.format(10**12)": "1,000,000,000,000",
    "('<{0}>'|safe).format('&')": "<&amp;>",
    "'%05d'|format(42)": "00042",
    "'%(a)s-%(b)s'|format(a=1, b=2)": "1-2",
    "'%-*s|' % (4, 'ab')": "ab  |",
    "'%.*f' % (1, 2.25)": "2.2",
    "'%d%%' % 50": "50%",
    "('ab'.encode() * 2).decode()": "abab",
}


@pytest.mark.parametrize("source,expected", ORDINARY.items(), ids=list(ORDINARY))
def test_ordinary_formatting_still_works(templates: Path, source: str, expected: str) -> None:
    test = f"({source}) == {expected!r}"
    assert compile_condition(test).evaluate({}, Engagement()) is True
    assert "equal: True" in render(templates, "equal: {{ " + test + " }}")


# A list holding a long string, multiplied: few items, but printed (|string,
# ~, '%s' %, {{ }}) it is the string that many times.
PRINTED = [
    ("(['x' * 50000] * 1000)|string", "'*' would make a value of"),
    ("'' ~ (['x' * 50000] * 1000)", "'*' would make a value of"),
    ("[{'k': 'x' * 60000}] * 3", "'*' would make a value of"),
    ("(['x' * 40000] + ['y' * 40000] + ['z' * 40000])|string", "'+' would make a value of"),
]


@pytest.mark.parametrize(("source", "reason"), PRINTED)
def test_a_list_of_long_strings_is_counted_by_what_it_prints(source: str, reason: str) -> None:
    condition = compile_condition(f"({source})|length > 0")
    with within(2), pytest.raises(ConditionError, match="condition stopped") as caught:
        condition.evaluate({}, Engagement())
    assert reason in str(caught.value)


def test_small_lists_of_text_still_print() -> None:
    condition = compile_condition("(['ab'] * 3)|join == 'ababab' and ([1, 2] + [3])|length == 3")
    assert condition.evaluate({}, Engagement()) is True
