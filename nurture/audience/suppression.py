"""The suppression list: addresses that are never mailed (hard bounces,
complaints, manual blocks).

It is matched on the normalised address, so store
``normalise_email(...)`` in ``suppression.email``.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlmodel import Session

from nurture.store import audience as store

__all__ = ["is_suppressed", "suppressed"]


def suppressed(session: Session, emails: Iterable[str]) -> set[str]:
    """Those of ``emails`` (normalised) that may not be mailed."""
    return store.suppressed_emails(session, emails)


def is_suppressed(session: Session, email: str) -> bool:
    """Whether ``email`` (normalised) is on the suppression list."""
    return bool(store.suppressed_emails(session, [email]))
