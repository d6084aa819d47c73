"""Running a transaction again when PostgreSQL chose it as a deadlock victim.

Two web requests that touch the same rows in different orders (two webhook
posts about the same sends, a bounce and an unsubscribe of one address) can
deadlock; PostgreSQL then aborts one of them (SQLSTATE ``40P01``), and a
serializable conflict aborts one the same way (``40001``). Neither is a fault
of the request: its transaction was rolled back whole, so doing it again from
the start is safe and is what the database asks for. :func:`retrying` does
that a few times, with a short random pause, before giving up.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import sessionmaker
from sqlmodel import Session

__all__ = ["ATTEMPTS", "RETRYABLE_SQLSTATES", "is_retryable", "retrying"]

log = logging.getLogger(__name__)

RETRYABLE_SQLSTATES = frozenset({"40P01", "40001"})  # deadlock_detected, serialization_failure
ATTEMPTS = 5

T = TypeVar("T")


def is_retryable(exc: BaseException) -> bool:
    """Whether ``exc`` is a transaction the database aborted so that it can be run again."""
    if not isinstance(exc, DBAPIError):
        return False
    return getattr(exc.orig, "sqlstate", None) in RETRYABLE_SQLSTATES


def retrying(
    sessions: sessionmaker[Session],
    work: Callable[[Session], T],
    *,
    attempts: int = ATTEMPTS,
    pause: Callable[[float], None] = time.sleep,
) -> T:
    """``work(session)`` in a new session, again (up to ``attempts`` times in
    all) while the database aborts it as a deadlock victim. ``work`` commits;
    anything it did before the abort was rolled back with it, so it must not
    have changed anything outside the database."""
    attempt = 1
    while True:
        with sessions() as session:
            try:
                return work(session)
            except DBAPIError as exc:
                session.rollback()
                if not is_retryable(exc) or attempt >= attempts:
                    raise
                log.info(
                    "transaction aborted by the database (%s), attempt %d of %d: running it again",
                    getattr(exc.orig, "sqlstate", "?"), attempt, attempts,
                    extra={"action": "db.retry"},
                )  # fmt: skip
        pause(random.uniform(0.005, 0.02 * 2**attempt))
        attempt += 1
