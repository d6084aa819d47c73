"""Lists as one array parameter on PostgreSQL, for the dispatcher's batches.

A batch reads and writes about a thousand enrollments, their subscribers and
their ledger rows by id. SQLAlchemy's expanding ``IN`` renders a statement
of one placeholder per value at every execution, and psycopg parses that
text again each time (it caches only statements of at most 50 parameters):
on PostgreSQL that was about 8% of a worker's CPU. There the list is one
array parameter instead, ``column = ANY(:values)``, so the statement's text
is the same for every batch. SQLite has no arrays and keeps ``IN``.

Writes of many rows go the same way on PostgreSQL: one statement whose rows
are one parameter, where one statement per row (even pipelined by
``executemany``) cost the server a parse, plan and execution each, about
90 µs a row on this machine. That parameter is the rows as one JSON text
(:func:`records`), not an array per column (``unnest``): psycopg adapts a
list value by value in Python (a round of a send pool's 8 answers took
180 µs of the worker's CPU that way, 50 µs as JSON; a batch's thousand
timestamps 3.8 ms), and ``json.dumps`` is one call in C.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import date
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


def records(dialect: Any, parameter: str, columns: Mapping[str, Any]) -> str:
    """PostgreSQL: ``json_to_recordset(%(parameter)s::json) AS v(name type, ...)``,
    the rows of :func:`record_values` as a table ``v`` with a typed column per
    name of ``columns`` (each its column's type), in their order."""
    typed = ", ".join(
        f"{name} {column.type.compile(dialect=dialect)}" for name, column in columns.items()
    )
    return f"json_to_recordset(%({parameter})s::json) AS v({typed})"


def record_values(
    dialect: Any, columns: Mapping[str, Any], rows: Sequence[Mapping[str, Any]]
) -> str:
    """``rows`` as :func:`records` reads them: one JSON text, each value of
    ``columns`` bound as its column's type binds it (aware datetimes in UTC,
    naive ones refused), a timestamp in ISO 8601 with its offset."""
    processors = [(name, _processor(dialect, column)) for name, column in columns.items()]
    bound_rows = [
        {
            name: value if process is None or value is None else process(value)
            for name, process in processors
            for value in (row[name],)
        }
        for row in rows
    ]
    return json.dumps(bound_rows, ensure_ascii=False, separators=(",", ":"), default=_json_value)


def _json_value(value: Any) -> str:
    if isinstance(value, date):  # datetimes too: the ISO form PostgreSQL reads
        return value.isoformat()
    raise TypeError(f"no JSON form for {type(value).__name__} in a batch's rows")


def bound(dialect: Any, column: Any, value: Any) -> Any:
    """One value as ``column``'s type binds it (for a plain parameter beside the arrays)."""
    process = _processor(dialect, column)
    return value if process is None or value is None else process(value)


def _processor(dialect: Any, column: Any) -> Any:
    """The column type's bind processor for ``dialect`` (None: values pass as they are)."""
    return column.type.dialect_impl(dialect).bind_processor(dialect)
