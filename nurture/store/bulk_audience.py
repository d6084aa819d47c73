"""The SQL of a bulk import (:mod:`nurture.audience.csv_import`): new
subscribers and their enrollments inserted as plain values, one statement per
batch, without building an ORM object per row (which was most of an import's
time). Nothing here commits; the caller owns the transaction.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import insert, select
from sqlmodel import Session

from nurture.store.queries import ENROLLMENT, SUBSCRIBER

__all__ = ["insert_enrollment_values", "insert_subscriber_values"]


def insert_subscriber_values(
    session: Session, values: Sequence[Mapping[str, Any]]
) -> dict[str, int]:
    """Insert new subscribers (one mapping of column values each); their ids by address.

    A plain executemany and one SELECT for the ids: cheaper than INSERT ...
    RETURNING, which SQLAlchemy compiles into multi-row statements.
    """
    if not values:
        return {}
    connection = session.connection()
    connection.execute(insert(SUBSCRIBER), list(values))
    emails = [value["email"] for value in values]
    query = select(SUBSCRIBER.c.email, SUBSCRIBER.c.id).where(SUBSCRIBER.c.email.in_(emails))
    return {email: subscriber_id for email, subscriber_id in connection.execute(query)}


def insert_enrollment_values(session: Session, values: Sequence[Mapping[str, Any]]) -> None:
    """Insert enrollments (one mapping of column values each) in one statement."""
    if values:
        session.connection().execute(insert(ENROLLMENT), list(values))
