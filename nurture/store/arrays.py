"""Lists as one array parameter on PostgreSQL, for the dispatcher's batches.

A batch reads and writes about a thousand enrollments, their subscribers and
their ledger rows by id. SQLAlchemy's expanding ``IN`` renders a statement
of one placeholder per value at every execution, and psycopg parses that
text again each time (it caches only statements of at most 50 parameters):
on PostgreSQL that was about 8% of a worker's CPU. There the list is one
array parameter instead, ``column = ANY(:values)``, so the statement's text
is the same for every batch. SQLite has no arrays and keeps ``IN``.

Writes of many rows go the same way on PostgreSQL: one statement whose
columns are arrays (``unnest``), where one statement per row (even pipelined
by ``executemany``) cost the server a parse, plan and execution each, about
90 µs a row on this machine.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import any_, bindparam
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import Connection
from sqlalchemy.sql.elements import ColumnElement


def among(conn: Connection, column: Any, values: Iterable[Any]) -> ColumnElement[bool]:
    """``column`` is one of ``values`` (which may be empty: then nothing is)."""
    wanted = list(values)
    if conn.dialect.name == "postgresql":
        array = bindparam(None, wanted, type_=ARRAY(column.type))
        condition: ColumnElement[bool] = column == any_(array)
        return condition
    return column.in_(wanted)  # type: ignore[no-any-return]


def unnested(dialect: Any, columns: Mapping[str, Any]) -> str:
    """``unnest(%(a)s::type[], %(b)s::type[], ...)``: one typed array
    parameter per name, of its column's type, for :func:`column_arrays`'
    values; in the order of ``columns``."""
    arrays = ", ".join(
        f"%({name})s::{column.type.compile(dialect=dialect)}[]" for name, column in columns.items()
    )
    return f"unnest({arrays})"


def column_arrays(
    dialect: Any, columns: Mapping[str, Any], rows: Sequence[Mapping[str, Any]]
) -> dict[str, list[Any]]:
    """``rows`` turned into one list per name of ``columns``, each value bound
    as its column's type binds it (aware datetimes in UTC, naive ones refused)."""
    arrays: dict[str, list[Any]] = {}
    for name, column in columns.items():
        process = _processor(dialect, column)
        values = [row[name] for row in rows]
        if process is not None:
            values = [None if value is None else process(value) for value in values]
        arrays[name] = values
    return arrays


def bound(dialect: Any, column: Any, value: Any) -> Any:
    """One value as ``column``'s type binds it (for a plain parameter beside the arrays)."""
    process = _processor(dialect, column)
    return value if process is None or value is None else process(value)


def _processor(dialect: Any, column: Any) -> Any:
    """The column type's bind processor for ``dialect`` (None: values pass as they are)."""
    return column.type.dialect_impl(dialect).bind_processor(dialect)
