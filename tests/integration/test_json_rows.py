"""PostgreSQL: a batch's rows as one JSON parameter (``nurture.store.arrays``).

The ledger's inserts and the enrollments' updates pass their rows as JSON
read back by ``json_to_recordset``; every value must arrive as the column
binds it, whatever the text holds.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy.engine import Engine

from nurture.store.arrays import record_values, records
from nurture.store.queries import SEND

COLUMNS = {
    name: SEND.c[name]
    for name in ("key", "attempts", "subject", "reason", "sent_at", "due_at", "provider_message_id")
}

HOSTILE = [
    "plain",
    'it\'s "quoted" \\ back\\slashed',
    "line one\nline two\r\n\ttabbed",
    "Hej Åsa, välkommen! Ünïcödé",
    "مرحبا \u202eevil\u202c right-to-left",
    "emoji 🎉👩‍👩‍👧 and a flag 🇸🇪",
    "{{ config }} {% raw %} %(name)s %s $1 ::json",
    '{"looks": ["like", "json"]}',
    "\x01\x1f control characters",
    "x" * 200_000,
]


def _read_back(engine: Engine, rows: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    with engine.connect() as conn:
        return [
            tuple(row)
            for row in conn.exec_driver_sql(
                f"SELECT * FROM {records(conn.dialect, 'rows', COLUMNS)}",
                {"rows": record_values(conn.dialect, COLUMNS, rows)},
            )
        ]


def test_every_value_comes_back_as_it_was_bound(pg_engine: Engine) -> None:
    stockholm = timezone(timedelta(hours=1))
    rows = [
        {
            "key": f"k{n}",
            "attempts": n,
            "subject": text,
            "reason": None if n % 2 else text[::-1],
            "sent_at": datetime(2026, 11, 27, 9, 30, 15, 123456, tzinfo=stockholm)
            + timedelta(microseconds=n),
            "due_at": datetime(2026, 1, 1, tzinfo=UTC),
            "provider_message_id": None,
        }
        for n, text in enumerate(HOSTILE)
    ]
    back = _read_back(pg_engine, rows)
    assert back == [tuple(row[name] for name in COLUMNS) for row in rows]
    # The same instants, in UTC as the column binds them (to the microsecond).
    assert back[1][4] == datetime(2026, 11, 27, 8, 30, 15, 123457, tzinfo=UTC)
    assert back[1][4].utcoffset() == timedelta(0)


def test_no_rows_read_as_no_rows(pg_engine: Engine) -> None:
    assert _read_back(pg_engine, []) == []


def test_a_naive_time_is_refused_before_anything_is_sent(pg_engine: Engine) -> None:
    row = {name: None for name in COLUMNS} | {"key": "k", "sent_at": datetime(2026, 1, 1)}
    with pytest.raises(ValueError, match="naive"):
        record_values(pg_engine.dialect, COLUMNS, [row])
