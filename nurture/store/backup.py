"""An online copy of a SQLite database: SQLite's backup API.

``sqlite3.Connection.backup`` copies the database while other connections
keep reading and writing (the worker may run). It copies in one step, inside
one read transaction: nurture's databases are in WAL mode, where a reader
never blocks the writers, and the copy is one consistent snapshot, including
what the write-ahead log holds that is not yet in the main file. (Copying in
small steps would restart whenever the worker wrote between two steps, and
might never finish under a busy worker.) Copying ``nurture.db`` with ``cp``
while a worker runs is not safe; this is.
"""

from __future__ import annotations

import os
import sqlite3
import tempfile
from pathlib import Path

BUSY_TIMEOUT = 30.0
"""Seconds to wait for a lock (only a rollback-journal database, not WAL, has one)."""


def backup_sqlite(source: Path, target: Path) -> int:
    """Copy the SQLite database ``source`` to ``target`` (a new file); return its
    size in bytes. ``target`` is written beside its final name under a fresh
    temporary name, then renamed, so a failed copy never leaves a half-written
    backup under that name (nor touches any other file)."""
    handle, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".partial")
    os.close(handle)
    partial = Path(name)
    try:
        src = sqlite3.connect(source, timeout=BUSY_TIMEOUT)
        try:
            dst = sqlite3.connect(partial)
            try:
                src.backup(dst)
                # A single file: the copy does not need the source's WAL mode.
                dst.execute("PRAGMA journal_mode=DELETE")
            finally:
                dst.close()
        finally:
            src.close()
        partial.replace(target)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return target.stat().st_size
