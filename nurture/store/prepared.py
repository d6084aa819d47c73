"""Statements compiled once for a dialect and run by the driver.

The dispatcher writes once or more per email (the reservation right before the
provider call, the confirm's settle and enrollment update). SQLAlchemy's
execution layer re-processes every parameter set through its general
machinery, which on that path cost as much as the write itself; a
:class:`Prepared` statement is compiled once and its binds go through the
column types' own bind processors, so the stored values are the same as
through ``Connection.execute``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy.engine import Connection


class Prepared:
    """A statement compiled once for a dialect and run by the driver.

    For the dispatcher's per-email writes (the reservation, the confirm's
    settle and enrollment updates): SQLAlchemy's execution layer re-processes
    every parameter set through its general machinery, which on the hot path
    cost as much as the write itself. Binds are processed with the column
    types' own bind processors, so values are stored exactly as through
    ``Connection.execute``. Not for expanding (``IN``) parameters.
    """

    def __init__(self, statement: Any, dialect: Any, names: Sequence[str]) -> None:
        compiled = statement.compile(dialect=dialect)
        self.sql: str = compiled.string
        self._defaults: dict[str, Any] = compiled.construct_params(dict.fromkeys(names))
        self._processors: dict[str, Any] = {}
        for name, bind in compiled.binds.items():
            # The dialect's own type: a TypeDecorator's processor then ends in
            # the driver's format (SQLite: the DATETIME string), as execute does.
            process = bind.type.dialect_impl(dialect).bind_processor(dialect)
            if process is not None:
                self._processors[name] = process
        for name, value in self._defaults.items():  # literals compiled into binds
            if name not in names and value is not None and name in self._processors:
                self._defaults[name] = self._processors[name](value)
        self._user = [n for n in names if n in self._processors]
        self._order = list(compiled.positiontup or ()) if compiled.positional else None
        # Per position: the name, its bind processor (for the caller's values
        # only; literals are processed above) and the default.
        user = set(self._user)
        self._plan = [
            (n, _Repeating(self._processors[n]) if n in user else None, self._defaults.get(n))
            for n in (self._order if self._order is not None else self._defaults)
        ]

    def params(self, values: dict[str, Any]) -> Any:
        """The driver's parameters for ``values`` (a tuple for a positional
        paramstyle). Runs once per row written on the hot path."""
        row = []
        for name, process, default in self._plan:
            value = values.get(name, default)
            row.append(process(value) if process is not None and value is not None else value)
        if self._order is not None:
            return tuple(row)
        return dict(zip(self._defaults, row, strict=True))

    def execute(self, cursor: Any, values: dict[str, Any]) -> int:
        """Execute once on a driver cursor the caller holds; the rows changed."""
        cursor.execute(self.sql, self.params(values))
        return int(cursor.rowcount)

    def run(self, conn: Connection, rows: Sequence[dict[str, Any]]) -> int:
        """Execute for every parameter set, in the connection's transaction;
        return the rows changed (summed)."""
        cursor = conn.connection.cursor()
        try:
            if len(rows) == 1:
                cursor.execute(self.sql, self.params(rows[0]))
            else:
                cursor.executemany(self.sql, [self.params(r) for r in rows])
            return int(cursor.rowcount)
        finally:
            cursor.close()


class _Repeating:
    """A bind processor that remembers its last datetime: a pass writes the
    same lease and the same ``now`` for every email, and turning a datetime
    into the driver's value costs more than the comparison. Safe across threads:
    the (value, result) pair is replaced as one object."""

    __slots__ = ("_last", "_process")

    def __init__(self, process: Any) -> None:
        self._process = process
        self._last: tuple[Any, Any] = (_NOTHING, None)

    def __call__(self, value: Any) -> Any:
        if type(value) is not datetime:
            return self._process(value)
        last, result = self._last
        if type(last) is datetime and value == last:  # the same instant: the same UTC value
            return result
        result = self._process(value)
        self._last = (value, result)
        return result


_NOTHING = object()

_CACHE: dict[tuple[str, int], Prepared] = {}


def prepared(conn: Connection, key: str, build: Any) -> Prepared:
    """One Prepared per statement and dialect, made on first use."""
    return prepared_for(conn.dialect, key, build)


def prepared_for(dialect: Any, key: str, build: Any) -> Prepared:
    """:func:`prepared` for a dialect (when the caller holds a driver connection)."""
    cache_key = (key, id(dialect))
    found = _CACHE.get(cache_key)
    if found is None:
        statement, names = build()
        found = _CACHE[cache_key] = Prepared(statement, dialect, names)
    return found
