"""The FastAPI application factory: the web edge of nurture."""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import quote

from fastapi import FastAPI, Request, Response
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import JSONResponse, RedirectResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.routing import Match
from starlette.types import Scope

from nurture.app.runtime import Runtime
from nurture.app.worker import Worker, WorkerHealth
from nurture.store.heartbeat import check_database, worker_ticks
from nurture.web import (
    admin,
    api,
    checkout,
    leaving,
    metrics,
    signup,
    tracking,
    webhooks_sendgrid,
)
from nurture.web.common import add_security_headers

_ERROR_KIND = re.compile(r"([A-Za-z_][\w.]*): ")


def error_kind(last_error: str | None) -> str | None:
    """The exception class a heartbeat's ``last_error`` starts with (never its text)."""
    if last_error is None:
        return None
    match = _ERROR_KIND.match(last_error)
    return match.group(1) if match else "error"


def _rounded(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds, 3)


def _worker_problems(health: WorkerHealth, stale_after: float) -> list[str]:
    problems = []
    if health.halted:
        problems.append("dispatching halted (see the worker log)")
    if health.failed_passes:
        problems.append(f"the last {health.failed_passes} pass(es) failed ({health.error_kind})")
    if health.pass_running_for is not None:
        if health.pass_running_for > stale_after:
            problems.append(f"a pass has run for {health.pass_running_for:.0f} s")
    elif health.seconds_without_pass > stale_after:
        problems.append(f"no pass has finished in {health.seconds_without_pass:.0f} s")
    return problems


log = logging.getLogger("nurture.web")


async def _client_gone(request: Request, _exc: Exception) -> Response:
    """The client closed the connection before its body arrived (or sent a
    broken chunked one): nobody reads the answer, and it is no error of ours,
    so no traceback in the log (anyone could fill it)."""
    log.info(
        "%s %s: the client went away before its body arrived",
        request.method,
        request.url.path,
        extra={"action": "web.client_gone"},
    )
    return Response(status_code=400)


# What a path may keep unescaped in a ``Location`` header (RFC 3986's pchar and "/").
_PATH_SAFE = "/:@!$&'()*+,;=-._~"


def _routed(app: FastAPI, scope: Scope) -> bool:
    return any(route.matches(scope)[0] is not Match.NONE for route in app.router.routes)


def other_slash(app: FastAPI, scope: Scope) -> str | None:
    """The relative URL of ``scope``'s path with its trailing slash added or
    taken away, when no route takes the path as it is and one takes the other;
    else None. Starlette's own redirect builds an absolute URL from the
    request's ``Host`` header, so anyone could make the app point a browser
    (or a cache) at a host of their choosing; this one stays on ours."""
    path: str = scope["path"]
    if path == "/" or _routed(app, scope):
        return None
    other = path.rstrip("/") if path.endswith("/") else path + "/"
    # "//host" or "/\\host" would read as another host to a browser.
    if not other.startswith("/") or other[1:2] in ("/", "\\"):
        return None
    if not _routed(app, {**scope, "path": other}):
        return None
    query = scope.get("query_string", b"").decode("latin-1")
    return quote(other, safe=_PATH_SAFE) + (f"?{query}" if query else "")


def _slash_redirect(app: FastAPI) -> Any:
    async def handler(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        if exc.status_code == 404:
            target = other_slash(app, request.scope)
            if target is not None:
                return RedirectResponse(target, status_code=307)
        return await http_exception_handler(request, exc)

    return handler


def create_app(runtime: Runtime, worker: Worker | None = None) -> FastAPI:
    """The app over ``runtime``. With ``worker``, its scheduler runs alongside the
    app (``nurture run``) and stops with it (the emails in flight are confirmed)."""

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if worker is not None:
            worker.start_background()
        try:
            yield
        finally:
            if worker is not None:
                worker.stop()

    app = FastAPI(title="nurture", lifespan=lifespan)
    # "/admin/" still leads to "/admin", by a relative redirect (other_slash).
    app.router.redirect_slashes = False
    app.add_exception_handler(StarletteHTTPException, _slash_redirect(app))
    add_security_headers(app)
    app.add_exception_handler(ClientDisconnect, _client_gone)

    @app.get("/healthz")
    @app.head("/healthz", include_in_schema=False)  # uptime monitors ask with HEAD
    def healthz() -> JSONResponse:
        """200 ``ok``, or 503 with ``degraded`` (and why) or ``error`` (no database).

        Degraded: the in-process worker (``nurture run``) is halted, its last
        pass failed, or it has not finished a pass for too long; or a worker
        that ticked recently had its last pass fail; or workers are known but
        none ticked recently (a worker that exits cleanly deletes its row, one
        that was killed stays known for a day). The body has counts, ages and
        error kinds only: an error's text can quote a subscriber, so it stays
        in the log.
        """
        now = runtime.clock()
        settings = runtime.settings
        # A pass may legitimately run up to a lease; ticks come every interval.
        stale_after = max(3 * settings.dispatch_interval, 60.0) + settings.lease_seconds
        body: dict[str, Any] = {"status": "ok", "now": now.isoformat()}
        problems: list[str] = []
        try:
            with runtime.engine.connect() as conn:
                check_database(conn)
                ticks = worker_ticks(conn)
            body["database"] = {"status": "ok", "dialect": runtime.engine.dialect.name}
        except Exception as exc:  # the check's whole point is to report this
            body["status"] = "error"
            body["database"] = {"status": "error", "error_kind": type(exc).__name__}
            return JSONResponse(body, status_code=503)
        workers = []
        for row in ticks:
            age = (now - row.last_tick_at).total_seconds()
            entry = {
                "id": row.worker_id,
                "last_tick_at": row.last_tick_at.isoformat(),
                "seconds_since_tick": round(age, 3),
                "last_pass": "ok" if row.last_error is None else "failed",
                "error_kind": error_kind(row.last_error),
                "recent": age <= stale_after,
            }
            workers.append(entry)
            if entry["recent"] and row.last_error is not None:
                problems.append(f"worker {row.worker_id}: last pass failed")
        body["workers"] = workers
        if worker is None and ticks and not any(entry["recent"] for entry in workers):
            problems.append(f"no worker has ticked in the last {stale_after:.0f} s")
        if worker is not None:
            health = worker.health()
            body["worker"] = {
                "id": worker.worker_id,
                "halted": health.halted,
                "failed_passes": health.failed_passes,
                "error_kind": health.error_kind,
                "seconds_since_pass": _rounded(health.seconds_since_pass),
                "pass_running_for": _rounded(health.pass_running_for),
            }
            problems += _worker_problems(health, stale_after)
        body["sequences"] = sorted(runtime.registry.sequences())
        if problems:
            body["status"] = "degraded"
            body["problems"] = problems
            return JSONResponse(body, status_code=503)
        return JSONResponse(body, status_code=200)

    # The web loop's routes, one module each.
    app.include_router(signup.routes(runtime))
    app.include_router(checkout.routes(runtime))
    app.include_router(leaving.routes(runtime))
    app.include_router(webhooks_sendgrid.routes(runtime))
    app.include_router(tracking.routes(runtime))
    app.include_router(api.routes(runtime))
    app.include_router(admin.routes(runtime))
    app.include_router(metrics.routes(runtime, dispatches=worker is not None))
    return app
