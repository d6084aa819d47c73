"""What ``nurture dispatch`` shows of a pass: a progress bar while a long one
runs, and afterwards the counts and, when sends went wrong, why.

The progress bar is drawn only on a terminal (stderr), and only once a pass
has run for :data:`PROGRESS_AFTER`: a cron job's log and a quick pass stay
one line. It reads the running pass's report (the sender updates its counts
as answers are written) from Rich's refresh thread; the counts are plain
integers, so a read between two updates is at worst one refresh behind.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from rich.console import Console, RenderableType
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

if TYPE_CHECKING:  # only annotations name it: importing the sender loads the store
    from nurture.sending.answers import DispatchReport

__all__ = ["PROGRESS_AFTER", "PassProgress", "shows_progress", "trouble"]

PROGRESS_AFTER = 2.0
"""Seconds a pass runs before its progress bar appears."""

# Each kind of trouble: what the summary calls it (DispatchReport.summary()'s
# words), the count in the report, and how its decisions start in the log.
_TROUBLE: tuple[tuple[str, str, Callable[[DispatchReport], int]], ...] = (
    ("failed", "failed", lambda report: report.failed),
    ("unknown", "unknown", lambda report: report.unknown),
    ("retry later", "retry", lambda report: report.retried),
)


def trouble(report: DispatchReport) -> list[tuple[str, int, str | None]]:
    """(kind, how many, the first one's reason) for each kind of send that went
    wrong in ``report``: failed, unknown, retry later. Empty when none did.

    The reason names the subscriber and step it happened to, so it can be
    looked up (``nurture log --email ...``); None when the pass did not log one.
    """
    result: list[tuple[str, int, str | None]] = []
    for kind, prefix, count in _TROUBLE:
        if not count(report):
            continue
        first: str | None = None
        for email, sequence_id, step_id, what in report.log:
            status, _, reason = what.partition(": ")
            if status == prefix:
                first = f"{email} ({sequence_id}/{step_id}): {reason or status}"
                break
        result.append((kind, count(report), first))
    return result


@dataclass
class PassProgress:
    """A Rich renderable: the running pass's progress, after :data:`PROGRESS_AFTER`.

    ``report`` returns the running pass's report; ``due`` is how many
    enrollments were due when the pass began (follow-up steps can add more).
    """

    report: Callable[[], DispatchReport]
    due: int
    started: float = field(default_factory=time.monotonic)

    def __rich__(self) -> RenderableType:
        elapsed = time.monotonic() - self.started
        if elapsed < PROGRESS_AFTER:
            return Text("")
        report = self.report()
        done = (
            report.sent
            + report.skipped
            + report.failed
            + report.unknown
            + report.retried
            + report.exited
        )
        total = max(self.due, done, 1)
        line = Table.grid(padding=(0, 1))
        line.add_row(
            Text("dispatching"),
            ProgressBar(total=total, completed=done, width=30),
            Text(f"{done}/{total}"),
            Text(f"sent {report.sent}, failed {report.failed}", style="dim"),
            Text(f"{int(elapsed)} s", style="dim"),
        )
        return line


def shows_progress(console: Console) -> bool:
    """Whether a progress bar may be drawn on ``console``: a terminal, not a log."""
    return console.is_terminal and not console.is_dumb_terminal
