"""The SQL of a bulk import (:mod:`nurture.audience.csv_import`): new
subscribers and their enrollments inserted as plain values, one statement per
batch, without building an ORM object per row (which was most of an import's
time). Nothing here commits; the caller owns the transaction.

On SQLite the rows go to the driver's ``executemany`` directly
(:func:`_driver_rows`): each column's value is converted by the very bind
processor SQLAlchemy would use, but looked up once per column rather than per
value, and a time (every row of an import has the same ``created_at``) is
converted once per distinct value. SQLAlchemy's per-parameter bookkeeping had
become half of an import's time. Other databases take the plain Core insert.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from functools import cache
from operator import itemgetter
from typing import Any

from sqlalchemy import JSON, DateTime, Table, bindparam, insert, select
from sqlalchemy.engine import Connection
from sqlmodel import Session

from nurture.store.queries import ENROLLMENT, SUBSCRIBER, sqlite_rows_in
from nurture.store.types import UTCDateTime

__all__ = ["insert_enrollment_values", "insert_subscriber_values"]

_Convert = Callable[[Any], Any]
_ConvertColumn = Callable[[list[Any]], list[Any]]


def _each(process: _Convert) -> _ConvertColumn:
    """A column converted value by value, None included, as a Core insert
    converts it (a JSON column's processor writes None as JSON ``null``)."""

    def column(values: list[Any]) -> list[Any]:
        return [process(value) for value in values]

    return column


def _each_distinct(process: _Convert) -> _ConvertColumn:
    """A column of datetimes converted once per distinct value: every row of an
    import has the same ``created_at``, so a batch converts it once."""

    def column(values: list[Any]) -> list[Any]:
        try:
            converted = {value: process(value) for value in set(values)}
        except TypeError:  # not hashable: not a datetime; let the processor refuse it
            return _each(process)(values)
        return [converted[value] for value in values]

    return column


def _memoised_lists(process: _Convert) -> _Convert:
    """``process`` for JSON values, computed once per distinct short list of
    strings (every row's tags: a list repeats a few combinations of tags)."""
    seen: dict[tuple[str, ...], Any] = {}

    def convert(value: Any) -> Any:
        if type(value) is not list or len(value) > 20:
            return process(value)
        key = tuple(value)
        if not all(type(item) is str and len(item) <= 100 for item in key):
            return process(value)
        try:
            return seen[key]
        except KeyError:
            converted = seen[key] = process(value)
            return converted

    return convert


@cache
def _statement(table: Table, columns: tuple[str, ...]) -> tuple[str, tuple[str, ...]]:
    """The SQLite INSERT for ``columns`` and the order its ``?`` take them in."""
    from sqlalchemy.dialects import sqlite

    compiled = (
        insert(table).values({c: bindparam(c) for c in columns}).compile(dialect=sqlite.dialect())
    )
    order = tuple(compiled.positiontup or ())
    return str(compiled), order


def _driver_rows(
    connection: Connection, table: Table, values: Sequence[Mapping[str, Any]]
) -> tuple[str, list[tuple[Any, ...]]]:
    """The SQLite statement and its parameter tuples for ``values`` (which all
    name the same columns), converted by SQLAlchemy's own bind processors. A
    column left out takes its Python-side default, as a Core insert would."""
    given = set(values[0])
    defaults = {
        column.name: column.default.arg  # type: ignore[attr-defined]
        for column in table.c
        if column.name not in given and column.default is not None and column.default.is_scalar
    }
    sql, order = _statement(table, tuple(sorted(given | set(defaults))))
    dialect = connection.dialect
    converting: list[tuple[int, _ConvertColumn]] = []
    for index, name in enumerate(order):
        column_type = table.c[name].type
        process: _Convert | None = column_type._cached_bind_processor(dialect)
        if process is None:
            continue
        if isinstance(column_type, UTCDateTime | DateTime):
            converting.append((index, _each_distinct(process)))
        elif isinstance(column_type, JSON):
            converting.append((index, _each(_memoised_lists(process))))
        else:
            converting.append((index, _each(process)))
    if defaults:
        plan = [(name, defaults.get(name)) for name in order]
        rows = [tuple(value.get(name, default) for name, default in plan) for value in values]
    else:
        # Every column given (an import's rows): one C call per row.
        take = itemgetter(*order)
        rows = (
            [take(value) for value in values]
            if len(order) > 1
            else [(take(value),) for value in values]
        )
    if not converting:
        return sql, rows
    # Converted a column at a time: a column's processor is called in one
    # comprehension, and a datetime column once per distinct value.
    columns = [list(column) for column in zip(*rows, strict=True)]
    for index, convert in converting:
        columns[index] = convert(columns[index])
    return sql, list(zip(*columns, strict=True))


def _insert(session: Session, table: Table, values: Sequence[Mapping[str, Any]]) -> None:
    connection = session.connection()
    keys = set(values[0])
    if connection.dialect.name == "sqlite" and all(set(value) == keys for value in values):
        sql, rows = _driver_rows(connection, table, values)
        connection.exec_driver_sql(sql, rows)
    else:
        connection.execute(insert(table), list(values))


def insert_subscriber_values(
    session: Session, values: Sequence[Mapping[str, Any]]
) -> dict[str, int]:
    """Insert new subscribers (one mapping of column values each); their ids by address.

    One executemany and one SELECT for the ids: cheaper than INSERT ...
    RETURNING, which SQLAlchemy compiles into multi-row statements.
    """
    if not values:
        return {}
    _insert(session, SUBSCRIBER, values)
    connection = session.connection()
    emails = [value["email"] for value in values]
    return dict(_by_email(connection, "email, id", emails))


def stored_emails(connection: Connection, emails: Collection[str]) -> set[str]:
    """Those of ``emails`` (normalised) that a subscriber has."""
    return {email for (email,) in _by_email(connection, "email", list(emails))}


def _by_email(connection: Connection, columns: str, emails: Sequence[str]) -> list[Any]:
    """``SELECT columns FROM subscriber WHERE email IN emails``. On SQLite
    through the driver: SQLAlchemy's expanding IN rebuilt and re-processed a
    statement of thousands of parameters per chunk of an import."""
    if not emails:
        return []
    if connection.dialect.name != "sqlite":
        query = select(*(SUBSCRIBER.c[name.strip()] for name in columns.split(",")))
        return list(connection.execute(query.where(SUBSCRIBER.c.email.in_(list(emails)))))
    return sqlite_rows_in(connection, f"SELECT {columns} FROM subscriber WHERE email", emails)


def insert_enrollment_values(session: Session, values: Sequence[Mapping[str, Any]]) -> None:
    """Insert enrollments (one mapping of column values each) in one statement."""
    if values:
        _insert(session, ENROLLMENT, values)
