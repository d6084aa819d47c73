"""Generated bad sequence files: whatever the bytes, the loader answers with
``file:line:column`` problems, never a traceback and never a hang.

Hypothesis mutates the example sequence (truncates it, overwrites a span,
splices in hostile YAML: alias bombs, deep nesting, huge numbers, wrong types,
unknown keys, tags) and also generates whole random YAML documents. The
pytest-timeout of each test is the "never hangs" check: a file that took the
parser minutes (thousands of nested brackets did) fails the run.
"""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ruamel.yaml import YAML

from nurture.core.loader import parse_sequence
from nurture.core.model import MAX_STEPS
from nurture.core.yamltext import MAX_DEPTH

EXAMPLE = (Path(__file__).parents[2] / "sequences" / "sales-process.yaml").read_text("utf-8")
POSITION = re.compile(r"^bad\.yaml:(\d+):(\d+): \S")


def _bomb(levels: int) -> str:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for n in range(1, levels):
        refs = ", ".join([f"*a{n - 1}"] * 10)
        lines.append(f"a{n}: &a{n} [{refs}]")
    return "\n".join(lines) + "\n"


HOSTILE = [
    _bomb(9),
    "steps: " + "[" * 3000 + "]" * 3000,
    "steps: " + "{a: " * 500 + "1" + "}" * 500,
    "".join(" " * n + f"k{n}:\n" for n in range(400)),
    "wait: 99999999999999999999999999999999 days",
    "wait: 1" + "0" * 5000 + " days",
    "id: [1, 2]",
    "steps: 42",
    "steps: [{id: a, template: x.md, subject: {en: s}, wait: '2 weeks', wait: 0}]",
    "unknown_key: {deeply: {nested: [1, 2, {three: 3}]}}",
    "id: !!python/object:os.system 'echo hi'",
    "a: &a\n  <<: *a",
    "<<: *nowhere",
    "id: \x00",
    "\t- tab",
    "? [complex, key]\n: value",
    "id: &x sales\nname: *x\nversion: *x",
    "window: {days: [mon, funday], start: '25:00', end: 'noon'}",
    "skip: {holidays: XX, dates: [2026-02-30, not-a-date]}",
    'when: "' + "(" * 200 + "true" + ")" * 200 + '"',
]


def _check(text: str) -> None:
    loaded, problems = parse_sequence(text, "bad.yaml")
    lines = text.count("\n") + 2
    for problem in problems:
        found = POSITION.match(str(problem))
        assert found is not None, str(problem)
        line, column = int(found.group(1)), int(found.group(2))
        assert 1 <= line <= lines and column >= 1, str(problem)
        # The YAML library's own wording of where it was is not for a marketer.
        assert "<unicode string>" not in problem.message, str(problem)
        assert not re.search(r"position \d|\\x0a", problem.message), str(problem)
    if loaded is None:
        assert problems, "a refused file must say why"


@pytest.mark.parametrize("snippet", HOSTILE, ids=range(len(HOSTILE)))
def test_each_hostile_snippet_alone_and_inside_the_example(snippet: str) -> None:
    _check(snippet)
    _check(EXAMPLE + "\n" + snippet + "\n")
    _check(EXAMPLE.replace("steps:", snippet + "\nsteps:", 1))


def test_deep_nesting_and_alias_bombs_are_named() -> None:
    for text in (HOSTILE[0] + "steps: *a8\n", HOSTILE[1]):
        loaded, problems = parse_sequence(text, "bad.yaml")
        assert loaded is None
        assert any(f"{MAX_DEPTH} deep" in p.message or "aliases" in p.message for p in problems)


def test_an_absurd_wait_is_refused_at_its_key() -> None:
    text = EXAMPLE.replace("wait: 2 days", "wait: 999999999 days", 1)
    assert text != EXAMPLE
    loaded, problems = parse_sequence(text, "bad.yaml")
    assert loaded is None
    assert any("longer than 5 years" in p.message for p in problems), problems


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    cut=st.integers(min_value=0, max_value=len(EXAMPLE)),
    span=st.integers(min_value=0, max_value=40),
    noise=st.text(max_size=40),
    snippet=st.sampled_from(HOSTILE),
    how=st.sampled_from(["truncate", "overwrite", "splice"]),
)
def test_a_mutated_example_never_raises(
    cut: int, span: int, noise: str, snippet: str, how: str
) -> None:
    if how == "truncate":
        text = EXAMPLE[:cut]
    elif how == "overwrite":
        text = EXAMPLE[:cut] + noise + EXAMPLE[cut + span :]
    else:
        line_start = EXAMPLE.rfind("\n", 0, cut) + 1
        text = EXAMPLE[:line_start] + snippet + "\n" + EXAMPLE[line_start:]
    _check(text)


