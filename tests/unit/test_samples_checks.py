"""Sample subscribers get the time zone and locale checks real subscribers get.

An unknown zone used to pass ``validate`` and end ``simulate --data`` in a
ZoneInfoNotFoundError; a locale such as ``../../x`` went into ``preview``'s
output file names. Both are now problems at their ``file:line:column``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from nurture.authoring.workbench import find_sequence, preview_sequence
from nurture.core.loader import SYMLINK_LOOP
from nurture.core.samples import read_subscribers, samples_for
from nurture.core.subscriber import Subscriber
from nurture.errors import NurtureError, SequenceError
from tests.factories import example_workdir, make_sequence

TWO = """\
# Two sample subscribers.
- email: karin@example.com
  timezone: Europe/Stockholm
- email: a@b.com
  name: Mars
  timezone: Mars/Base
"""


def problems(path: Path, text: str) -> list[str]:
    path.write_text(text, encoding="utf-8")
    with pytest.raises(SequenceError) as refused:
        read_subscribers(path)
    return [str(d) for d in refused.value.diagnostics]


@pytest.fixture
def here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_an_unknown_time_zone_is_refused_at_its_line(here: Path) -> None:
    assert problems(here / "bad.yaml", TWO) == [
        "bad.yaml:6:3: subscriber 2: timezone: unknown time zone 'Mars/Base' "
        "(use an IANA name such as Europe/Stockholm)"
    ]


def test_a_near_miss_gets_the_hint_subscribers_get(here: Path) -> None:
    found = problems(here / "one.yaml", "email: a@b.com\ntimezone: europe/stockholm\n")
    assert found == [
        "one.yaml:2:1: subscriber 1: timezone: unknown time zone 'europe/stockholm' "
        "(did you mean 'Europe/Stockholm'?)"
    ]


def test_a_misspelt_key_gets_the_nearest_known_one(here: Path) -> None:
    text = "- email: a@b.com\n  tag: [b2b]\n- email: c@d.com\n  colour: red\n"
    assert problems(here / "keys.yaml", text) == [
        "keys.yaml:2:3: subscriber 1: tag: unknown key 'tag' — did you mean 'tags'?",
        "keys.yaml:4:3: subscriber 2: colour: unknown key 'colour' (known keys here: email, "
        "name, first_name, locale, timezone, tags, attributes, trigger)",
    ]
    trigger = "email: a@b.com\ntrigger: {event: x, propertys: {}}\n"
    [message] = problems(here / "trigger.yaml", trigger)
    assert "unknown key 'propertys' — did you mean 'properties'?" in message


@pytest.mark.parametrize("locale", ["../../x", "en/../../../etc", "x" * 300, "/tmp/y"])
def test_a_locale_that_is_no_locale_is_refused(here: Path, locale: str) -> None:
    found = problems(here / "bad.yaml", f"- email: a@b.com\n  locale: {locale!r}\n")
    assert found == [
        f"bad.yaml:2:3: subscriber 1: locale: unknown locale {locale!r} (e.g. sv, en-GB)"
    ]


def test_every_problem_is_reported(here: Path) -> None:
    text = "- email: a@b.com\n  locale: '../x'\n  timezone: Mars/Base\n  colour: red\n"
    found = problems(here / "bad.yaml", text)
    assert [line.split(": ")[0:3] for line in found] == [
        ["bad.yaml:2:3", "subscriber 1", "locale"],
        ["bad.yaml:3:3", "subscriber 1", "timezone"],
        ["bad.yaml:4:3", "subscriber 1", "colour"],
    ]


def test_locales_are_normalised_and_blanks_are_not_given(here: Path) -> None:
    path = here / "ok.yaml"
    path.write_text(
        "- {email: a@b.com, locale: sv_se, timezone: Asia/Tokyo}\n"
        "- {email: c@d.com, locale: ' ', timezone: ''}\n",
        encoding="utf-8",
    )
    first, second = read_subscribers(path)
    assert (first.locale, first.timezone) == ("sv-SE", "Asia/Tokyo")
    assert (second.locale, second.timezone) == (None, None)


def test_the_sample_file_beside_a_sequence_is_checked(here: Path) -> None:
    sequence = make_sequence(id="demo")
    (here / "demo.yaml").write_text("", encoding="utf-8")
    (here / "demo.sample.yaml").write_text(TWO, encoding="utf-8")
    with pytest.raises(SequenceError, match=r"demo\.sample\.yaml:6:3: .*Mars/Base"):
        samples_for(sequence, here / "demo.yaml")


def test_a_sample_file_in_a_symlink_loop_is_reported(here: Path) -> None:
    sequence = make_sequence(id="demo")
    os.symlink("other.yaml", here / "demo.sample.yaml")
    os.symlink("demo.sample.yaml", here / "other.yaml")
    with pytest.raises(SequenceError) as refused:
        samples_for(sequence, here / "demo.yaml")
    assert [str(d) for d in refused.value.diagnostics] == [f"demo.sample.yaml:1:1: {SYMLINK_LOOP}"]
    with pytest.raises(SequenceError, match="symlink loop"):
        read_subscribers(here / "other.yaml")


@pytest.mark.parametrize("where", ["option", "subscriber"])
def test_preview_never_builds_a_path_from_an_unchecked_locale(tmp_path: Path, where: str) -> None:
    """Whoever calls it, ``preview_sequence`` checks the locale it names files with."""
    settings = example_workdir(tmp_path)
    loaded = find_sequence(settings, tmp_path, "sales-process")
    person = Subscriber(email="a@b.com", locale="../../x" if where == "subscriber" else None)
    out = tmp_path / "out"
    with pytest.raises(NurtureError, match=r"unknown locale '\.\./\.\./x'"):
        preview_sequence(
            settings,
            loaded,
            out,
            step_id="welcome",
            locale="../../x" if where == "option" else None,
            subscriber=person,
        )
    assert not out.exists()  # refused before a folder is made
    written = preview_sequence(settings, loaded, out, step_id="welcome", locale="en_gb")
    assert [p.name for p in written] == [
        "welcome.en-GB.html",
        "welcome.en-GB.txt",
        "welcome.en-GB.eml",
    ]
    assert all(p.parent == out / "sales-process" for p in written)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "email: a@b.com\nname: !!binary aGVsbG8A\n",
            'bad.yaml:2:7: YAML tags such as "!!binary" are not supported',
        ),
        # An unclosed bracket or quote is named where it opens, not at the end.
        (
            "email: a@b.com\nname: [unclosed\n",
            "bad.yaml:2:7: cannot read sample data: a '[' list that is not closed",
        ),
        (
            "- email: a@b.com\n  name: 'x\n",
            "bad.yaml:2:9: cannot read sample data: a quote that is not closed",
        ),
        ("email: " + "[" * 3000 + "]" * 3000 + "\n", "bad.yaml:1:58: the file nests"),
        (
            "- email: a@b.com\n  name: Bo\x08b\n",
            "bad.yaml:2:11: cannot read sample data: a character YAML does not allow (U+0008,",
        ),
        (
            "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
            + "".join(
                f"{chr(98 + n)}: &{chr(98 + n)} [{', '.join(['*' + chr(97 + n)] * 10)}]\n"
                for n in range(6)
            ),
            "bad.yaml:1:1: the file holds more than 100,000 values",
        ),
    ],
)
def test_a_sample_file_that_is_bad_yaml_is_named_at_its_place(
    here: Path, text: str, expected: str
) -> None:
    """Sample files are read with the sequence files' care: a syntax error at
    its line, tags, deep nesting and alias bombs refused, never a traceback."""
    found = problems(here / "bad.yaml", text)
    assert len(found) == 1 and found[0].startswith(expected), found


def test_a_sequence_id_two_files_use_is_refused_by_id_not_taken_from_the_first(
    tmp_path: Path,
) -> None:
    """``preview``/``simulate`` by id used whichever file came first, while
    ``validate`` said the id was taken twice: now both name the clash."""
    settings = example_workdir(tmp_path)
    original = settings.sequences_dir / "sales-process.yaml"
    copy = settings.sequences_dir / "zz-copy.yaml"
    copy.write_text(original.read_text("utf-8").replace("name: ", "name: Copy of ", 1))
    with pytest.raises(SequenceError) as refused:
        find_sequence(settings, tmp_path, "sales-process")
    [problem] = refused.value.diagnostics
    assert problem.file.endswith("zz-copy.yaml")
    assert problem.message.startswith("sequence id 'sales-process' is already used by ")
    assert problem.message.endswith("sales-process.yaml")
    # By file name each is still found.
    assert find_sequence(settings, tmp_path, str(copy)).sequence.name.startswith("Copy of ")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("- email: not-an-email\n", "bad.yaml:1:3: subscriber 1: email: invalid email address"),
        (
            "- email: a@b.se\n  name: 'Ann\\x1b[31m'\n- email: c@d.se\n  name: \"Bo\\u2028Ek\"\n",
            "bad.yaml:4:3: subscriber 2: name: contains a control character or line break",
        ),
        (
            '- email: a@b.se\n  attributes: {company: "x\\ud800"}\n',
            "bad.yaml:2:16: not valid Unicode text: a lone surrogate",
        ),
        ("".join(f"- email: a{n}@b.se\n" for n in range(51)), "bad.yaml:1:1: at most 50 sample"),
    ],
)
def test_sample_subscribers_get_the_checks_a_message_needs(
    here: Path, text: str, expected: str
) -> None:
    """validate passed these and preview then failed with a traceback
    (an address no header can hold, a surrogate); 2,000 samples took > 30 s."""
    found = problems(here / "bad.yaml", text)
    assert len(found) == 1 and found[0].startswith(expected), found


def test_a_name_too_long_for_the_file_system_is_no_sequence(tmp_path: Path) -> None:
    settings = example_workdir(tmp_path)
    with pytest.raises(NurtureError, match="no sequence"):
        find_sequence(settings, tmp_path, "a" * 300)
