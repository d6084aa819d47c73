"""The Alembic environment of nurture, configured in code (no alembic.ini).

Run through :mod:`nurture.store.migrate`: ``upgrade()`` hands us its open
connection in ``config.attributes["connection"]``; only when that is missing
(the plain ``alembic`` command with ``-x``/a hand-built Config) do we make an
engine from ``sqlalchemy.url``. The context options (compare types, batch mode
on SQLite, how our column types are rendered) live in
``nurture.store.migrate.context_options`` so the model check uses the same ones.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from nurture.store.db import make_engine
from nurture.store.migrate import context_options

config = context.config


def run_migrations_offline() -> None:
    """Emit SQL to stdout (``--sql``) for a DBA to review, without connecting."""
    url = config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("offline migrations need sqlalchemy.url in the Alembic config")
    context.configure(
        url=url,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        **context_options(make_url(url).get_backend_name()),
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        context.configure(connection=connection, **context_options(connection.dialect.name))
        with context.begin_transaction():
            context.run_migrations()
        return
    url = config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("set sqlalchemy.url or pass a connection in config.attributes")
    engine = make_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as own_connection:
            context.configure(
                connection=own_connection, **context_options(own_connection.dialect.name)
            )
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
