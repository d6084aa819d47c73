"""``/admin``: the dashboard (:mod:`nurture.admin.dashboard`) — today's and
this week's sends, the queue, the workers' last ticks, the 7-day bounce and
complaint rates against the 0.1 % / 0.3 % spam-rate lines, paused sequences.
The same data as JSON at ``GET /admin/api/dashboard`` (in UTC; the week and
day start in the zone of the ``zone`` parameter, default UTC; a name that is
not a time zone is a 400).

The rates are drawn as server-rendered SVG bars (no JavaScript): the scale
runs to 0.5 % (further when a rate is higher), with the two lines marked.
"""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import JSONResponse
from starlette.responses import Response

from nurture.admin import dashboard, users
from nurture.app.runtime import Runtime
from nurture.audience.complaints import ComplaintLimit, percent
from nurture.web.admin.auth import Admin
from nurture.web.admin.layout import NO_STORE, AdminPages

__all__ = ["Bar", "bar", "routes"]

CHART_WIDTH = 400.0
SCALE_FLOOR = 0.005


@dataclass(frozen=True)
class Bar:
    """Where a rate's bar ends and where the two lines stand, in SVG units."""

    width: float
    warning_x: float
    limit_x: float
    scale: float


def bar(fraction: float) -> Bar:
    scale = max(SCALE_FLOOR, fraction * 1.1)

    def x(value: float) -> float:
        return round(min(value, scale) / scale * CHART_WIDTH, 1)

    return Bar(x(fraction), x(dashboard.WARNING_LINE), x(dashboard.LIMIT_LINE), scale)


def routes(runtime: Runtime, pages: AdminPages) -> APIRouter:
    router = APIRouter()
    page = APIRouter(prefix="/admin", include_in_schema=False)
    api = APIRouter(prefix="/admin/api", tags=["admin"])
    auth = pages.auth
    settings = runtime.settings
    limit = ComplaintLimit(settings.complaint_pause_rate, settings.complaint_pause_min_sends)

    def _load(zone: str) -> dashboard.Dashboard:
        return dashboard.load(
            runtime.engine,
            now=runtime.clock(),
            zone=zone,
            dispatch_interval=settings.dispatch_interval,
            limit=limit,
        )

    @page.get("")
    def dashboard_page(request: Request, admin: Admin = Depends(auth.page)) -> Response:
        """Sends today and this week, the queue, workers, rates, paused sequences."""
        board = _load(admin.zone)
        context = {
            "board": board,
            "bar": bar,
            "percent": percent,
            "warning_line": dashboard.WARNING_LINE,
            "limit_line": dashboard.LIMIT_LINE,
        }
        return pages.render(request, admin, "dashboard.html", context)

    @api.get("/dashboard")
    def dashboard_api(zone: str = "UTC", token: str = Depends(auth.api)) -> JSONResponse:
        """The dashboard's numbers; ``today`` and ``week`` start in ``zone``."""
        try:
            users.check_zone(zone)
        except users.AdminUserError as exc:
            raise HTTPException(400, str(exc)) from exc
        return JSONResponse(dashboard.as_json(_load(zone)), headers=NO_STORE)

    router.include_router(page)
    router.include_router(api)
    return router
