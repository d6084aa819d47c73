"""The bounds of the numbers list commands take (``--limit``, ``--offset``).

Typer checks them (``min=``/``max=``), so a value past them is a usage error
naming the option and the range, exit 2, never an integer the database
cannot bind (SQLite and PostgreSQL stop at 2**63 - 1).
"""

from __future__ import annotations

MAX_ROWS = 100_000
"""The most rows one listing shows (``log --limit`` had it first)."""

MAX_OFFSET = 2**31 - 1
"""The most rows a listing skips: more than any table here holds."""
