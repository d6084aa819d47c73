"""Long IN lists sent to SQLite's driver in pieces."""

from __future__ import annotations

from sqlalchemy import create_engine

from nurture.store.queries import SQLITE_IN_PIECE, sqlite_rows_in


def test_every_matching_row_comes_back_across_pieces() -> None:
    engine = create_engine("sqlite://")
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE t (v TEXT PRIMARY KEY, n INTEGER)")
        conn.exec_driver_sql(
            "INSERT INTO t VALUES (?, ?)", [(f"v{n}", n) for n in range(3 * SQLITE_IN_PIECE)]
        )
        expected = [n for n in range(3 * SQLITE_IN_PIECE) if n % 7]
        wanted = [f"v{n}" for n in expected] + ["absent"]
        rows = sqlite_rows_in(conn, "SELECT v, n FROM t WHERE v", wanted)
        assert len(wanted) > 2 * SQLITE_IN_PIECE  # three pieces
        assert sqlite_rows_in(conn, "SELECT v FROM t WHERE v", []) == []
    assert sorted(n for _, n in rows) == expected
