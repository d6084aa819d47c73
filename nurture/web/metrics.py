"""``GET /metrics``: Prometheus's text format (see :mod:`nurture.ops.metrics`).

With the ``metrics_token`` setting the scraper sends ``Authorization: Bearer
<token>`` (compared in constant time); anything else is a 401 that reveals
nothing. Without it the endpoint is open: serve it only behind the reverse
proxy (or block ``/metrics`` there), as the README says. The numbers are
counts, ages and sequence ids: no address or other personal data.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool

from nurture.app.runtime import Runtime
from nurture.ops.metrics import authorized, metrics_registry, render

__all__ = ["PATH", "routes"]

PATH = "/metrics"


def routes(runtime: Runtime, *, dispatches: bool) -> APIRouter:
    """``GET /metrics``; ``dispatches`` is whether a worker runs in this process."""
    router = APIRouter()
    registry = metrics_registry(
        runtime.engine,
        runtime.clock,
        lambda: runtime.registry.sequences().keys(),
        dispatches=dispatches,
    )
    token = runtime.settings.metrics_token

    @router.get(PATH, include_in_schema=False)
    async def metrics(request: Request) -> Response:
        if not authorized(request.headers.get("authorization"), token):
            return Response(
                "unauthorized\n",
                status_code=401,
                media_type="text/plain",
                headers={"WWW-Authenticate": "Bearer"},
            )
        body, content_type = await run_in_threadpool(render, registry)
        return Response(body, media_type=content_type, headers={"Cache-Control": "no-store"})

    return router
