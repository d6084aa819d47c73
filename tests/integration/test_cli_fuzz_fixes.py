"""What the command-line fuzzing found (findings 5-8, 12, 14 and part of 15),
through the real ``nurture`` command tree: bad input gets one clear line and
exit 1 or 2, never a traceback and never a stored value that breaks later.

SQLite only: each test works in a folder ``nurture init`` wrote, on its
``nurture.db``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from nurture.cli.main import app
from tests.e2e.folders import init_live

NOW = "2026-11-27T14:30:00Z"
LONG = 100_000


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder ``nurture init`` wrote, the example enabled, one subscriber in it."""
    folder = init_live(tmp_path / "shop")
    monkeypatch.chdir(folder)
    added = nurture("--now", NOW, "subscribers", "add", "k@example.com", "--tag", "b2b")
    assert added.exit_code == 0, added.output
    return folder


def nurture(*args: str, input: str | None = None) -> Any:
    return CliRunner().invoke(app, list(args), input=input)


def refused(result: Any, code: int, *words: str) -> str:
    """``result`` ended with exit ``code`` and one clean error naming ``words``."""
    output: str = result.output
    assert result.exit_code == code, output
    assert result.exception is None or isinstance(result.exception, SystemExit), output
    assert "Traceback" not in output, output
    for word in words:
        assert word in output, output
    return output


# ---------------------------------------------------------------- 5. --now and --at


@pytest.mark.parametrize(
    "command",
    [
        ("dispatch",),
        ("explain", "k@example.com"),
        ("subscribers", "add", "late@example.com", "--tag", "b2b"),
        (
            "events",
            "add",
            "purchase",
            "--email",
            "k@example.com",
            "--product",
            "x",
            "--amount",
            "1",
            "--currency",
            "SEK",
        ),
    ],
)
def test_a_now_near_the_end_of_the_calendar_is_refused_where_the_engine_works(
    project: Path, command: tuple[str, ...]
) -> None:
    result = nurture("--now", "9999-12-30T10:00:00Z", *command)
    refused(result, 2, "--now", "too late", "8999-12-31")


def test_subscribers_add_stores_no_enrollment_in_year_9999_or_year_1(project: Path) -> None:
    for moment in ("9999-12-30T10:00:00Z", "0001-01-03T00:00:00Z"):
        refused(nurture("--now", moment, "subscribers", "add", "far@example.com"), 2, "--now")
    refused(nurture("subscribers", "show", "far@example.com"), 1, "no subscriber")


def test_a_now_past_the_calendar_is_a_usage_error(project: Path) -> None:
    result = nurture("--now", "9999-12-31T23:59:59Z", "dispatch")
    refused(result, 2, "--now", "too late", "9999-12-30")


def test_simulate_still_takes_a_now_at_the_end_of_the_calendar(project: Path) -> None:
    result = nurture("--now", "9999-12-30T10:00:00Z", "simulate", "sales-process", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)[-1]["action"] == "never"


def test_events_add_refuses_a_purchase_in_year_9999(project: Path) -> None:
    result = nurture(
        "events", "add", "purchase", "--email", "k@example.com", "--product", "x",
        "--amount", "1", "--currency", "SEK", "--at", "9999-12-31T23:59:59Z",
    )  # fmt: skip
    refused(result, 2, "--at", "too late")


# ---------------------------------------------------------------- 6. --limit, --offset


@pytest.mark.parametrize(
    "command",
    [
        ("sends", "list", "--limit", str(2**63)),
        ("subscribers", "list", "--limit", str(2**63)),
        ("subscribers", "list", "--offset", str(10**23)),
        ("plan", "--limit", str(2**63)),
    ],
)
def test_a_huge_limit_or_offset_is_a_usage_error(project: Path, command: tuple[str, ...]) -> None:
    refused(nurture(*command), 2, command[-2])


# ---------------------------------------------------------------- 7. log --until


def test_log_until_the_last_day_is_a_clean_error(project: Path) -> None:
    output = refused(nurture("log", "--until", "9999-12-31"), 2, "--until", "9999-12-30")
    assert "SendLogError" not in output


# ---------------------------------------------------------------- 8. paths


def test_preview_out_a_file_or_a_long_name_is_a_clean_error(project: Path) -> None:
    (project / "afile").write_text("")
    refused(
        nurture("preview", "sales-process", "--out", "afile"), 1, "afile is a file, not a folder"
    )
    refused(nurture("preview", "sales-process", "--out", "afile/x"), 1, "afile is a file")
    output = refused(nurture("preview", "sales-process", "--out", "p" * 300), 1, "too long")
    assert "p" * 100 not in output


def test_init_over_a_file_or_with_a_long_name_is_a_clean_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "f").write_text("")
    refused(nurture("init", "f"), 1, "f is a file, not a folder")
    refused(nurture("init", "n" * 300), 1, "too long")


