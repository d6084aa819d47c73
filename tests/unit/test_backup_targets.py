"""``db backup``'s target is checked before anything is written: never the
database's own files, never a device or other special file, and an OS error
(a name too long, a full disk) is a message, not a traceback."""

from __future__ import annotations

import os
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from nurture.errors import ConfigurationError
from nurture.ops.backup import backup_database


@pytest.fixture
def live(tmp_path: Path) -> Iterator[Path]:
    """A WAL database with a committed row only its write-ahead log holds, and
    a connection that keeps it open (as a running worker does)."""
    path = tmp_path / "nurture.db"
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA wal_autocheckpoint=0")
    conn.execute("CREATE TABLE subscriber (email TEXT)")
    conn.execute("INSERT INTO subscriber VALUES ('karin@example.com')")
    conn.commit()
    assert (tmp_path / "nurture.db-wal").stat().st_size > 0
    yield path
    conn.close()


def _rows(path: Path) -> list[tuple[str]]:
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT email FROM subscriber").fetchall()


@pytest.mark.parametrize("suffix", ["-wal", "-shm", "-journal"])
def test_the_databases_own_files_are_refused_even_with_force(live: Path, suffix: str) -> None:
    target = live.with_name(live.name + suffix)
    before = target.read_bytes() if target.exists() else None

    with pytest.raises(ConfigurationError, match=rf"the database's own {suffix[1:]} file"):
        backup_database(f"sqlite:///{live}", target, force=True)

    assert (target.read_bytes() if target.exists() else None) == before
    assert _rows(live) == [("karin@example.com",)]


def test_a_link_to_the_write_ahead_log_is_refused_too(live: Path, tmp_path: Path) -> None:
    link = tmp_path / "copy.db"
    link.symlink_to(live.with_name("nurture.db-wal"))

    with pytest.raises(ConfigurationError, match="own wal file"):
        backup_database(f"sqlite:///{live}", link, force=True)
    assert _rows(live) == [("karin@example.com",)]


def test_a_special_file_is_never_replaced(live: Path, tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)

    with pytest.raises(ConfigurationError, match="not a regular file"):
        backup_database(f"sqlite:///{live}", fifo, force=True)
    assert stat.S_ISFIFO(fifo.stat().st_mode)


def test_a_name_too_long_is_a_message(live: Path, tmp_path: Path) -> None:
    target = tmp_path / ("x" * 300)

    with pytest.raises(ConfigurationError, match=r"cannot write .*too long"):
        backup_database(f"sqlite:///{live}", target)
    assert {p.name for p in tmp_path.iterdir()} == {
        "nurture.db",
        "nurture.db-wal",
        "nurture.db-shm",
    }


def test_a_backup_leaves_no_partial_file_and_touches_no_other(live: Path, tmp_path: Path) -> None:
    neighbour = tmp_path / "copy.db.partial"
    neighbour.write_text("someone's file", "utf-8")
    target = tmp_path / "copy.db"

    done = backup_database(f"sqlite:///{live}", target)

    assert done.size == target.stat().st_size
    assert _rows(target) == [("karin@example.com",)]
    assert neighbour.read_text("utf-8") == "someone's file"
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".partial") and p != neighbour]


def test_missing_folders_on_the_way_are_made(live: Path, tmp_path: Path) -> None:
    target = tmp_path / "backups" / "daily" / "nurture.db"

    done = backup_database(f"sqlite:///{live}", target)

    assert done.created == tmp_path / "backups"
    assert _rows(target) == [("karin@example.com",)]
    again = backup_database(f"sqlite:///{live}", target, force=True)
    assert again.created is None  # nothing made the second time


def test_a_failed_copy_takes_back_the_folders_it_made(tmp_path: Path) -> None:
    source = tmp_path / "nurture.db"
    source.write_bytes(b"not a database, but a file all the same " * 200)
    (tmp_path / "backups").mkdir()  # there already: stays

    with pytest.raises(ConfigurationError, match="the backup failed"):
        backup_database(f"sqlite:///{source}", tmp_path / "backups" / "a" / "b" / "n.db")
    assert (tmp_path / "backups").is_dir()
    assert list((tmp_path / "backups").iterdir()) == []


def test_a_file_where_a_folder_should_be_is_a_message(live: Path, tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine", "utf-8")

    with pytest.raises(ConfigurationError, match=r"notes\.txt is a file, not a folder"):
        backup_database(f"sqlite:///{live}", tmp_path / "notes.txt" / "deeper" / "n.db")
    assert (tmp_path / "notes.txt").read_text("utf-8") == "mine"
