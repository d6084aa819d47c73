"""The FastAPI application factory: the web edge of nurture."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse

from nurture.app.runtime import Runtime
from nurture.app.worker import Worker
from nurture.store.heartbeat import check_database, worker_ticks


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

    @app.get("/healthz")
    def healthz() -> JSONResponse:
        """The database's state and each worker's last tick (on the worker's clock)."""
        now = runtime.clock()
        body: dict[str, Any] = {"status": "ok", "now": now.isoformat()}
        try:
            with runtime.engine.connect() as conn:
                check_database(conn)
                ticks = worker_ticks(conn)
            body["database"] = {"status": "ok", "dialect": runtime.engine.dialect.name}
        except Exception as exc:  # the check's whole point is to report this
            body["status"] = "error"
            body["database"] = {"status": "error", "error": f"{type(exc).__name__}: {exc}"}
            return JSONResponse(body, status_code=503)
        body["workers"] = [
            {
                "id": row.worker_id,
                "last_tick_at": row.last_tick_at.isoformat(),
                "seconds_since_tick": round((now - row.last_tick_at).total_seconds(), 3),
                "last_error": row.last_error,
            }
            for row in ticks
        ]
        if worker is not None:
            body["worker"] = {"id": worker.worker_id, "halted": worker.halted}
            if worker.halted:
                body["status"] = "degraded"
        body["sequences"] = sorted(runtime.registry.sequences())
        return JSONResponse(body, status_code=200)

    return app
