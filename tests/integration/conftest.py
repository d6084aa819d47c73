"""Store fixtures: the same integration tests run on SQLite and PostgreSQL.

* ``engine``: an engine on ``db_url`` (see ``tests/conftest.py``), migrated to
  head with :func:`nurture.store.migrate.upgrade` (on SQLite, ``db_url`` is a
  copy of a file migrated once per process), disposed afterwards;
* ``session``: a SQLModel session from :func:`nurture.store.db.session_factory`;
* ``admin``: the web app with an admin logged in (:mod:`tests.admin_kit`).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session

from nurture.store.db import make_engine, session_factory
from nurture.store.migrate import upgrade
from tests.admin_kit import AdminApp, admin_app


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    engine = make_engine(db_url)
    upgrade(engine)  # on SQLite at head already: db_url copied a migrated file
    try:
        yield engine
    finally:
        # Before db_url's teardown drops the PostgreSQL schema: pooled
        # connections must be closed or the DROP waits on them.
        engine.dispose()


@pytest.fixture
def session(engine: Engine) -> Iterator[Session]:
    with session_factory(engine)() as session:
        yield session


@pytest.fixture
def admin(engine: Engine, tmp_path: Path) -> AdminApp:
    """The app over ``engine`` with the admin ``ana`` logged in (:mod:`tests.admin_kit`)."""
    return admin_app(engine, tmp_path)
