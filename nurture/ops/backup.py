"""``nurture db backup PATH``: what to copy, refused where it would do harm.

SQLite: an online copy through SQLite's backup API
(:func:`nurture.store.backup.backup_sqlite`), safe while the worker runs.
PostgreSQL: ``pg_dump`` is the tool (consistent snapshots, parallel dumps,
``pg_restore``); :class:`UsePgDump` carries the command to run, without the
password.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

from nurture.errors import ConfigurationError


class UsePgDump(Exception):
    """The database is not SQLite: ``command`` is how to back it up."""

    def __init__(self, command: str) -> None:
        super().__init__(command)
        self.command = command


@dataclass(frozen=True)
class Backup:
    source: Path
    target: Path
    size: int
    created: Path | None = None  # the outermost folder made for the target, if any


def backup_database(database_url: str, target: Path, *, force: bool = False) -> Backup:
    """Copy the database of ``database_url`` to ``target``.

    Missing folders on the way to ``target`` are made (and removed again if
    the copy fails). Raises :class:`ConfigurationError` for a target that
    exists (without ``force``) or is the database itself, and for an
    in-memory or missing source; :class:`UsePgDump` for PostgreSQL (or any
    server database).
    """
    from sqlalchemy.engine import make_url

    from nurture.store.backup import backup_sqlite

    url = make_url(database_url)
    if url.get_backend_name() != "sqlite":
        raise UsePgDump(pg_dump_command(database_url, target))
    if url.database in (None, "", ":memory:"):
        raise ConfigurationError("an in-memory SQLite database has nothing to back up")
    try:
        source = Path(str(url.database)).resolve()
        if not source.is_file():
            raise ConfigurationError(f"no database file at {source} (check database_url)")
        target = _checked_target(source, target.resolve(), force=force)
        created = _make_folders(target.parent)
        try:
            size = backup_sqlite(source, target)
        except BaseException:
            _remove_empty(target.parent, created)
            raise
    except OSError as exc:  # a name too long, a folder that is a file, a full disk ...
        raise ConfigurationError(f"cannot write {target}: {exc.strerror or exc}") from None
    except sqlite3.Error as exc:
        raise ConfigurationError(f"the backup failed: {exc}") from None
    return Backup(source, target, size, created)


def _make_folders(folder: Path) -> Path | None:
    """Make ``folder`` and its missing parents; the outermost one made, if any."""
    missing = [f for f in (folder, *folder.parents) if not f.exists()]
    if not missing:
        return None
    folder.mkdir(parents=True)
    return missing[-1]


def _remove_empty(folder: Path, created: Path | None) -> None:
    """Undo :func:`_make_folders` as far as the folders are still empty."""
    if created is None:
        return
    for made in (folder, *folder.parents):
        try:
            made.rmdir()
        except OSError:
            return
        if made == created:
            return


# The files SQLite keeps beside a database while it is open: replacing one
# of them under a running worker loses what it holds (the write-ahead log
# holds the latest commits).
_SIBLINGS = ("-wal", "-shm", "-journal")


def _checked_target(source: Path, target: Path, *, force: bool) -> Path:
    if target == source:
        raise ConfigurationError(f"{target} is the database itself: give another path")
    for suffix in _SIBLINGS:
        if target == source.with_name(source.name + suffix):
            raise ConfigurationError(
                f"{target} is the database's own {suffix[1:]} file: give another path"
            )
    for folder in (target.parent, *target.parent.parents):
        if folder.exists():
            if not folder.is_dir():
                raise ConfigurationError(f"{folder} is a file, not a folder: give another path")
            break
    if target.is_dir():
        raise ConfigurationError(
            f"{target} is a folder: give a file name, e.g. {target}/nurture.db"
        )
    if target.exists() and not target.is_file():
        raise ConfigurationError(f"{target} is not a regular file (a device?): give a file path")
    if target.exists() and not force:
        raise ConfigurationError(f"{target} exists: pass --force to overwrite it")
    return target


def pg_dump_command(database_url: str, target: Path) -> str:
    """The ``pg_dump`` command line for ``database_url`` (password left out:
    pg_dump reads PGPASSWORD or ~/.pgpass), after a ``mkdir -p`` of the
    target's folder when it is missing."""
    import shlex

    from sqlalchemy.engine import make_url

    url = make_url(database_url)
    parts = ["pg_dump", "--format=custom", f"--file={target}"]
    if url.host:
        parts.append(f"--host={url.host}")
    if url.port:
        parts.append(f"--port={url.port}")
    if url.username:
        parts.append(f"--username={url.username}")
    options = url.query.get("options")
    if isinstance(options, str) and "search_path=" in options:
        schema = options.split("search_path=", 1)[1].split()[0].split(",")[0]
        parts.append(f"--schema={schema}")
    parts.append(url.database or "nurture")
    command = shlex.join(parts)
    if not target.parent.exists():
        # pg_dump does not make folders (the SQLite backup does): the line as
        # printed must work as it is, in a cron job too.
        command = f"mkdir -p {shlex.quote(str(target.parent))} && {command}"
    return command
