"""retrying(): a transaction the database aborted as a deadlock victim is run again."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import create_engine
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlmodel import Session

from nurture.store.db import session_factory
from nurture.store.retry import ATTEMPTS, is_retryable, retrying


class _Orig(Exception):
    """What psycopg raises: the error carries its SQLSTATE."""

    def __init__(self, sqlstate: str) -> None:
        super().__init__(sqlstate)
        self.sqlstate = sqlstate


def aborted(sqlstate: str) -> OperationalError:
    return OperationalError("INSERT ...", {}, _Orig(sqlstate))


@pytest.fixture
def sessions() -> Any:
    return session_factory(create_engine("sqlite://"))


def test_a_deadlock_victim_is_run_again_and_its_answer_returned(sessions: Any) -> None:
    calls: list[Session] = []
    pauses: list[float] = []

    def work(session: Session) -> str:
        calls.append(session)
        if len(calls) < 3:
            raise aborted("40P01" if len(calls) == 1 else "40001")
        return "done"

    assert retrying(sessions, work, pause=pauses.append) == "done"
    assert len(calls) == 3 and len(set(map(id, calls))) == 3  # a new session each time
    assert len(pauses) == 2 and all(0 < pause < 1 for pause in pauses)


def test_it_gives_up_after_the_last_attempt(sessions: Any) -> None:
    calls = 0

    def work(session: Session) -> None:
        nonlocal calls
        calls += 1
        raise aborted("40P01")

    with pytest.raises(OperationalError):
        retrying(sessions, work, pause=lambda _: None)
    assert calls == ATTEMPTS


@pytest.mark.parametrize(
    "error",
    [
        aborted("57P01"),  # the server shut down: not this transaction's conflict
        IntegrityError("INSERT ...", {}, _Orig("23505")),
        ValueError("a bug"),
    ],
)
def test_other_errors_are_raised_at_once(sessions: Any, error: Exception) -> None:
    calls = 0

    def work(session: Session) -> None:
        nonlocal calls
        calls += 1
        raise error

    with pytest.raises(type(error)):
        retrying(sessions, work, pause=lambda _: None)
    assert calls == 1
    assert not is_retryable(error)
