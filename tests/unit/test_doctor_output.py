"""How ``nurture doctor`` prints its checks: in a terminal a long line wraps
under its own text; in a pipe each stays one whole line."""

from __future__ import annotations

import io

from rich.console import Console

from nurture.cli.doctor import print_checks
from nurture.ops.doctor import Check

CHECKS = [
    Check(
        "base_url",
        "warn",
        "http://localhost:8000 points at localhost (fine for the outbox, not for a real provider)",
        "set base_url to the public https:// address of `nurture run` / `nurture web` "
        "(unsubscribe links and one-click List-Unsubscribe point there)",
    ),
    Check("database", "ok", "sqlite:////srv/shop/nurture.db answers; migrations at head (0012)"),
]


def printed(*, terminal: bool) -> list[str]:
    buffer = io.StringIO()
    console = Console(file=buffer, width=80, force_terminal=terminal, color_system=None)
    print_checks(console, CHECKS)
    return buffer.getvalue().splitlines()


def test_in_a_terminal_a_long_line_wraps_under_its_own_text() -> None:
    lines = printed(terminal=True)
    assert max(len(line) for line in lines) <= 80, lines
    assert lines[0].startswith("warn  base_url: http://localhost:8000 points at localhost")
    fix = next(i for i, line in enumerate(lines) if line.startswith("      fix: "))
    assert fix > 1, lines  # the detail took two lines
    assert all(line.startswith(" " * 6) and line[6] != " " for line in lines[1:fix]), lines
    ok = next(i for i, line in enumerate(lines) if line.startswith("ok    database: "))
    assert ok > fix + 1, lines  # the fix took two lines or more
    assert all(line.startswith(" " * 11) and line[11] != " " for line in lines[fix + 1 : ok])
    # Nothing lost or reordered: the same words as the pipe's lines.
    assert " ".join(" ".join(lines).split()) == " ".join(" ".join(printed(terminal=False)).split())


def test_in_a_pipe_each_check_and_fix_is_one_whole_line() -> None:
    warn, database = CHECKS
    assert printed(terminal=False) == [
        f"warn  base_url: {warn.detail}",
        f"      fix: {warn.fix}",
        f"ok    database: {database.detail}",
    ]
