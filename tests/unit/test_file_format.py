"""The sequence file format: every error names the right file:line:column."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nurture.core.loader import load_sequences, parse_sequence
from nurture.core.schedule import Delay, SkipDates
from nurture.core.schema import sequence_schema_text

ROOT = Path(__file__).resolve().parents[2]

GOOD = """\
version: 1
id: demo
name: Demo
sender: {name: Anna, email: anna@example.com}
timezone: Europe/Stockholm
send_window: {days: [mon, tue, wed, thu, fri], start: "08:00", end: "18:00"}
steps:
  - id: welcome
    wait: 0
    subject: Hi
    template: welcome.md
  - id: offer
    wait: 2 days
    at: "09:30"
    subject: Offer
    template: offer.html
    offer: {name: Audit, price: "100 kr", checkout_url: "https://shop.example.com/c"}
"""


def problems(text: str) -> list[str]:
    loaded, diagnostics = parse_sequence(text, "seq.yaml")
    assert (loaded is None) == bool(diagnostics)
    return [str(d) for d in diagnostics]


def test_good_file_loads_with_version_hash() -> None:
    loaded, diagnostics = parse_sequence(GOOD, "seq.yaml")
    assert diagnostics == []
    assert loaded is not None
    assert loaded.sequence.steps[1].wait == Delay(amount=2, unit="days")
    assert len(loaded.version) == 12
    # Comments and formatting do not change the version; content does.
    again, _ = parse_sequence("# comment\n" + GOOD, "seq.yaml")
    changed, _ = parse_sequence(GOOD.replace("subject: Hi", "subject: Hello"), "seq.yaml")
    assert again is not None and changed is not None
    assert again.version == loaded.version != changed.version


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("0", Delay(amount=0)),
        ("30 minutes", Delay(amount=30, unit="minutes")),
        ("4 hours", Delay(amount=4, unit="hours")),
        ("2 days", Delay(amount=2, unit="days")),
        ("1 week", Delay(amount=1, unit="weeks")),
        ("30m", Delay(amount=30, unit="minutes")),
        ("4h", Delay(amount=4, unit="hours")),
        ("2d", Delay(amount=2, unit="days")),
        ("1w", Delay(amount=1, unit="weeks")),
    ],
)
def test_wait_forms(text: str, value: Delay) -> None:
    assert Delay.parse(text) == value


def test_bad_wait_named_at_its_key() -> None:
    assert problems(GOOD.replace("wait: 2 days", "wait: 2 fortnights")) == [
        "seq.yaml:13:5: steps[offer].wait: invalid wait '2 fortnights': use 0, '30 minutes', "
        "'4 hours', '2 days', '1 week' or the compact '30m', '4h', '2d', '1w'"
    ]


def test_bare_number_wait_is_ambiguous() -> None:
    [message] = problems(GOOD.replace("wait: 2 days", "wait: 2"))
    assert message.startswith("seq.yaml:13:5: steps[offer].wait: a bare number is ambiguous")


def test_unknown_key_named_at_its_line() -> None:
    text = GOOD.replace("    subject: Hi\n", "    subject: Hi\n    colour: red\n")
    assert problems(text) == [
        "seq.yaml:11:5: steps[welcome].colour: unknown key 'colour' (known keys here: id, "
        "wait, at, when, subject, preheader, template, send_window, skip_dates, offer)"
    ]


def test_missing_key_points_at_the_step() -> None:
    text = GOOD.replace("    subject: Hi\n", "")
    assert problems(text) == [
        "seq.yaml:8:5: steps[welcome].subject: missing required key 'subject'"
    ]


def test_duplicate_key_reported_with_position() -> None:
    [message] = problems(GOOD.replace("name: Demo\n", "name: Demo\nname: Again\n"))
    assert message.startswith("seq.yaml:4:1:")
    assert "duplicate key" in message


def test_yaml_syntax_error_position() -> None:
    [message] = problems(GOOD.replace("  - id: offer", "  - id: [offer"))
    assert message.startswith("seq.yaml:")
    line = int(message.split(":")[1])
    assert 12 <= line <= 18


@pytest.mark.parametrize(
    ("old", "new", "where", "hint"),
    [
        ("  - id: offer", "  - id: [offer", "seq.yaml:12:9:", "a '[' list that is not closed"),
        ("sender: {name", "sender: {{name", "seq.yaml:4:9:", "a '{' mapping that is not closed"),
        ("name: Demo", "name: 'Demo", "seq.yaml:3:7:", "a quote that is not closed"),
        ("subject: Offer", "subject: 'Offer", "seq.yaml:15:14:", "a quote that is not closed"),
    ],
)
def test_an_unclosed_bracket_or_quote_is_named_where_it_opens(
    old: str, new: str, where: str, hint: str
) -> None:
    # The parser gives up further down (often at the end of the file); the
    # message names that place too.
    [message] = problems(GOOD.replace(old, new))
    assert message.startswith(f"{where} {hint}"), message
    assert " at line " in message, message


@pytest.mark.parametrize(
    ("old", "new", "where", "cause"),
    [
        # A quote inside a quoted value ends it early; the rest is "more text".
        ("subject: Hi", "subject: 'Don't miss it'", "seq.yaml:10:18:", "text after the closing"),
        ("subject: Offer", 'subject: "The "best" offer"', "seq.yaml:15:19:", "text after the"),
        ("name: Demo", "name: 'Demo' (beta)", "seq.yaml:3:12:", "text after the closing quote"),
        # A closing quote left out: the value runs on to the next quote of its
        # kind, lines below, where the parser stumbles.
        ("name: Demo", 'name: "Demo', "seq.yaml:3:7:", "a quote that is not closed on its line"),
        ("subject: Hi", 'subject: "Hi', "seq.yaml:10:14:", "a quote that is not closed on"),
    ],
)
def test_a_quote_that_ends_a_value_too_early_or_too_late_is_named_where_it_is(
    old: str, new: str, where: str, cause: str
) -> None:
    # Without this, both were "the indentation does not line up" (or "a ':'
    # YAML did not expect") at the place the parser gave up.
    [message] = problems(GOOD.replace(old, new, 1))
    assert message.startswith(f"{where} {cause}"), message
    assert "indentation" not in message, message


@pytest.mark.parametrize(
    ("old", "new", "where", "code"),
    [
        ("name: Demo", "name: De\x07mo", "seq.yaml:3:9:", "U+0007, a control character"),
        (
            "    subject: Hi",
            "    subject: \x00Hi",
            "seq.yaml:10:14:",
            "U+0000, a control character",
        ),
        ("steps:", "# a comment \x1b\nsteps:", "seq.yaml:7:13:", "U+001B, a control character"),
        ("name: Demo", "name: Demo\ufffe", "seq.yaml:3:11:", "U+FFFE"),
    ],
)
def test_a_character_yaml_does_not_allow_is_named_at_its_place(
    old: str, new: str, where: str, code: str
) -> None:
    # Invisible in most editors (pasted from a terminal or a PDF): the message
    # says where it is, which it is and what to write instead.
    [message] = problems(GOOD.replace(old, new, 1))
    assert message.startswith(f"{where} a character YAML does not allow ({code})"), message
    assert "position" not in message and "\\x0a" not in message, message


def test_yaml_12_keeps_on_and_times_as_strings() -> None:
    # YAML 1.1 loaders turn `on` into True and 1:30 into 90; ruamel does not.
    [message] = problems(GOOD.replace("wait: 2 days", "wait: 1:30"))
    assert "invalid wait '1:30'" in message


def test_at_outside_window_is_an_error_at_the_at_key() -> None:
    assert problems(GOOD.replace('at: "09:30"', 'at: "19:00"')) == [
        "seq.yaml:14:5: at 19:00 is outside the send window 08:00-18:00"
    ]


def test_step_window_override_allows_its_own_at() -> None:
    text = GOOD.replace(
        'at: "09:30"', 'at: "19:00"\n    send_window: {start: "18:00", end: "21:00"}'
    )
    assert problems(text) == []


def test_must_end_in_offer() -> None:
    text = GOOD.replace(
        '    offer: {name: Audit, price: "100 kr", checkout_url: "https://shop.example.com/c"}\n',
        "",
    )
    [message] = problems(text)
    assert message.startswith("seq.yaml:12:5: the sequence must end in an offer step")


@pytest.mark.parametrize(
    "url", ["http://shop.example.com/c", "/checkout", "ftp://shop.example.com/c"]
)
def test_checkout_url_must_be_absolute_https(url: str) -> None:
    [message] = problems(GOOD.replace("https://shop.example.com/c", url))
    assert message.startswith("seq.yaml:17:")
    assert "checkout_url must be an absolute https:// URL" in message


def test_duplicate_step_ids() -> None:
    text = GOOD.replace("id: offer", "id: welcome")
    assert problems(text) == ["seq.yaml:12:5: duplicate step id 'welcome' (first at step 1)"]


def test_invalid_condition_named_at_when() -> None:
    text = GOOD.replace("    subject: Offer\n", '    when: "not ("\n    subject: Offer\n')
    [message] = problems(text)
    assert message.startswith("seq.yaml:15:11: steps[offer].when: invalid condition 'not ('")


def test_condition_must_name_an_earlier_step() -> None:
    text = GOOD.replace(
        "    subject: Offer\n", "    when: \"clicked('later')\"\n    subject: Offer\n"
    )
    assert problems(text) == [
        "seq.yaml:15:11: steps[offer].when: condition refers to 'later', which is not an "
        "earlier step of this sequence"
    ]


@pytest.mark.parametrize(
    ("old", "new", "needle"),
    [
        ("timezone: Europe/Stockholm", "timezone: Mars/Olympus", "unknown time zone"),
        ("version: 1", "version: 2", "steps" if False else "version"),
        ('start: "08:00"', 'start: "8am"', "invalid time '8am'"),
        ('start: "08:00"', 'start: "19:00"', "must be before end"),
        ("days: [mon,", "days: [monday,", "days"),
        ("email: anna@example.com", "email: not-an-address", "invalid email address"),
    ],
)
def test_field_errors(old: str, new: str, needle: str) -> None:
    assert old in GOOD
    found = problems(GOOD.replace(old, new))
    assert found, "expected a problem"
    assert any(needle in message for message in found), found


def test_unknown_holiday_country() -> None:
    [message] = problems(GOOD.replace("steps:", "skip_dates: {holidays: XX}\nsteps:"))
    assert message.startswith("seq.yaml:7:")
    assert "unknown holiday country 'XX'" in message


@pytest.mark.parametrize(
    ("code", "needle"),
    [
        ("SE-XX", "unknown subdivision 'XX' for SE"),
        ("us-zz", "unknown subdivision 'zz' for US"),
        ("NYSE", "unknown holiday country 'NYSE'"),  # a stock exchange's calendar
        ("S E", "unknown holiday country 'S E'"),
        ("SE-", "no subdivision after the dash in 'SE-': write SE"),
        ("us-", "no subdivision after the dash in 'us-': write US, or a subdivision such as US-AK"),
    ],
)
def test_unknown_holiday_codes(code: str, needle: str) -> None:
    found = problems(GOOD.replace("steps:", f"skip_dates: {{holidays: '{code}'}}\nsteps:"))
    assert any(needle in message for message in found), found


@pytest.mark.parametrize(("code", "stored"), [("us-ny", "US-NY"), ("GBR", "GBR"), ("se", "SE")])
def test_known_holiday_codes_are_kept_in_capitals(code: str, stored: str) -> None:
    assert SkipDates(holidays=code).holidays == stored


def test_duplicate_sequence_ids_across_files(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(GOOD)
    (tmp_path / "b.yaml").write_text(GOOD)
    (tmp_path / "demo.sample.yaml").write_text("- {email: a@example.com}\n")
    loaded, diagnostics = load_sequences([tmp_path])
    assert list(loaded) == ["demo"]
    assert len(diagnostics) == 1
    assert "sequence id 'demo' is already used by" in diagnostics[0].message
    assert diagnostics[0].line == 2


def test_example_sequence_is_valid() -> None:
    loaded, diagnostics = load_sequences([ROOT / "sequences"])
    assert [str(d) for d in diagnostics] == []
    assert "sales-process" in loaded


def test_committed_schema_is_current() -> None:
    committed = (ROOT / "schemas" / "sequence.schema.json").read_text(encoding="utf-8")
    assert committed == sequence_schema_text(), "run `make schema` to regenerate it"
    assert json.loads(committed)["title"].startswith("nurture sequence")
