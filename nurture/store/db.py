"""Engines and sessions. Created at the edge from ``settings.database_url``."""

from __future__ import annotations

import re
import sqlite3
from enum import StrEnum
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError
from sqlalchemy.orm import sessionmaker
from sqlmodel import Session, create_engine

from nurture.errors import ConfigurationError
from nurture.urls import DATABASE_EXAMPLES, DATABASES

BUSY_TIMEOUT_MS = 30_000
"""How long a SQLite connection waits for another writer (every connection)."""

SETTING = "setting 'database_url' (in nurture.toml as database_url, or NURTURE_DATABASE_URL)"


def read_database_url(url: str) -> URL:
    """``url`` parsed; ConfigurationError naming the ``database_url`` setting
    when it is not a URL of a database nurture runs on. The message never
    shows the password."""
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError) as exc:
        number = re.match(r"invalid literal for int\(\) with base 10: (.*)", str(exc))
        reason = (
            f"the host:port part is malformed, port {number.group(1)}"
            if number
            else "it is not name://..."
        )
        raise ConfigurationError(
            f"{SETTING}: cannot be read as a URL ({_hide_password(reason, url)}), "
            f"{DATABASE_EXAMPLES}"
        ) from exc
    backend = parsed.drivername.partition("+")[0]
    if backend not in DATABASES:
        raise ConfigurationError(
            f"{SETTING}: unsupported database {backend!r} (nurture runs on SQLite and PostgreSQL)"
        )
    return parsed


def _hide_password(text: str, url: str) -> str:
    """``text`` without the password of ``url`` (which may not parse)."""
    found = re.search(r"://[^:/@]*:([^@]*)@", url)
    return text.replace(found.group(1), "***") if found and found.group(1) else text


def _create_engine(parsed: URL, **kwargs: Any) -> Engine:
    """SQLAlchemy's engine for ``parsed``; a driver that is not installed or
    not known is a ConfigurationError naming the setting."""
    shown = parsed.render_as_string(hide_password=True)
    usable = "use sqlite:///FILE or postgresql+psycopg://..."
    try:
        return create_engine(parsed, **kwargs)
    except NoSuchModuleError as exc:
        driver = parsed.drivername.partition("+")[2]
        raise ConfigurationError(
            f"{SETTING}: {shown}: unknown driver {driver!r} for "
            f"{parsed.get_backend_name()}: {usable}"
        ) from exc
    except ImportError as exc:
        missing = exc.name or str(exc)
        install = (
            "install it with pip install 'nurture[postgres]'"
            if parsed.get_backend_name() == "postgresql"
            else usable
        )
        raise ConfigurationError(
            f"{SETTING}: {shown}: its driver ({missing}) is not installed: {install}"
        ) from exc


def make_engine(
    url: str,
    *,
    pool_size: int | None = None,
    max_overflow: int | None = None,
    transaction_pooler: bool = False,
    **kwargs: Any,
) -> Engine:
    """An engine for ``url``; SQLite gets WAL, foreign keys and a busy timeout.

    ``pool_size`` and ``max_overflow`` size the connection pool of a server
    database (SQLAlchemy's defaults, 5 and 10, when None); SQLite ignores
    them (one file, no server connections to ration). ``transaction_pooler``:
    PostgreSQL is behind a pooler that may give each transaction another
    server connection, so no session state may outlive a transaction: psycopg
    prepares nothing (``prepare_threshold`` None, which also keeps
    :func:`nurture.store.rounds.keyed_round_plans` from setting anything).
    """
    parsed = read_database_url(url)
    if parsed.get_backend_name() == "sqlite":
        _register_sqlite_adapters()
        engine = _create_engine(
            parsed, connect_args={"check_same_thread": False, "timeout": 30}, **kwargs
        )

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            if parsed.database not in (None, "", ":memory:"):
                # WAL: readers (the web app) never block the dispatcher's writes.
                cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            cursor.close()

        return engine
    if pool_size is not None:
        kwargs.setdefault("pool_size", pool_size)
    if max_overflow is not None:
        kwargs.setdefault("max_overflow", max_overflow)
    engine = _create_engine(parsed, pool_pre_ping=True, **kwargs)
    if transaction_pooler:

        @event.listens_for(engine, "connect")
        def _no_session_state(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.prepare_threshold = None

    return engine


def _none(_value: None) -> None:
    return None


def _register_sqlite_adapters() -> None:
    """Let the sqlite3 driver bind ``None`` and ``StrEnum`` members (statuses)
    cheaply. It binds an exact ``int``, ``float`` or ``str`` as it is, but
    takes anything else, ``None`` and ``str`` subclasses included, through its
    adapter protocol: without a registered adapter, that looks for
    ``__adapt__`` and ``__conform__`` and builds and discards an
    AttributeError each time: 5% of a bulk import's instructions (five
    NULLs and two statuses per imported row; every write pays it). With an
    adapter registered it is one dict lookup and a call. Covers every
    ``StrEnum`` imported so far (the vocabulary, at least); a later one still
    binds correctly, the slow way."""
    sqlite3.register_adapter(type(None), _none)
    pending: list[type[StrEnum]] = list(StrEnum.__subclasses__())
    while pending:
        enum_type = pending.pop()
        sqlite3.register_adapter(enum_type, str.__str__)
        pending.extend(enum_type.__subclasses__())


def session_factory(engine: Engine) -> sessionmaker[Session]:
    # expire_on_commit=False: objects stay usable after commit without a
    # reload per object (the default reloads each row: a measured 2x slowdown).
    return sessionmaker(engine, class_=Session, expire_on_commit=False)


def refresh_statistics(conn: Connection, tables: list[str]) -> bool:
    """PostgreSQL: ``ANALYZE`` these tables now, in the caller's transaction.

    After a bulk load the planner would otherwise plan on the sizes it saw
    before (or none: a table never analyzed), until autovacuum's next
    analyze, which may be a minute away or, with autovacuum off, never.
    Measured on 10,000 enrollments loaded in one go: the dispatcher's claim
    took up to 1.2 s per batch of 1,000 without statistics, 0.04 s with
    them. SQLite keeps no statistics unless asked, and nurture's queries are
    written for its planner without them: nothing to do there. Returns
    whether it ran.
    """
    if conn.dialect.name != "postgresql":
        return False
    quote = conn.dialect.identifier_preparer.quote
    conn.execute(text(f"ANALYZE {', '.join(quote(name) for name in tables)}"))
    return True


def autovacuum_enabled(conn: Connection) -> bool | None:
    """PostgreSQL's ``autovacuum`` setting; None on SQLite (no such thing)."""
    if conn.dialect.name != "postgresql":
        return None
    return str(conn.execute(text("SHOW autovacuum")).scalar_one()).lower() == "on"
