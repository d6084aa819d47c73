"""Broken files, samples and options never end in a traceback (through the real CLI).

Each case used to: a symlink loop among the sequence files (RuntimeError),
dates past the end of the calendar (OverflowError), an unknown time zone in
sample data (ZoneInfoNotFoundError), and a locale that is a path in sample
data (FileNotFoundError, and a file written outside the preview folder).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from tests.e2e.test_cli_authoring import run

SAMPLE = Path("sequences") / "sales-process.sample.yaml"


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("bad-samples")
    assert run("init", "work", cwd=base).returncode == 0
    return base / "work"


@pytest.fixture
def work(project: Path, tmp_path: Path) -> Path:
    """A fresh copy of the project for a test that edits it."""
    copy = tmp_path / "work"
    shutil.copytree(project, copy, symlinks=True)
    return copy


def no_traceback(result: object) -> None:
    text = getattr(result, "stdout", "") + getattr(result, "stderr", "")
    assert "Traceback" not in text, text


# -- 1. a symlink loop -------------------------------------------------------------


def test_a_symlink_loop_is_a_problem_in_that_file(work: Path) -> None:
    os.symlink("loop2.yaml", work / "sequences" / "loop1.yaml")
    os.symlink("loop1.yaml", work / "sequences" / "loop2.yaml")
    validated = run("validate", cwd=work)
    no_traceback(validated)
    assert validated.returncode == 1
    assert "sequences/loop1.yaml:1:1: a symlink loop" in validated.stdout
    assert "sequences/loop2.yaml:1:1: a symlink loop" in validated.stdout
    assert "2 problem(s) in 3 file(s)" in validated.stderr  # sales-process validates

    named = run("validate", "sequences/loop1.yaml", cwd=work)
    no_traceback(named)
    assert named.returncode == 1
    assert "no such file" not in named.stderr
    assert "sequences/loop1.yaml:1:1: a symlink loop" in named.stdout

    simulated = run("simulate", "sales-process", "--start", "2026-11-27T09:00", cwd=work)
    no_traceback(simulated)
    assert simulated.returncode == 0, simulated.stderr
    previewed = run("preview", "sales-process", "--step", "welcome", cwd=work)
    no_traceback(previewed)
    assert previewed.returncode == 0, previewed.stderr
    by_path = run("simulate", "sequences/loop2.yaml", cwd=work)
    no_traceback(by_path)
    assert by_path.returncode == 1
    assert "sequences/loop2.yaml:1:1: a symlink loop" in by_path.stderr
    assert "loop1.yaml" not in by_path.stderr  # that file, not a look-up by id


# -- 2. the end of the calendar ----------------------------------------------------


def test_a_step_past_year_9999_is_never_sent(project: Path) -> None:
    for args in (
        ("--now", "9999-12-30T10:00:00+00:00", "simulate", "sales-process", "--json"),
        ("simulate", "sales-process", "--start", "9999-12-28T10:00+00:00", "--json"),
    ):
        result = run(*args, cwd=project)
        no_traceback(result)
        assert result.returncode == 0, result.stderr
        timeline = json.loads(result.stdout)
        assert timeline[-1]["action"] == "never"
        assert "beyond the calendar (year 9999)" in timeline[-1]["reason"]


@pytest.mark.parametrize(
    ("args", "shown"),
    [
        (("--start", "0001-01-01T00:00+05:00"), "--start: '0001-01-01T00:00+05:00'"),
        (("--start", "9999-12-31T23:30+00:00"), "--start: '9999-12-31T23:30+00:00'"),
    ],
)
def test_a_start_outside_the_calendar_is_refused(
    project: Path, args: tuple[str, ...], shown: str
) -> None:
    result = run("simulate", "sales-process", *args, cwd=project)
    no_traceback(result)
    assert result.returncode == 2
    assert f"error: {shown} is outside the years 1 to 9999" in result.stderr


def test_many_long_waits_validate_and_simulate(work: Path) -> None:
    steps = "".join(
        f"  - id: s{i}\n    wait: 261 weeks\n    subject: Hi\n    template: welcome.md\n"
        for i in range(99)  # 100 steps, the most a sequence may have
    )
    (work / "sequences" / "long.yaml").write_text(
        "version: 1\nid: long\nname: Long\nlocale: en\ntimezone: Europe/Stockholm\n"
        "sender: {name: Anna, email: anna@example.com}\nsteps:\n" + steps
        + "  - id: offer\n    wait: 261 weeks\n    subject: Offer\n    template: offer.html\n"
        "    offer: {name: Review, price: 5 kr, checkout_url: 'https://shop.example.com/c'}\n",
        encoding="utf-8",
    )  # fmt: skip
    # 100 waits of five years: from 9600 they run past the calendar's end.
    result = run("simulate", "long", "--start", "9600-11-27T09:00", "--json", cwd=work)
    no_traceback(result)
    assert result.returncode == 0, result.stderr
    timeline = json.loads(result.stdout)
    assert timeline[-1]["action"] == "never"
    assert "beyond the calendar (year 9999)" in timeline[-1]["reason"]


# -- 3. an unknown time zone in sample data ----------------------------------------

MARS = "unknown time zone 'Mars/Base' (use an IANA name such as Europe/Stockholm)"


def test_data_with_an_unknown_time_zone_is_refused(project: Path, tmp_path: Path) -> None:
    data = tmp_path / "bad.yaml"
    data.write_text("- email: a@b.com\n  timezone: Mars/Base\n", encoding="utf-8")
    result = run("simulate", "sales-process", "--data", str(data), cwd=project)
    no_traceback(result)
    assert result.returncode == 1
    assert f"bad.yaml:2:3: subscriber 1: timezone: {MARS}" in result.stderr


def _edit_sample(work: Path, old: str, new: str) -> int:
    """Replace ``old`` in the sample file; returns the line it is on."""
    path = work / SAMPLE
    text = path.read_text(encoding="utf-8")
    assert old in text
    path.write_text(text.replace(old, new, 1), encoding="utf-8")
    return text[: text.index(old)].count("\n") + 1


def test_the_sample_file_time_zone_is_checked(work: Path) -> None:
    line = _edit_sample(work, "timezone: America/New_York", "timezone: Mars/Base")
    validated = run("validate", cwd=work)
    no_traceback(validated)
    assert validated.returncode == 1
    assert f"{SAMPLE}:{line}:3: subscriber 2: timezone: {MARS}" in validated.stdout
    previewed = run("preview", "sales-process", cwd=work)
    assert previewed.returncode == 1 and MARS in previewed.stderr


# -- 4. a locale that is a path ----------------------------------------------------

LOCALE = "unknown locale '../../x' (e.g. sv, en-GB)"


def test_a_locale_that_is_a_path_is_refused_everywhere(work: Path, tmp_path: Path) -> None:
    data = tmp_path / "bad.yaml"
    data.write_text('- email: a@b.com\n  locale: "../../x"\n', encoding="utf-8")
    for command in ("preview", "simulate"):
        result = run(command, "sales-process", "--data", str(data), cwd=work)
        no_traceback(result)
        assert result.returncode == 1
        assert f"bad.yaml:2:3: subscriber 1: locale: {LOCALE}" in result.stderr

    option = run("preview", "sales-process", "--locale", "../../x", cwd=work)
    no_traceback(option)
    assert option.returncode == 2
    assert f"--locale: {LOCALE}" in option.stderr

    line = _edit_sample(work, "locale: en\n", 'locale: "../../x"\n')
    for args in (("validate",), ("preview", "sales-process")):
        result = run(*args, cwd=work)
        no_traceback(result)
        assert result.returncode == 1
        assert f"{SAMPLE}:{line}:3: subscriber 2: locale: {LOCALE}" in result.stdout + result.stderr
    assert not list(work.rglob("x.*")) and not list(work.parent.glob("x.*"))
