"""Fixtures shared by every test layer.

``db_url`` is parametrized over SQLite and PostgreSQL, so any test that asks
for it (directly or through ``engine``/``session`` in ``tests/integration``)
runs once per backend:

* ``sqlite``: a fresh file in ``tmp_path``;
* ``postgresql``: needs ``NURTURE_TEST_DATABASE_URL``, else it is skipped. Each
  test gets its own schema ``nurture_test_<hex>``, named in the URL itself
  (``?options=-csearch_path=...``), so parallel and repeated runs never see
  each other's tables, and the URL can be handed as is to a subprocess (the
  CLI, the web app) through ``NURTURE_DATABASE_URL``. The schema is dropped
  afterwards.

A test that uses ``engine`` gets a SQLite database already at head instead: a
copy of a file migrated once per test process.

Select one backend with ``-k sqlite`` / ``-k postgresql``, or ``-m postgres``.
"""

from __future__ import annotations

import os
import secrets
import shutil
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.pool import NullPool

from nurture.store.db import make_engine
from nurture.store.migrate import upgrade

PG_ENV = "NURTURE_TEST_DATABASE_URL"
PG_SKIP_REASON = f"set {PG_ENV}=postgresql+psycopg://... to run the PostgreSQL cases"


def _with_search_path(url: str, schema: str) -> str:
    """``url`` whose connections use ``schema`` first (a libpq ``options`` parameter)."""
    parsed = make_url(url)
    options = parsed.query.get("options")
    extra = f"-csearch_path={schema}"
    combined = f"{options} {extra}" if isinstance(options, str) and options else extra
    return parsed.update_query_dict({"options": combined}).render_as_string(hide_password=False)


BROWSER_TESTS = "tests/browser/"


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """Under ``pytest -n`` (``make test``): each test goes to whichever worker
    is free, except the browser tests, which all go to one worker, so their
    session-wide served site (``tests/browser/conftest.py``) is seeded once.

    pytest-xdist's own ``xdist_group`` marker would say this, but its way of
    passing the group (appending it to the test's node id) no longer takes
    under pytest 9, so the groups are made here from the path instead.
    """
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadGroupScheduling

    class BrowserTestsTogether(LoadGroupScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return BROWSER_TESTS if nodeid.startswith(BROWSER_TESTS) else nodeid

    return BrowserTestsTogether(config, log)


@pytest.fixture(autouse=True)
def _no_developer_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test sees the settings it sets itself, never the developer's shell.

    A ``NURTURE_TRANSPORT=smtp`` or ``NURTURE_BATCH_SIZE`` exported for local
    work would otherwise change what ``Settings()`` returns here. Only the
    test database's URL is kept: it is how the PostgreSQL cases are asked for.
    """
    for name in list(os.environ):
        if name.startswith("NURTURE_") and name != PG_ENV:
            monkeypatch.delenv(name)


@pytest.fixture(autouse=True)
def _forget_web_apps() -> Iterator[None]:
    """Let each test's web app go when the test ends.

    FastAPI keeps module-level LRU caches (4,096 entries each) of the
    endpoint functions it has classified, and our endpoints are closures over
    their app's runtime: engine, templates, sequences. One process serves one
    app, so that costs nothing in use; a test process that builds an app per
    test kept the last hundred or so alive (about 5 MB each), and the growing
    heap made every full garbage collection slower. Cleared after each test.
    """
    yield
    models = sys.modules.get("fastapi.dependencies.models")
    for value in vars(models).values() if models is not None else ():
        clear = getattr(value, "cache_clear", None)
        if callable(clear):
            clear()


@pytest.fixture
def pg_schema_url() -> Iterator[str]:
    """A PostgreSQL URL whose search_path is a brand-new, empty schema."""
    base = os.environ.get(PG_ENV)
    if not base:
        pytest.skip(PG_SKIP_REASON)
    schema = f"nurture_test_{secrets.token_hex(6)}"
    admin = make_engine(base, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE SCHEMA "{schema}"'))
        yield _with_search_path(base, schema)
    finally:
        with admin.connect() as connection:
            # A connection left idle in a transaction would block the drop
            # forever; fail the teardown instead.
            connection.execute(text("SET lock_timeout = '10s'"))
            connection.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture
def pg_engine(pg_schema_url: str) -> Iterator[Engine]:
    """An engine on :func:`pg_schema_url`'s new schema, migrated to head."""
    engine = make_engine(pg_schema_url)
    upgrade(engine)
    try:
        yield engine
    finally:
        engine.dispose()


@pytest.fixture(scope="session")
def migrated_sqlite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file migrated to head once per test process, for ``db_url`` to copy."""
    path = tmp_path_factory.mktemp("migrated") / "nurture.db"
    engine = make_engine(f"sqlite:///{path}")
    upgrade(engine)
    engine.dispose()  # closing the last connection folds the WAL into the file
    assert not path.with_name(path.name + "-wal").exists()
    return path


@pytest.fixture(
    params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)],
)
def db_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    """An empty database (no tables): a SQLite file, or a fresh PostgreSQL schema.

    On SQLite, a test that uses ``engine`` (``tests/integration``), which
    migrates it to head anyway, gets a copy of a file migrated once per test
    process (:func:`migrated_sqlite`) instead: a copy takes a millisecond,
    running the migrations a fifth of a second, more than most integration
    tests take themselves. (On PostgreSQL a copy, ``CREATE DATABASE ...
    TEMPLATE``, was measured no faster than migrating a fresh schema.)
    """
    if request.param == "sqlite":
        path = tmp_path_factory.mktemp("db") / "nurture.db"
        if "engine" in request.fixturenames:
            shutil.copyfile(request.getfixturevalue("migrated_sqlite"), path)
        return f"sqlite:///{path}"
    url: str = request.getfixturevalue("pg_schema_url")
    return url


@pytest.fixture
def now() -> datetime:
    """A fixed, aware UTC "now" (a Tuesday), for services that take the clock."""
    return datetime(2025, 3, 4, 9, 30, tzinfo=UTC)
