"""Values the sqlite3 driver would adapt the slow way are bound cheaply, and
stored exactly as before: a status as its text, None as NULL."""

from __future__ import annotations

import sqlite3
from enum import StrEnum
from pathlib import Path

from sqlalchemy import text

from nurture.core.vocabulary import EnrollmentStatus, SendStatus, SubscriberStatus
from nurture.store.db import make_engine


def test_statuses_and_none_bind_through_a_registered_adapter(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'binding.db'}")
    try:
        # Registered: the driver looks these types up instead of probing
        # __adapt__ / __conform__ (and raising) for every value.
        for kind in (type(None), SubscriberStatus, EnrollmentStatus, SendStatus):
            assert (kind, sqlite3.PrepareProtocol) in sqlite3.adapters, kind
        with engine.begin() as conn:
            conn.exec_driver_sql("CREATE TABLE t (status TEXT, note TEXT)")
            conn.exec_driver_sql(
                "INSERT INTO t VALUES (?, ?)",
                [(SubscriberStatus.UNSUBSCRIBED, None), (EnrollmentStatus.ACTIVE, "x")],
            )
            stored = conn.execute(
                text("SELECT status, typeof(status), note, typeof(note) FROM t ORDER BY rowid")
            ).all()
        assert [tuple(row) for row in stored] == [
            ("unsubscribed", "text", None, "null"),
            ("active", "text", "x", "text"),
        ]
        assert all(type(row[0]) is str for row in stored)
    finally:
        engine.dispose()


def test_a_status_enum_defined_later_still_binds_as_its_text(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'late.db'}")

    class Late(StrEnum):  # defined after the engine: not registered, the slow path
        ONE = "one"

    try:
        with engine.begin() as conn:
            conn.exec_driver_sql("CREATE TABLE t (status TEXT)")
            conn.exec_driver_sql("INSERT INTO t VALUES (?)", (Late.ONE,))
            assert conn.exec_driver_sql("SELECT status, typeof(status) FROM t").one() == (
                "one",
                "text",
            )
    finally:
        engine.dispose()
