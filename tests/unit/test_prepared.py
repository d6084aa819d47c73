"""Prepared statements bind values exactly as SQLAlchemy's execution layer does.

The hot path writes through :class:`~nurture.store.prepared.Prepared`, which
builds the driver's parameters itself and remembers the last datetime it
converted (a pass writes the same lease and ``now`` for every email). These
tests hold it to what ``Connection.execute`` would have bound.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import bindparam, update
from sqlalchemy.dialects import postgresql, sqlite

from nurture.store.prepared import Prepared
from nurture.store.queries import SEND

STATEMENT = (
    update(SEND)
    .where(SEND.c.key == bindparam("_key"), SEND.c.status == "reserved")
    .values(status=bindparam("_status"), sent_at=bindparam("_sent"), attempts=bindparam("_n"))
)
NAMES = ["_key", "_status", "_sent", "_n"]
NOON = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def reference(dialect: Any, values: dict[str, Any]) -> Any:
    """What SQLAlchemy itself binds for ``values``."""
    compiled = STATEMENT.compile(dialect=dialect)
    params = compiled.construct_params(values)
    processors = compiled._bind_processors
    processed = {
        name: processors[name](value) if name in processors and value is not None else value
        for name, value in params.items()
    }
    if compiled.positional:
        return tuple(processed[name] for name in compiled.positiontup or ())
    return processed


@pytest.mark.parametrize("dialect", [sqlite.dialect(), postgresql.dialect()], ids=["sqlite", "pg"])
def test_parameters_match_sqlalchemys_for_a_run_of_rows(dialect: Any) -> None:
    statement = Prepared(STATEMENT, dialect, NAMES)
    stockholm = timezone(timedelta(hours=1))
    rows = [
        {"_key": "a", "_status": "sent", "_sent": NOON, "_n": 1},
        {"_key": "b", "_status": "sent", "_sent": NOON, "_n": 2},  # the remembered value
        {"_key": "c", "_status": "sent", "_sent": NOON + timedelta(microseconds=1), "_n": 1},
        # The same instant in another zone: stored as the same UTC value.
        {"_key": "d", "_status": "sent", "_sent": NOON.astimezone(stockholm), "_n": 1},
        {"_key": "e", "_status": "failed", "_sent": None, "_n": 3},
        {"_key": "f", "_status": "sent", "_sent": NOON, "_n": 1},
    ]
    for row in rows:
        assert statement.params(row) == reference(dialect, row), row


def test_a_naive_datetime_is_refused_even_right_after_an_equal_aware_one() -> None:
    statement = Prepared(STATEMENT, sqlite.dialect(), NAMES)
    statement.params({"_key": "a", "_status": "sent", "_sent": NOON, "_n": 1})
    with pytest.raises(ValueError, match="naive"):
        statement.params(
            {"_key": "b", "_status": "sent", "_sent": NOON.replace(tzinfo=None), "_n": 1}
        )