# ---------------------------------------------------------------- 12. admin e-mail


@pytest.mark.parametrize("email", ["not-an-email", "a@b.c\r\nBcc: x@y.z"])
def test_admin_create_user_checks_the_email(project: Path, email: str) -> None:
    result = nurture(
        "admin", "create-user", "bob", "--email", email, input="Sup3rSecretPassw0rd!\n"
    )
    refused(result, 1, "--email", "invalid email address")
    assert "bob" not in nurture("admin", "list-users").output

    good = nurture(
        "admin", "create-user", "ann", "--email", " Ann@Example.com ",
        input="Sup3rSecretPassw0rd!\n",
    )  # fmt: skip
    assert good.exit_code == 0, good.output
    assert "ann@example.com" in nurture("admin", "list-users").output


# ---------------------------------------------------------------- 14. a line with no end

# Runs the import in a fresh interpreter (this one's peak memory says nothing),
# with its address space capped so that reading an endless file fails fast if
# it is held in memory; prints JSON: per file [exit code, output], and the peak
# RSS growth in bytes over a first, small import.
PROBE = """
import json, resource, sys
from typer.testing import CliRunner
import nurture.cli.main

folder, *files = sys.argv[1:]
cap = 2 * 1024**3
resource.setrlimit(resource.RLIMIT_AS, (cap, cap))

def peak():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

def run(path):
    result = CliRunner().invoke(
        nurture.cli.main.app, ["--dir", folder, "subscribers", "import", path]
    )
    return [result.exit_code, result.output[-400:]]

report = {"small": run(files[0])}
before = peak()
report["files"] = [run(path) for path in files[1:]]
report["growth"] = peak() - before
print(json.dumps(report))
"""


def test_import_of_a_file_without_line_breaks_keeps_memory_bounded(project: Path) -> None:
    small = project / "small.csv"
    small.write_text("email,name\nsmall@example.com,Small\n", encoding="utf-8")
    big = project / "big.csv"
    with big.open("w", encoding="ascii") as handle:  # 50 MB, no line break
        handle.write("email,name")
        for _ in range(50):
            handle.write("x" * 1_000_000)
    endless = project / "zero.csv"
    endless.symlink_to("/dev/zero")

    answer = subprocess.run(
        [sys.executable, "-c", PROBE, str(project), str(small), str(big), str(endless)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert answer.returncode == 0, answer.stderr[-2000:]
    report = json.loads(answer.stdout)
    assert report["small"][0] == 0, report
    for (code, output), name in zip(report["files"], ("big.csv", "zero.csv"), strict=True):
        assert code == 1, output
        assert f"{name}:1: the line is longer than" in output, output
        assert "Traceback" not in output
    # One bounded line (17 MB) at a time, not the 50 MB file or /dev/zero.
    assert report["growth"] < 80 * 1024 * 1024, report


# ---------------------------------------------------------------- 15. unclear messages


def test_a_long_source_is_named_as_the_option(project: Path) -> None:
    result = nurture("subscribers", "add", "s@example.com", "--source", "s" * 101)
    output = refused(result, 1, "--source is longer than 100 characters")
    assert "consent source" not in output


def test_a_huge_zone_or_locale_is_shortened_in_the_error(project: Path) -> None:
    for command in (
        ("subscribers", "add", "z@example.com", "--tz", "x" * LONG),
        ("subscribers", "add", "z@example.com", "--locale", "x" * LONG),
        ("preview", "sales-process", "--locale", "x" * LONG),
        ("simulate", "sales-process", "--tz", "x" * LONG),
    ):
        result = nurture(*command)
        assert result.exit_code in (1, 2), result.output
        output = refused(result, result.exit_code, "x" * 40 + "…")
        assert len(output) < 400, output[:400]


@pytest.mark.parametrize("option", ["--first-name", "--name"])
def test_a_right_to_left_override_in_a_name_is_refused(project: Path, option: str) -> None:
    result = nurture("subscribers", "add", "r@example.com", option, "Ann\u202eevil")
    refused(result, 1, "bidirectional override", "U+202E")
    refused(nurture("subscribers", "show", "r@example.com"), 1, "no subscriber")


def test_a_purchase_needs_a_product(project: Path) -> None:
    result = nurture(
        "events", "add", "purchase", "--email", "k@example.com", "--product", " ",
        "--amount", "1", "--currency", "SEK",
    )  # fmt: skip
    refused(result, 1, "--product is empty")
    export = nurture("subscribers", "export", "k@example.com")
    assert json.loads(export.stdout)["purchases"] == []


def test_init_needs_a_folder_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    refused(nurture("init", ""), 2, "FOLDER is empty")
    assert list(tmp_path.iterdir()) == []