_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True),
    st.text(max_size=30),
)
_keys = st.sampled_from(
    [
        "id",
        "version",
        "name",
        "sender",
        "trigger",
        "steps",
        "window",
        "skip",
        "wait",
        "when",
        "template",
        "subject",
        "offer",
        "goal",
        "at",
        "x",
        "brand",
        "locale",
    ]
)
_documents = st.recursive(
    _scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=5), st.dictionaries(_keys, inner, max_size=6)),
    max_leaves=40,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(document=st.dictionaries(_keys, _documents, max_size=8))
def test_random_yaml_documents_never_raise(document: dict[str, Any]) -> None:
    buffer = io.StringIO()
    YAML(typ="safe", pure=True).dump(document, buffer)
    _check(buffer.getvalue())


@pytest.mark.parametrize(
    ("snippet", "tag"),
    [
        ("name: !!binary aGVsbG8AIHdvcmxk", "!!binary"),
        ("name: !!str 42", "!!str"),
        ("name: !custom value", "!custom"),
        ("name: !<tag:yaml.org,2002:str> 42", "!<tag:yaml.org,2002:str>"),
        ("name: ! plain", "!"),
        ("name: [a, !!int '7']", "!!int"),
    ],
)
def test_a_yaml_tag_is_refused_at_its_place(snippet: str, tag: str) -> None:
    """A tag makes the parser build what the format has no use for (``!!binary``
    put a NUL into a name): it is named where it is written, with what to do."""
    text = EXAMPLE.replace("\nname: Säljprocessen i fem mejl\n", f"\n{snippet}\n", 1)
    assert text != EXAMPLE
    line = text.splitlines().index(snippet) + 1
    loaded, problems = parse_sequence(text, "bad.yaml")
    assert loaded is None
    assert [str(p) for p in problems] == [
        f'bad.yaml:{line}:{snippet.index(tag[:2]) + 1}: YAML tags such as "{tag}" are not '
        "supported: write the value itself (in quotes to make it text)"
    ]


def test_an_exclamation_mark_in_text_is_no_tag() -> None:
    text = EXAMPLE.replace("\nname: Säljprocessen i fem mejl", "\nname: 'Hi! !!binary is text'", 1)
    assert text != EXAMPLE
    loaded, problems = parse_sequence(text, "ok.yaml")
    assert problems == [] and loaded is not None


def test_a_file_with_more_steps_than_a_series_can_have_is_refused_quickly() -> None:
    """Thousands of steps (generated by mistake) took seconds to check, each
    one's timing computed; more than MAX_STEPS is refused at ``steps``."""
    head = EXAMPLE[: EXAMPLE.index("\nsteps:")]
    step = "  - id: s{n}\n    wait: 261 weeks\n    template: welcome.md\n    subject: {{sv: Hej}}\n"
    steps = "".join(step.format(n=n) for n in range(MAX_STEPS + 1600))
    text = f"{head}\nsteps:\n{steps}"
    loaded, problems = parse_sequence(text, "bad.yaml")
    assert loaded is None
    line = text.splitlines().index("steps:") + 1
    assert [str(p) for p in problems] == [
        f"bad.yaml:{line}:1: steps: at most {MAX_STEPS} items here; this list has "
        f"{MAX_STEPS + 1600}"
    ]


