"""Marketer files cannot hurt, through the real ``nurture`` executable: a template
linked out of templates/, budgets for templates, conditions and file sizes,
SIGTERM during a reload, and enrolling while a sequence file is broken."""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.e2e.folders import enable_example

NURTURE = [sys.executable, "-m", "nurture"]
NOW = "2026-11-27T14:30:00Z"  # Friday 15:30 in Stockholm
SECRET = "SG.marker-secret"
SPIN = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"


def env(db_url: str, **extra: str) -> dict[str, str]:
    values = {k: v for k, v in os.environ.items() if not k.startswith("NURTURE_")}
    values.update(COLUMNS="200", NURTURE_DATABASE_URL=db_url, NURTURE_SENDGRID_API_KEY=SECRET)
    values.update(extra)
    return values


def run(
    *args: str, cwd: Path, db_url: str, timeout: float = 120, **extra: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*NURTURE, *args],
        cwd=cwd,
        env=env(db_url, **extra),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def work(tmp_path: Path, db_url: str) -> Path:
    assert run("init", "work", cwd=tmp_path, db_url=db_url).returncode == 0
    enable_example(tmp_path / "work")
    return tmp_path / "work"


def replace_line(path: Path, old: str, new: str) -> int:
    """Replace the first line whose stripped text is ``old``; return its 1-based number."""
    lines = path.read_text(encoding="utf-8").splitlines()
    index = next(i for i, line in enumerate(lines) if line.strip() == old)
    lines[index] = lines[index].replace(old, new)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return index + 1


def files_containing(folder: Path, needle: str) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file() and needle.encode() in p.read_bytes()]


# -- templates cannot read outside templates/ ---------------------------------------


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_template_linked_to_the_environment_is_refused(work: Path, db_url: str) -> None:
    for locale in ("en", "sv"):
        template = work / "templates" / locale / "welcome.md"
        template.unlink()
        template.symlink_to("/proc/self/environ")
    checked = run("validate", cwd=work, db_url=db_url)
    assert checked.returncode == 1
    assert "templates/sv/welcome.md:1:1: refused: a link to /proc/" in checked.stdout
    assert SECRET not in checked.stdout + checked.stderr
    shown = run("preview", "sales-process", cwd=work, db_url=db_url)
    assert shown.returncode == 1
    assert "welcome.md:1:1: refused" in shown.stdout + shown.stderr
    assert SECRET not in shown.stdout + shown.stderr
    assert files_containing(work, SECRET) == []


# -- budgets ---------------------------------------------------------------------------


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_validate_stops_a_spinning_template(work: Path, db_url: str) -> None:
    for locale in ("en", "sv"):
        template = work / "templates" / locale / "welcome.md"
        template.write_text("Hej!\n\n" + SPIN + "\n", encoding="utf-8")
    started = time.monotonic()
    checked = run("validate", cwd=work, db_url=db_url, timeout=60)
    assert time.monotonic() - started < 30
    assert checked.returncode == 1
    assert (
        "templates/sv/welcome.md:3:1: rendering stopped: more than 250000 loop iterations"
        in checked.stdout
    ), checked.stdout


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_validate_refuses_a_50_mb_sequence_file_at_once(work: Path, db_url: str) -> None:
    huge = work / "sequences" / "huge.yaml"
    with huge.open("w", encoding="utf-8") as handle:
        handle.write("id: huge\n" + ("# " + "x" * 1000 + "\n") * 50_000)
    started = time.monotonic()
    checked = run("validate", cwd=work, db_url=db_url)
    assert time.monotonic() - started < 20
    assert checked.returncode == 1
    size = huge.stat().st_size
    assert f"sequences/huge.yaml:1:1: file too large ({size} bytes > 1048576)" in checked.stdout


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize(
    "condition,reason",
    [
        ("'x' * 10**10 == 'x'", "condition stopped: '*' would make a value"),
        ("subscriber.attributes.no_such_key == 'x'", "no_such_key"),
    ],
)
def test_validate_evaluates_every_condition(
    work: Path, db_url: str, condition: str, reason: str
) -> None:
    path = work / "sequences" / "sales-process.yaml"
    old = "when: \"'customer' not in subscriber.tags\""
    line = replace_line(path, old, f'when: "{condition}"')
    started = time.monotonic()
    checked = run("validate", cwd=work, db_url=db_url)
    assert time.monotonic() - started < 30
    assert checked.returncode == 1
    problems = [
        p
        for p in checked.stdout.splitlines()
        if p.startswith(f"sequences/sales-process.yaml:{line}:")
    ]
    assert problems and reason in problems[0], checked.stdout


