"""What the admin tests share: an app over a real database with one admin
logged in through the login form, and the CSRF token of a page."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from fastapi import FastAPI
from fastapi import routing as fastapi_routing
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine
from starlette.routing import BaseRoute

from nurture.admin.users import create_user
from nurture.app.clock import FixedClock
from nurture.app.runtime import Runtime, build_runtime
from nurture.app.settings import Settings
from nurture.store.db import session_factory
from nurture.testing import MemoryTransport
from nurture.web.app import create_app
from tests.factories import example_workdir

NOW = datetime(2026, 11, 27, 14, 30, tzinfo=UTC)  # a Friday, 15:30 in Stockholm
ADMIN = "ana"
PASSWORD = "correct horse battery staple"
ADMIN_EMAIL = "ana@example.com"

_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def csrf_of(html: str) -> str:
    """The CSRF token of the first form on a page."""
    found = _CSRF.search(html)
    assert found is not None, "the page has no form with a CSRF token"
    return found.group(1)


def log_in(client: TestClient, name: str = ADMIN, password: str = PASSWORD) -> None:
    """Log in through the form, as a person would; the client keeps the cookie."""
    page = client.get("/admin/login")
    answer = client.post(
        "/admin/login",
        data={"csrf": csrf_of(page.text), "name": name, "password": password, "next": "/admin"},
        follow_redirects=False,
    )
    assert answer.status_code == 303, answer.text


@dataclass(frozen=True)
class Served:
    """One entry of an app's route table: its full path, methods, and the route."""

    path: str
    methods: frozenset[str]
    route: BaseRoute


def route_table(app: FastAPI) -> list[Served]:
    """Every route ``app`` serves, however deeply its routers are included.

    Since FastAPI 0.140, ``app.routes`` holds an included router as one entry
    (without a path), not its routes: a plain walk over it finds nothing
    under ``/admin``. ``fastapi.routing.iter_route_contexts`` (what FastAPI's
    own OpenAPI builder walks) gives each route with its full path; older
    FastAPI versions flatten ``app.routes`` themselves.
    """
    walk = getattr(fastapi_routing, "iter_route_contexts", None)
    table = []
    for entry in walk(app.routes) if walk is not None else app.routes:
        path = getattr(entry, "path", None)
        if path is None:
            continue
        route = getattr(entry, "original_route", entry)
        methods = frozenset(getattr(entry, "methods", None) or ())
        table.append(Served(str(path), methods, route))
    return table


@dataclass
class AdminApp:
    """The app, its runtime and a client logged in as :data:`ADMIN`."""

    client: TestClient
    runtime: Runtime
    transport: MemoryTransport
    engine: Engine
    settings: Settings
    clock: FixedClock

    def anonymous(self) -> TestClient:
        """A second client on the same app, not logged in."""
        return TestClient(self.client.app, base_url=str(self.client.base_url))


def admin_app(engine: Engine, tmp_path: Path, *, now: datetime = NOW) -> AdminApp:
    settings = example_workdir(tmp_path)
    transport = MemoryTransport()
    clock = FixedClock(now)
    runtime = build_runtime(settings, clock, transport=transport, engine=engine, migrate=False)
    with session_factory(engine)() as session:
        create_user(session, ADMIN, PASSWORD, now=now, email=ADMIN_EMAIL, zone="Europe/Stockholm")
        session.commit()
    client = TestClient(create_app(runtime))
    log_in(client)
    return AdminApp(client, runtime, transport, engine, settings, clock)
