"""Row ids as a path, a page link or a cursor gives them.

Every id column is an ``INTEGER`` (migration 0001): 32 bits signed on
PostgreSQL, so no row has an id outside 1 to :data:`MAX_ID`. A bigger number
is never sent to the database, where it would not just find nothing:
PostgreSQL refuses the query ("integer out of range") and the sqlite3 driver
raises ``OverflowError`` past ``2**63 - 1``.
"""

from __future__ import annotations

__all__ = ["MAX_ID", "parse_id"]

MAX_ID = 2**31 - 1
"""The largest id a row can have. SQLite's INTEGER would hold more, but only
after two billion rows: a database that could not move to PostgreSQL."""

_DIGITS = len(str(MAX_ID))


def parse_id(text: str, *, minimum: int = 1) -> int | None:
    """``text`` as an id from ``minimum`` to :data:`MAX_ID`, or None.

    Only ASCII digits: ``int()`` would also take a sign, spaces, underscores and
    other scripts' digits, and raises for more than 4,300 of them.
    """
    if not (text.isascii() and text.isdigit()) or len(text.lstrip("0")) > _DIGITS:
        return None
    value = int(text)
    return value if minimum <= value <= MAX_ID else None