def test_a_spinning_template_fails_one_email_at_send_time(work: Path, db_url: str) -> None:
    # Spins only for subscribers with the attribute, so validate (with the samples) passes.
    template = work / "templates" / "sv" / "welcome.md"
    body = template.read_text(encoding="utf-8")
    spin = "{% if subscriber.attributes.get('spin') %}" + SPIN + "{% endif %}"
    template.write_text(body + "\n" + spin + "\n", encoding="utf-8")
    spin_line = len(body.splitlines()) + 2
    assert run("validate", cwd=work, db_url=db_url).returncode == 0
    for address, extra in (("spin@example.com", ["--attr", "spin=yes"]), ("ok@example.com", [])):
        added = run(
            "--now", NOW, "subscribers", "add", address, "--tag", "b2b", "--locale", "sv", *extra,
            cwd=work, db_url=db_url,
        )  # fmt: skip
        assert added.returncode == 0, added.stderr
    started = time.monotonic()
    sent = run("--now", NOW, "dispatch", "--once", cwd=work, db_url=db_url, timeout=60)
    assert time.monotonic() - started < 30
    # One email failed: the pass says which and why, and exits 1; the other went out.
    assert sent.returncode == 1, sent.stdout + sent.stderr
    assert "failed 1, first: spin@example.com (sales-process/welcome)" in sent.stdout
    assert len(list((work / "outbox").glob("*.eml"))) == 1
    log = run("log", "--email", "spin@example.com", cwd=work, db_url=db_url, COLUMNS="1000")
    assert "failed" in log.stdout
    assert (
        f"templates/sv/welcome.md:{spin_line}:1: rendering stopped: more than 250000" in log.stdout
    )


# -- SIGTERM during a reload ----------------------------------------------------------

# Within every budget (about 60,000 of 250,000 steps and 2 of 3 seconds per
# email), but validating it for every sample subscriber in every locale takes
# the reload several seconds.
SLOW = "{% set r = range(4000) %}{% for i in range(20000) %}{{ r|sum }}{% endfor %}"


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_sigterm_stops_the_worker_during_a_reload(work: Path, db_url: str) -> None:
    values = env(db_url, NURTURE_NOW=NOW, NURTURE_DISPATCH_INTERVAL="0.5")
    process = subprocess.Popen(
        [*NURTURE, "worker"], cwd=work, env=values,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    lines: queue.Queue[str] = queue.Queue()
    assert process.stdout is not None

    def read() -> None:
        for line in process.stdout or ():
            lines.put(line)

    reader = threading.Thread(target=read)
    reader.start()

    def wait_for(text: str, seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                if text in lines.get(timeout=0.2):
                    return True
            except queue.Empty:
                continue
        return False

    try:
        assert wait_for("started", 60)
        for locale in ("en", "sv"):
            template = work / "templates" / locale / "welcome.md"
            template.write_text(template.read_text(encoding="utf-8") + SLOW, encoding="utf-8")
        # The reload job runs every 2 s and logs when it starts validating.
        wait_for("changed: validating them", 2.5)
        time.sleep(0.5)  # well inside the reload, which takes several seconds
    finally:
        signal_at = time.monotonic()
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        finally:
            process.kill()
            reader.join(timeout=5)
    assert time.monotonic() - signal_at < 4
    assert process.returncode == 0


# -- enrolling while a sequence file is broken -------------------------------------


def test_a_subscriber_added_while_the_file_is_broken_is_enrolled_on_the_last_good_version(
    work: Path, db_url: str
) -> None:
    first = run(
        "--now", NOW, "subscribers", "add", "a@example.com", "--tag", "b2b", cwd=work, db_url=db_url
    )
    assert "enrolled in sales-process (version " in first.stdout, first.stderr
    version = first.stdout.split("(version ")[1].split(")")[0]
    replace_line(work / "sequences" / "sales-process.yaml", "wait: 2 days", "wait: 2 fortnights")
    added = run(
        "--now", NOW, "subscribers", "add", "b@example.com", "--tag", "b2b", cwd=work, db_url=db_url
    )
    assert added.returncode == 0, added.stderr
    assert f"enrolled in sales-process (version {version})" in added.stdout
    assert (
        "sequences/sales-process.yaml is broken: enrolling on the last good version" in added.stderr
    )


def test_with_no_stored_version_a_broken_file_says_so(work: Path, db_url: str) -> None:
    replace_line(work / "sequences" / "sales-process.yaml", "wait: 2 days", "wait: 2 fortnights")
    added = run(
        "--now", NOW, "subscribers", "add", "b@example.com", "--tag", "b2b", cwd=work, db_url=db_url
    )
    assert added.returncode == 0, added.stderr
    assert not re.search(r"^\s*enrolled in", added.stdout, re.MULTILINE), added.stdout
    assert "not enrolled in sales-process: sequences/sales-process.yaml is broken" in added.stdout
    assert "sequences/sales-process.yaml is broken and no earlier version" in added.stderr
