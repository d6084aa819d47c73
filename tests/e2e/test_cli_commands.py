"""Commands that say what they do, through the real ``nurture`` executable:
what ``subscribers add``/``import`` and ``enroll`` did and when the first email
goes out, CSV files as other tools write them, ``dispatch`` without ``--once``
and with failures, ``log`` at 80 columns, and ``--help`` on every command."""

from __future__ import annotations

import json
import os
import pty
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer

from nurture.cli.main import app
from nurture.testing import FakeSendGrid
from tests.e2e.folders import enable_example
from tests.e2e.test_cli_engine import NOW, NURTURE, env, run
from tests.factories import POSTAL_ADDRESS

# NOW is Friday 2026-11-27 14:30 UTC: 15:30 in Stockholm, 20:00 in Kolkata
# (after the example sequence's 08:00-18:00 weekday window).


@pytest.fixture
def work(tmp_path: Path, db_url: str) -> Path:
    assert run("init", "work", cwd=tmp_path, db_url=db_url).returncode == 0
    enable_example(tmp_path / "work")
    return tmp_path / "work"


def test_add_says_when_the_matching_sequence_is_disabled(tmp_path: Path, db_url: str) -> None:
    # As `nurture init` writes it: the trigger matches, but nobody is enrolled.
    assert run("init", "work", cwd=tmp_path, db_url=db_url).returncode == 0
    added = run(
        "subscribers", "add", "karin@example.com", "--tag", "b2b",
        cwd=tmp_path / "work", db_url=db_url,
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    assert "sales-process is disabled" in added.stdout, added.stdout
    assert "already enrolled" not in added.stdout


def _with(
    extra: dict[str, str], cwd: Path, db_url: str, *args: str
) -> subprocess.CompletedProcess[str]:
    values = env(db_url)
    values.update(extra)
    return subprocess.run(
        [*NURTURE, *args], cwd=cwd, env=values, capture_output=True, text=True, timeout=120
    )


# ------------------------------------------------------------ add, import, enroll


def test_add_normalises_tags_and_says_where_it_enrolled(work: Path, db_url: str) -> None:
    added = run(
        "--now", NOW, "subscribers", "add", "Karin@Example.com", "--tz", "Europe/Stockholm",
        "--tag", " B2B ,Lead", cwd=work, db_url=db_url,
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    # "B2B" is the trigger's "b2b", and "B2B ,Lead" is two tags.
    assert "tags: b2b, lead" in added.stdout, added.stdout
    assert "enrolled in sales-process" in added.stdout
    assert "first email 'welcome': due now, Fri 2026-11-27 15:30 CET" in added.stdout

    other = run(
        "--now", NOW, "subscribers", "add", "sam@example.com", "--tag", "newsletter",
        cwd=work, db_url=db_url,
    )  # fmt: skip
    assert other.returncode == 0, other.stderr
    assert "not enrolled: no trigger matched (sales-process needs the tag b2b)" in other.stdout

    again = run(
        "--now", NOW, "subscribers", "add", "karin@example.com", "--tag", "b2b",
        cwd=work, db_url=db_url,
    )  # fmt: skip
    assert "already enrolled in sales-process: not enrolled again" in again.stdout


def test_import_normalises_tags_and_says_where_it_enrolled(work: Path, db_url: str) -> None:
    (work / "leads.csv").write_text(
        "email,name,tags\n"
        "jamie@example.com,Jamie Doe,B2B\n"
        'ola@example.com,Ola Berg,"Customer, b2b"\n'
        "sam@example.com,Sam,newsletter\n",
        encoding="utf-8",
    )
    result = run("--now", NOW, "subscribers", "import", "leads.csv", cwd=work, db_url=db_url)
    assert result.returncode == 0, result.stderr
    assert "3 imported" in result.stdout
    assert "enrolled in sales-process: 2 subscribers" in result.stdout
    assert "no trigger matched: 1 subscriber (sales-process needs the tag b2b)" in result.stdout
    shown = run("subscribers", "show", "ola@example.com", cwd=work, db_url=db_url)
    assert "customer, b2b" in shown.stdout, shown.stdout


def test_enroll_says_when_the_first_email_really_goes_out(work: Path, db_url: str) -> None:
    assert run(
        "--now", NOW, "subscribers", "add", "priya@example.com", "--tz", "Asia/Kolkata",
        cwd=work, db_url=db_url,
    ).returncode == 0  # fmt: skip
    result = run(
        "--now", NOW, "enroll", "priya@example.com", "sales-process", cwd=work, db_url=db_url
    )
    assert result.returncode == 0, result.stderr
    assert "due now" not in result.stdout
    # 20:00 on a Friday in Kolkata: the window has closed, the weekend follows.
    assert "first email 'welcome': Mon 2026-11-30 08:00 IST (Asia/Kolkata)" in result.stdout
    assert "Sat is not a sending day" in result.stdout

    # The dispatcher agrees: nothing a minute before, the welcome at 08:00 IST.
    assert "sent 0," in run("--now", NOW, "dispatch", cwd=work, db_url=db_url).stdout
    early = run("--now", "2026-11-30T02:29:00Z", "dispatch", cwd=work, db_url=db_url)
    assert "sent 0," in early.stdout, early.stdout
    due = run("--now", "2026-11-30T02:30:00Z", "dispatch", cwd=work, db_url=db_url)
    assert "sent 1," in due.stdout, due.stdout


# ------------------------------------------------------------ CSV as others write it


def test_import_reads_mailchimp_and_kit_exports_and_keeps_other_columns(
    work: Path, db_url: str
) -> None:
    (work / "mailchimp.csv").write_text(
        "Email Address,First Name,Last Name,MEMBER_RATING,OPTIN_TIME,TIMEZONE,TAGS\n"
        'jamie@example.com,Jamie,Doe,4,2024-01-05 10:00:00,America/New_York,"""B2B"",""VIP"""\n',
        encoding="utf-8",
    )
    result = run("--now", NOW, "subscribers", "import", "mailchimp.csv", cwd=work, db_url=db_url)
    assert result.returncode == 0, result.stderr
    assert "1 imported" in result.stdout
    assert (
        "mailchimp.csv:1: kept as attributes: 'MEMBER_RATING' as 'member_rating', "
        "'OPTIN_TIME' as 'optin_time'" in result.stderr
    )
    shown = run("subscribers", "show", "jamie@example.com", cwd=work, db_url=db_url)
    for expected in ("Jamie Doe", "America/New_York", "b2b, vip", "attr.member_rating  4"):
        assert expected in shown.stdout, (expected, shown.stdout)

    (work / "kit.csv").write_text(
        'first_name,email,tags\nOla,ola@example.com,"b2b, customer"\n', encoding="utf-8"
    )
    kit = run("--now", NOW, "subscribers", "import", "kit.csv", cwd=work, db_url=db_url)
    assert kit.returncode == 0, kit.stderr
    assert "enrolled in sales-process: 1 subscriber" in kit.stdout

    (work / "svenska.csv").write_text("E-post;Namn\nkarin@example.com;Karin\n", encoding="utf-8")
    swedish = run("--now", NOW, "subscribers", "import", "svenska.csv", cwd=work, db_url=db_url)
    assert swedish.returncode == 0, swedish.stderr
    assert "1 imported" in swedish.stdout


def test_import_reports_duplicates_in_the_file_by_line(work: Path, db_url: str) -> None:
    (work / "leads.csv").write_text(
        "email,name\n"
        "karin@example.com,Karin\n"
        "jamie@example.com,Jamie\n"
        " Karin@Example.COM ,Karin L\n",
        encoding="utf-8",
    )
    result = run("--now", NOW, "subscribers", "import", "leads.csv", cwd=work, db_url=db_url)
    assert result.returncode == 0, result.stderr
    assert "1 duplicate" in result.stdout
    assert "leads.csv:4: duplicate of line 2 (the same address): merged into it" in result.stderr


# ------------------------------------------------------------ dispatch and log


def test_dispatch_alone_does_one_pass(work: Path, db_url: str) -> None:
    assert run(
        "--now", NOW, "subscribers", "add", "karin@example.com", "--tag", "b2b",
        cwd=work, db_url=db_url,
    ).returncode == 0  # fmt: skip
    result = run("--now", NOW, "dispatch", cwd=work, db_url=db_url)
    assert result.returncode == 0, result.stderr
    assert "sent 1," in result.stdout
    # --once stays for the scripts and crontabs that pass it.
    again = run("--now", NOW, "dispatch", "--once", cwd=work, db_url=db_url)
    assert again.returncode == 0, again.stderr
    assert "sent 0," in again.stdout


def _commands(command: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    yield path, command
    for name, child in sorted((getattr(command, "commands", None) or {}).items()):
        yield from _commands(child, (*path, name))


def test_now_is_one_global_option_not_repeated_by_a_command(work: Path, db_url: str) -> None:
    root = typer.main.get_command(app)
    global_options = {opt for param in root.params for opt in param.opts}
    assert {"--now", "--dir"} <= global_options
    repeated = [
        (" ".join(path), opt)
        for path, command in _commands(root)
        if path
        for param in command.params
        for opt in param.opts
        if opt in global_options
    ]
    assert repeated == []
    # Through the CLI: a command's own --now is not a second way to say it.
    result = run("dispatch", "--now", NOW, cwd=work, db_url=db_url)
    assert result.returncode == 2
    assert "No such option: --now" in result.stderr


def test_failed_sends_say_why_and_exit_1(work: Path, db_url: str) -> None:
    for address in ("anna@example.com", "bo@example.com"):
        assert run(
            "--now", NOW, "subscribers", "add", address, "--tag", "b2b", cwd=work, db_url=db_url
        ).returncode == 0  # fmt: skip
    with FakeSendGrid(api_key="SG.test.key") as fake:
        fake.enqueue("400", message="The from address does not match a verified Sender Identity")
        fake.enqueue("500")
        values = {
            "NURTURE_TRANSPORT": "sendgrid",
            "NURTURE_SENDGRID_API_KEY": "SG.test.key",
            "NURTURE_SENDGRID_API_HOST": fake.url,
            "NURTURE_BASE_URL": "https://mail.example.com",  # a real provider needs https
            "NURTURE_POSTAL_ADDRESS": POSTAL_ADDRESS,  # and an address of its own
        }
        # --once: what older crontabs pass (and what the code before this
        # change required), so this fails on the explanation, not the flag.
        result = _with(values, work, db_url, "--now", NOW, "dispatch", "--once")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "failed 1, unknown 0, retry later 1" in result.stdout
    failed = re.search(r"^  failed 1, first: (\S+@example\.com) \(sales-process/welcome\): (.*)$",
                       result.stdout, re.MULTILINE)  # fmt: skip
    assert failed is not None, result.stdout
    assert "does not match a verified Sender Identity" in failed.group(2)
    retry = re.search(r"^  retry later 1, first: (\S+@example\.com) \(sales-process/welcome\): ",
                      result.stdout, re.MULTILINE)  # fmt: skip
    assert retry is not None, result.stdout
    assert {failed.group(1), retry.group(1)} == {"anna@example.com", "bo@example.com"}


def _run_on_a_terminal(args: list[str], cwd: Path, values: dict[str, str]) -> tuple[int, str, str]:
    """Run with stderr on a pseudo-terminal (as in an admin's shell); stdout a pipe."""
    leader, follower = pty.openpty()
    process = subprocess.Popen(
        [*NURTURE, *args], cwd=cwd, env=values, stdout=subprocess.PIPE, stderr=follower,
        stdin=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    os.close(follower)
    chunks: list[bytes] = []
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # the terminal closed: the process has exited
            break
        if not chunk:
            break
        chunks.append(chunk)
    stdout, _ = process.communicate(timeout=120)
    os.close(leader)
    return process.returncode, stdout, b"".join(chunks).decode("utf-8", "replace")


def test_a_long_pass_shows_progress_on_a_terminal_only(work: Path, db_url: str) -> None:
    assert run(
        "--now", NOW, "subscribers", "add", "karin@example.com", "--tag", "b2b",
        cwd=work, db_url=db_url,
    ).returncode == 0  # fmt: skip
    # Each send takes the fake provider 3 s: the pass lasts longer than the
    # 2 s after which the bar appears.
    with FakeSendGrid(api_key="SG.test.key", latency=3.0) as fake:
        values = env(db_url)
        values.update(
            NURTURE_TRANSPORT="sendgrid",
            NURTURE_SENDGRID_API_KEY="SG.test.key",
            NURTURE_SENDGRID_API_HOST=fake.url,
            NURTURE_BASE_URL="https://mail.example.com",
            NURTURE_POSTAL_ADDRESS=POSTAL_ADDRESS,
            TERM="xterm-256color",
        )
        code, stdout, terminal = _run_on_a_terminal(
            ["--now", NOW, "dispatch", "--once"], work, values
        )
        assert code == 0, stdout + terminal
        assert "sent 1," in stdout
        assert "dispatching" in terminal, terminal

        run("--now", NOW, "subscribers", "add", "jamie@example.com", "--tag", "b2b",
            cwd=work, db_url=db_url)  # fmt: skip
        piped = _with(values, work, db_url, "--now", NOW, "dispatch", "--once")
    assert piped.returncode == 0, piped.stderr
    assert "sent 1," in piped.stdout
    assert "dispatching" not in piped.stderr + piped.stdout


def test_log_refuses_an_unknown_status_listing_the_valid_ones(work: Path, db_url: str) -> None:
    result = run("log", "--status", "bogus", cwd=work, db_url=db_url)
    assert result.returncode == 2
    assert "'bogus'" in result.stderr
    for status in ("queued", "reserved", "sent", "skipped", "failed", "unknown", "retry"):
        assert status in result.stderr


def test_log_fits_80_columns(work: Path, db_url: str) -> None:
    address = "jamie.doe-williams@example.com"
    assert run(
        "--now", NOW, "subscribers", "add", address, "--tag", "b2b", "--tz", "America/New_York",
        cwd=work, db_url=db_url,
    ).returncode == 0  # fmt: skip
    assert run("--now", NOW, "dispatch", "--once", cwd=work, db_url=db_url).returncode == 0
    result = _with({"COLUMNS": "80"}, work, db_url, "log")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80, result.stdout
    # Whole values on one line each: the time, the address and the step.
    for whole in ("2026-11-27 14:30", address, "sales-process/welcome", "sent"):
        assert any(whole in line for line in lines), (whole, result.stdout)


# ------------------------------------------------------------ --help


GENERIC_TYPES = re.compile(r"<str>|<list\[str\]>|<path>|<list\[Path\]>|\bTEXT\b")
PYTHON_TYPES = re.compile(r"<(bool|str|path|Path|list\[\w+\])>")


def _help_problems(name: str, text: str) -> list[str]:
    problems: list[str] = []
    if name != "nurture" and "Examples:" not in text:
        problems.append(f"{name}: no examples")
    # An option that takes a value names it (EMAIL, ISO-TIME), not its type.
    for line in text.splitlines():
        if re.search(r"--[a-z]", line) and GENERIC_TYPES.search(line):
            problems.append(f"{name}: {line.strip(' │')}")
    # No Python type beside a flag (<bool>) or an argument (<str>, <list[Path]>).
    for line in text.splitlines():
        if PYTHON_TYPES.search(line):
            problems.append(f"{name}: {line.strip(' │')}")
    # Arguments too, in the usage line: {EMAIL}, not {email}.
    usage = next((line for line in text.splitlines() if "Usage:" in line), "")
    if re.search(r"[{\[][a-z_]+[}\]]", usage):
        problems.append(f"{name}: {usage.strip()}")
    return problems


# Walks the command tree of the `nurture` the subprocess imports and prints
# each command's --help as the console script's main() renders it: one
# interpreter for thirty commands instead of thirty, on a busy machine.
HELP_OF_EVERY_COMMAND = """
import contextlib, io, json, sys
import typer
from nurture.cli.main import app, main

def walk(command, path=()):
    children = getattr(command, "commands", None) or {}
    yield path, bool(children)
    for name in sorted(children):
        yield from walk(children[name], (*path, name))

helps = {}
for path, group in walk(typer.main.get_command(app)):
    if group and path:
        continue
    sys.argv = ["nurture", *path, "--help"]
    printed = io.StringIO()
    code = 0
    with contextlib.redirect_stdout(printed):
        try:
            main()
        except SystemExit as exc:
            code = exc.code or 0
    helps[" ".join(path) or "nurture"] = [code, printed.getvalue()]
print(json.dumps(helps))
"""


def test_every_command_has_examples_and_readable_option_types(tmp_path: Path) -> None:
    values = {k: v for k, v in os.environ.items() if not k.startswith("NURTURE_")}
    values["COLUMNS"] = "200"
    result = subprocess.run(
        [sys.executable, "-c", HELP_OF_EVERY_COMMAND], cwd=tmp_path, env=values,
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    helps: dict[str, list[Any]] = json.loads(result.stdout)
    assert {"nurture", "dispatch", "subscribers add", "sends resolve", "db upgrade"} <= set(helps)
    problems: list[str] = []
    for name, (code, text) in helps.items():
        if code != 0:
            problems.append(f"{name}: exit {code}")
        problems.extend(_help_problems(name, text))
    assert problems == []


def test_help_of_the_executable_shows_examples_and_option_names(tmp_path: Path) -> None:
    values = {k: v for k, v in os.environ.items() if not k.startswith("NURTURE_")}
    values["COLUMNS"] = "200"
    result = subprocess.run(
        [*NURTURE, "subscribers", "add", "--help"], cwd=tmp_path, env=values,
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert _help_problems("subscribers add", result.stdout) == []
    assert "$ nurture subscribers add karin@example.com" in result.stdout
    assert re.search(r"--tz\s+ZONE", result.stdout), result.stdout
    assert re.search(r"--attr\s+KEY=VALUE", result.stdout), result.stdout