@pytest.mark.parametrize(
    ("condition", "message"),
    [
        ("(" * 80 + "true" + ")" * 80, "the condition nests too deeply"),
        ("-" * 990 + "1 > 0", "the condition nests too deeply"),
        ("subscriber" + ".a" * 490, "the condition nests too deeply"),
        (" and ".join(["true"] * 400), "the condition is 3,595 characters long; at most 1,000"),
        ("9" * 5000 + " > 1", "the condition is 5,004 characters long; at most 1,000"),
    ],
)
def test_a_condition_too_deep_or_long_to_compile_is_a_problem_at_its_place(
    condition: str, message: str
) -> None:
    """These raised RecursionError or ValueError out of the loader: a
    traceback in validate, and the worker's reload (so every dispatch) failed."""
    text = EXAMPLE.replace("when: \"'customer' not in subscriber.tags\"", f'when: "{condition}"', 1)
    assert text != EXAMPLE
    line = next(n for n, t in enumerate(text.splitlines(), 1) if t.strip().startswith("when:"))
    loaded, problems = parse_sequence(text, "bad.yaml")
    assert loaded is None
    assert [str(p) for p in problems] == [
        f"bad.yaml:{line}:11: steps[case-study].when: {message}"
        + (
            ""
            if "characters" in message
            else " (brackets, filters or a long chain of and/or): write it more simply"
        )
    ]


@pytest.mark.parametrize(
    ("old", "new", "where"),
    [
        ("name: Säljprocessen i fem mejl", 'name: "S\\ud800"', "name"),
        (
            "checkout_url: https://shop.example.com/checkout/sales-audit",
            'checkout_url: "https://shop.example.com/\\udc80"',
            "steps[offer].offer.checkout_url",
        ),
    ],
)
def test_a_lone_surrogate_escape_is_a_problem_at_its_value(old: str, new: str, where: str) -> None:
    """A "\\ud800" escape in a double-quoted string made the file's content
    version (its JSON) fail with a traceback."""
    text = EXAMPLE.replace(old, new, 1)
    assert text != EXAMPLE
    line = next(n for n, t in enumerate(text.splitlines(), 1) if new in t)
    loaded, problems = parse_sequence(text, "bad.yaml")
    assert loaded is None
    [problem] = problems
    assert (problem.line, problem.message.split(": ")[0]) == (line, where), problem
    assert "not valid Unicode text: a lone surrogate" in problem.message


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("id: sales-process", "id: " + "a" * 101, "id: at most 100 characters; this one has 101"),
        (
            "- id: welcome",
            "- id: " + "b" * 120,
            f"steps[{'b' * 120}].id: at most 100 characters; this one has 120",
        ),
        (
            "template: welcome.md",
            "template: " + "c" * 300 + ".md",
            "steps[welcome].template: a template name is at most 200 characters",
        ),
    ],
)
def test_ids_and_template_names_fit_their_columns_and_the_file_system(
    old: str, new: str, message: str
) -> None:
    """Ids of 101-240 characters passed validate but do not fit the database's
    columns (100); longer ones and template names ended in 'File name too long'."""
    text = EXAMPLE.replace(old, new, 1)
    assert text != EXAMPLE
    loaded, problems = parse_sequence(text, "bad.yaml")
    assert loaded is None
    assert [p.message for p in problems] == [message]


@pytest.mark.parametrize(
    ("old", "new", "column", "message"),
    [
        (
            'dates: ["2026-12-24", "2026-12-31"]',
            "dates: [2026-02-30]",
            11,
            "2026-02-30 is not a valid date or time (day is out of range for month)",
        ),
        (
            'dates: ["2026-12-24", "2026-12-31"]',
            "dates: [2026-01-01T25:00:00]",
            11,
            "is not a valid date or time",
        ),
        ("version: 1 ", "version: 1" + "0" * 5000 + " ", 10, "is not a valid number"),
    ],
)
def test_an_unquoted_date_or_number_that_cannot_exist_is_named_at_its_place(
    old: str, new: str, column: int, message: str
) -> None:
    """The YAML library raised a bare ValueError for these: '1:1: invalid YAML
    (ValueError)', with no line and no reason."""
    text = EXAMPLE.replace(old, new, 1)
    assert text != EXAMPLE
    line = next(n for n, t in enumerate(text.splitlines(), 1) if new.strip() in t)
    loaded, problems = parse_sequence(text, "bad.yaml")
    assert loaded is None
    [problem] = problems
    assert (problem.line, problem.column) == (line, column), problem
    assert message in problem.message
