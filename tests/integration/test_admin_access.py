"""No ``/admin`` route is open: a walk over the app's own route table.

Every route under ``/admin`` (but the login form) is requested, with each of
its methods and dummy path parameters, by someone who is not logged in: a
page's GET is sent to the login page, any other method is refused. Every
route under ``/admin/api`` answers 401 without a token or with an unknown
one, 403 with an ``ingest`` token, and 401 to a logged-in browser without a
token. The routes come from the app's own route table (``create_app(runtime)``,
walked into its included routers by :func:`tests.admin_kit.route_table`), so a
route added later is checked without touching this file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import quote

import httpx
from fastapi import Depends, FastAPI
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from nurture.audience.tokens import create_token
from nurture.store.db import session_factory
from nurture.web.admin.auth import AdminAuth
from tests.admin_kit import AdminApp, Served, route_table

PUBLIC = {("/admin/login", "GET"), ("/admin/login", "POST")}
"""The only ``/admin`` routes anyone may call: the login form and its post."""

KNOWN = {("/admin/account", "GET"), ("/admin/logout", "POST"), ("/admin/zone", "POST")}
"""Routes of the foundation: the walk must find at least these."""

_PARAM = re.compile(r"\{([^}:]+)(?::[^}]+)?\}")


@dataclass(frozen=True)
class Call:
    template: str  # the route's path, as declared
    method: str
    url: str  # with dummy path parameters

    @property
    def api(self) -> bool:
        return self.template == "/admin/api" or self.template.startswith("/admin/api/")


def _admin_routes(app: FastAPI) -> list[Served]:
    return [served for served in route_table(app) if served.path.startswith("/admin")]


def _calls(app: FastAPI) -> list[Call]:
    """One call per (``/admin`` route, method), path parameters filled with ``1``."""
    calls = []
    for served in _admin_routes(app):
        assert isinstance(served.route, APIRoute), (
            f"{served.route!r} under /admin is not an API route (a mount of static files?): "
            "decide whether it may be public and say so in this test"
        )
        url = _PARAM.sub("1", served.path)
        for method in sorted(served.methods):
            if (served.path, method) not in PUBLIC:
                calls.append(Call(served.path, method, url))
    return calls


def _request(client: TestClient, call: Call, headers: dict[str, str] | None = None) -> int:
    extra = {} if call.method in ("GET", "HEAD", "DELETE") else {"json": {}}
    answer: httpx.Response = client.request(
        call.method, call.url, headers=headers or {}, follow_redirects=False, **extra
    )
    return answer.status_code


def _location(client: TestClient, call: Call) -> str | None:
    answer = client.request(call.method, call.url, follow_redirects=False)
    return answer.headers.get("location")


def test_the_walk_covers_every_admin_route(admin: AdminApp) -> None:
    app = admin.client.app
    assert isinstance(app, FastAPI)
    declared = {(served.path, method) for served in _admin_routes(app) for method in served.methods}
    checked = {(call.template, call.method) for call in _calls(app)}
    assert checked, "no /admin route found: is the admin router included in create_app?"
    assert checked >= KNOWN
    assert checked | PUBLIC == declared
    assert not checked & PUBLIC


def test_no_admin_page_answers_without_a_session(admin: AdminApp) -> None:
    app = admin.client.app
    assert isinstance(app, FastAPI)
    client = admin.anonymous()
    open_routes = []
    for call in _calls(app):
        status = _request(client, call)
        if call.api:
            ok = status == 401
        elif call.method == "GET":
            expected = "/admin/login?next=" + quote(call.url, safe="/")
            ok = status == 303 and _location(client, call) == expected
        else:
            ok = status in (303, 403)
        if not ok:
            open_routes.append(f"{call.method} {call.url} answered {status}")
    assert not open_routes, "reachable without logging in:\n" + "\n".join(open_routes)


def test_every_admin_api_route_needs_an_admin_token(admin: AdminApp) -> None:
    app = admin.client.app
    assert isinstance(app, FastAPI)
    with session_factory(admin.engine)() as session:
        ingest = create_token(session, "website", "ingest", admin.clock()).token
        session.commit()
    anonymous = admin.anonymous()
    wrong = []
    for call in (call for call in _calls(app) if call.api):
        answers = {
            "no token": _request(anonymous, call),
            "not a bearer token": _request(anonymous, call, {"Authorization": "Basic YTpi"}),
            "an unknown token": _request(
                anonymous, call, {"Authorization": "Bearer nrt_not-a-token-anyone-has"}
            ),
            "an ingest token": _request(anonymous, call, {"Authorization": f"Bearer {ingest}"}),
            # A logged-in browser is no API client: the API needs a token too.
            "a session, no token": _request(admin.client, call),
        }
        expected = dict.fromkeys(answers, 401) | {"an ingest token": 403}
        if answers != expected:
            wrong.append(f"{call.method} {call.url}: {answers}")
    assert not wrong, "admin API routes that let in the wrong caller:\n" + "\n".join(wrong)


def test_the_api_guard_refuses_sessions_and_ingest_tokens(admin: AdminApp) -> None:
    """The dependency every ``/admin/api`` route takes, on a route of its own:
    so its answers are proven even while no API route is in the table."""
    app = FastAPI()
    auth = AdminAuth(admin.runtime)

    @app.get("/admin/api/probe")
    def probe(name: str = Depends(auth.api)) -> dict[str, str]:
        return {"token": name}

    with session_factory(admin.engine)() as session:
        ingest = create_token(session, "website", "ingest", admin.clock()).token
        ops = create_token(session, "ops", "admin", admin.clock()).token
        session.commit()
    client = TestClient(app)
    client.cookies.update(admin.client.cookies)  # the logged-in session
    assert client.get("/admin/api/probe").status_code == 401
    bearer = {"Authorization": f"Bearer {ingest}"}
    assert client.get("/admin/api/probe", headers=bearer).status_code == 403
    unknown = {"Authorization": "Bearer nrt_not-a-token-anyone-has"}
    assert client.get("/admin/api/probe", headers=unknown).status_code == 401
    answer = client.get("/admin/api/probe", headers={"Authorization": f"Bearer {ops}"})
    assert answer.status_code == 200 and answer.json() == {"token": "ops"}
