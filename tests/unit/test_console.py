"""The CLI's status-and-reason line."""

from __future__ import annotations

import pytest

from nurture.cli.console import with_reason


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
