"""`make demo` (the README's first command) runs the real dispatcher end to end,
and prints the table the README quotes."""

from __future__ import annotations

import email
import email.policy
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"
TITLE = "every decision, in order"


COLUMNS = ("UTC", "local time", "subscriber", "step", "what happened")


def table_rows(text: str) -> list[tuple[str, ...]]:
    """The cells of each row of the demo's table, stripped: its columns start
    where their headers do, and a line whose first cells are blank continues
    the last cell of the row above (a reason wrapped in a narrow terminal)."""
    lines = text.splitlines()
    [at] = [i for i, line in enumerate(lines) if line.startswith(COLUMNS[0] + " ")]
    starts = [lines[at].index(name) for name in COLUMNS]
    rows: list[tuple[str, ...]] = []
    for line in lines[at + 2 :]:  # past the header's rule
        if not line.strip():
            break
        cells = tuple(line[a:b].strip() for a, b in zip(starts, [*starts[1:], None], strict=True))
        if rows and not any(cells[:-1]):
            rows[-1] = (*rows[-1][:-1], f"{rows[-1][-1]} {cells[-1]}")
        else:
            rows.append(cells)
    return rows


def readme_demo_table() -> str:
    """The README's copy of the demo's final table: the text block holding TITLE."""
    blocks = README.read_text(encoding="utf-8").split("```")
    quoted = [block for block in blocks[1::2] if TITLE in block]
    assert len(quoted) == 1, f"the README quotes the demo's table ({TITLE!r}) once"
    return quoted[0]


def test_demo_sends_the_whole_series(tmp_path: Path) -> None:
    folder = tmp_path / "demo"
    env = {k: v for k, v in os.environ.items() if not k.startswith("NURTURE_")}
    env["COLUMNS"] = "200"  # the final table's rows on one line each, as in the README
    # Ten simulated days per second: the same code path, a shorter wait.
    result = subprocess.run(
        [sys.executable, "-m", "nurture.demo", "--dir", str(folder), "--speed", "864000"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    emails = sorted((folder / "outbox").glob("*.eml"))
    # 6 subscribers with the b2b tag x 5 steps, less Ola's skipped case study
    # and the 2 emails Tom never gets because he bought (Sam has no b2b tag).
    assert len(emails) == 27, result.stdout
    assert "27 emails" in result.stdout
    recipients = set()
    for path in emails:
        message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        recipients.add(message["To"].addresses[0].addr_spec)
    assert "sam@example.com" not in recipients
    assert len(recipients) == 6

    # Every row the README quotes is in the final table, times included; the
    # README's "…" rows stand for the ones it leaves out.
    printed = table_rows(result.stdout.split(TITLE, 1)[-1])
    quoted = [row for row in table_rows(readme_demo_table()) if set(row) - {"", "…"}]
    assert len(quoted) >= 9
    missing = [row for row in quoted if row not in printed]
    assert missing == [], result.stdout
    # The README's promises: a welcome, the second email, the skipped case
    # study, and the exit after buying, at the moment of the purchase.
    what = {(row[2], row[3], row[4].split(":")[0]) for row in quoted}
    assert {
        ("karin@example.com", "welcome", "sent"),
        ("karin@example.com", "three-models", "sent"),
        ("ola@example.com", "case-study", "skip"),
        ("tom@example.com", "-", "exit"),
    } <= what, what
    [bought] = [row for row in printed if row[4].startswith("bought")]
    [left] = [row for row in printed if row[2] == "tom@example.com" and row[4].startswith("exit")]
    assert left[:2] == bought[:2], (bought, left)
    # Running it again replaces the demo folder instead of piling up. In an
    # 80-column terminal the same table fits: each decision on a line of its
    # own, only a long reason wrapped below itself.
    again = subprocess.run(
        [sys.executable, "-m", "nurture.demo", "--dir", str(folder), "--speed", "864000"],
        cwd=tmp_path, env={**env, "COLUMNS": "80"}, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert again.returncode == 0
    assert len(list((folder / "outbox").glob("*.eml"))) == 27
    assert "Replacing the earlier demo" in again.stdout
    narrow = again.stdout.split(TITLE, 1)[-1].split("\n\n", 1)[0]
    assert max(len(line) for line in narrow.splitlines()) <= 80, narrow
    assert table_rows(narrow) == printed, narrow

    # Tom's purchase is stored and credited as a shop's would be: stats show it.
    stats = subprocess.run(
        [sys.executable, "-m", "nurture", "-C", str(folder), "stats", "--json"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert stats.returncode == 0, stats.stdout + stats.stderr
    assert "4900" in stats.stdout and "SEK" in stats.stdout, stats.stdout


def test_ctrl_c_stops_the_demo_with_what_happened_so_far(tmp_path: Path) -> None:
    """A new user pressing Ctrl-C in `make demo` got a KeyboardInterrupt
    traceback. Now the pass in flight ends, and the decisions so far and the
    emails already in the outbox are shown."""
    folder = tmp_path / "demo"
    env = {k: v for k, v in os.environ.items() if not k.startswith("NURTURE_")}
    process = subprocess.Popen(
        # A simulated day per 1.5 s: still running when the signal comes.
        [sys.executable, "-m", "nurture.demo", "--dir", str(folder), "--speed", "57600"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not list((folder / "outbox").glob("*.eml")) and time.monotonic() < deadline:
            time.sleep(0.1)
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 128 + signal.SIGINT, stdout + stderr
    assert "Traceback" not in stderr, stderr
    sent = len(list((folder / "outbox").glob("*.eml")))
    assert 1 <= sent < 27
    assert "Stopped (signal 2) at simulated" in stdout, stdout
    assert f"with {sent} emails in" in " ".join(stdout.split()), stdout
    assert TITLE in stdout  # the decisions so far
