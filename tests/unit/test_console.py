"""The CLI's status-and-reason line."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from nurture.cli.console import path_problem, with_reason
from nurture.errors import clip_path


@pytest.mark.parametrize(
    ("status", "reason", "shown"),
    [
        ("active", None, "active"),
        ("active", "", "active"),
        ("unsubscribed", "unsubscribed (one-click)", "unsubscribed (one-click)"),
        ("active", "resubscribed (link)", "active (resubscribed (link))"),
        ("active", "activated by hand", "active (activated by hand)"),
        ("bounced", "hard bounce: 550 no such user", "bounced (hard bounce: 550 no such user)"),
    ],
)
def test_a_status_is_named_once(status: str, reason: str | None, shown: str) -> None:
    assert with_reason(status, reason) == shown


def test_a_long_path_keeps_its_end_in_a_message(tmp_path: Path) -> None:
    """The name the user typed is the end of the path: clipping keeps it."""
    deep = tmp_path.joinpath(*(["a-rather-long-folder-name"] * 6))
    deep.mkdir(parents=True)
    blocker = deep / "afile"
    blocker.write_text("")
    error = NotADirectoryError(errno.ENOTDIR, "Not a directory", str(blocker / "x"))
    message = path_problem(error, blocker)
    assert message.endswith("/a-rather-long-folder-name/afile is a file, not a folder"), message
    assert message.startswith("…/")
    assert len(message) < 120


@pytest.mark.parametrize(
    ("path", "limit", "shown"),
    [
        ("/short/path", 80, "/short/path"),
        ("/" + "x" * 10 + "/" + "y" * 10 + "/name", 20, "…/" + "y" * 10 + "/name"),
        ("/top/" + "n" * 30, 10, "…/" + "n" * 8 + "…"),
    ],
)
def test_clip_path_cuts_at_a_folder_from_the_front(path: str, limit: int, shown: str) -> None:
    assert clip_path(path, limit) == shown
