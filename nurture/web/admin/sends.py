"""The send log in the browser and as JSON, over :mod:`nurture.admin.sendlog`.

* ``GET /admin/sends``: filters as a GET form (status, sequence, step,
  address, from/to dates in the admin's zone), one page of 50 lines, links to
  the older and newer pages (an opaque keyset cursor) and to the CSV export
  of the same filters;
* ``GET /admin/sends.csv``: every line of the filtered log, streamed in batches;
* ``GET /admin/sends/{id}``: one send (:mod:`nurture.admin.senddetail`); its
  HTML part in ``<iframe sandbox srcdoc>``: no scripts, no forms, no
  same-origin access, and the page's own CSP (``default-src 'none'``), which
  a ``srcdoc`` document inherits;
* ``GET /admin/api/sends`` and ``/admin/api/sends/{id}``: the same as JSON,
  for an admin token.

A damaged cursor or a bad filter is a 400 that says which, never a 500.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.responses import Response

from nurture.admin.senddetail import Compose, SendDetail, send_detail
from nurture.admin.sendlog import (
    MAX_LIMIT,
    SEND_STATUSES,
    SendFilter,
    SendLogError,
    csv_rows,
    parse_filter,
    read_page,
)
from nurture.app.runtime import Runtime
from nurture.sending.composer import Composer
from nurture.web.admin.auth import Admin
from nurture.web.admin.layout import NO_STORE, AdminPages, send_in_path

__all__ = ["routes"]

PAGE_SIZE = 50
FILTERS = ("status", "sequence", "step", "email", "from", "to")


def _filter_values(request: Request) -> dict[str, str]:
    """The filters as given (first value of each), for the form and the links."""
    return {name: request.query_params.get(name, "").strip()[:320] for name in FILTERS}


def _filter(values: dict[str, str], zone: str) -> SendFilter:
    return parse_filter(
        status=values["status"],
        sequence=values["sequence"],
        step=values["step"],
        email=values["email"],
        since=values["from"],
        until=values["to"],
        zone=zone,
    )


def _query(values: dict[str, str], **extra: str) -> str:
    given = {name: value for name, value in values.items() if value}
    given.update(extra)
    return urlencode(given)


def routes(runtime: Runtime, pages: AdminPages) -> APIRouter:
    router = APIRouter()
    router.include_router(_pages(runtime, pages))
    router.include_router(_api(runtime, pages))
    return router


def _preview_composer(runtime: Runtime) -> Compose:
    compose = runtime.dispatcher.compose
    return compose.without_tracking() if isinstance(compose, Composer) else compose


def _detail(runtime: Runtime, send_id: int) -> SendDetail:
    found = send_detail(
        runtime.engine,
        send_id,
        sequences=runtime.registry.sequences(),
        compose=_preview_composer(runtime),
    )
    if found is None:
        raise HTTPException(404, "no such send")
    return found


def _pages(runtime: Runtime, pages: AdminPages) -> APIRouter:
    router = APIRouter(prefix="/admin", include_in_schema=False)
    auth = pages.auth

    @router.get("/sends")
    def send_log(request: Request, admin: Admin = Depends(auth.page)) -> Response:
        values = _filter_values(request)
        cursor = request.query_params.get("cursor") or None
        context: dict[str, Any] = {
            "values": values,
            "statuses": SEND_STATUSES,
            "sequences": sorted(runtime.registry.sequences()),
            "lines": [],
            "older": None,
            "newer": None,
            "newest": None,
            "problem": None,
            "export": "/admin/sends.csv?" + _query(values),
        }
        try:
            found = read_page(
                runtime.engine, _filter(values, admin.zone), cursor=cursor, limit=PAGE_SIZE
            )
        except SendLogError as exc:
            context["problem"] = str(exc)
            return pages.render(request, admin, "sends.html", context, status_code=400)
        context["lines"] = found.lines
        if found.older:
            context["older"] = "/admin/sends?" + _query(values, cursor=found.older)
        if found.newer:
            context["newer"] = "/admin/sends?" + _query(values, cursor=found.newer)
        if cursor:
            context["newest"] = "/admin/sends?" + _query(values)
        return pages.render(request, admin, "sends.html", context)

    @router.get("/sends.csv")
    def send_log_csv(request: Request, admin: Admin = Depends(auth.page)) -> Response:
        try:
            where = _filter(_filter_values(request), admin.zone)
        except SendLogError as exc:
            return Response(str(exc), status_code=400, media_type="text/plain")
        moment = runtime.clock().strftime("%Y%m%d-%H%M")
        headers = {
            **NO_STORE,
            "Content-Disposition": f'attachment; filename="nurture-sends-{moment}.csv"',
        }
        # A sync generator: Starlette iterates it in a thread, off the event loop.
        rows: Iterator[str] = csv_rows(runtime.engine, where)
        return StreamingResponse(rows, media_type="text/csv; charset=utf-8", headers=headers)

    @router.get("/sends/{send_id}")
    def send_page(
        request: Request,
        admin: Admin = Depends(auth.page),
        send_id: int = Depends(send_in_path),
    ) -> Response:
        detail = _detail(runtime, send_id)
        return pages.render(request, admin, "send.html", {"send": detail})

    return router


def _api(runtime: Runtime, pages: AdminPages) -> APIRouter:
    router = APIRouter(prefix="/admin/api", tags=["admin"])
    auth = pages.auth

    @router.get("/sends")
    def api_send_log(
        token: str = Depends(auth.api),
        status: str | None = None,
        sequence: str | None = None,
        step: str | None = None,
        email: str | None = None,
        since: str | None = Query(None, alias="from"),
        until: str | None = Query(None, alias="to"),
        cursor: str | None = None,
        limit: int = Query(PAGE_SIZE, ge=1, le=MAX_LIMIT),
    ) -> JSONResponse:
        """The send log, newest first, with the filters of ``/admin/sends``
        (``from``/``to``: dates or ISO 8601 times, UTC unless they say) and
        ``cursor``: ``next_cursor`` (older) or ``newer_cursor`` of a previous answer."""
        del token
        try:
            where = parse_filter(
                status=status, sequence=sequence, step=step, email=email, since=since, until=until
            )
            found = read_page(runtime.engine, where, cursor=cursor, limit=limit)
        except SendLogError as exc:
            raise HTTPException(400, str(exc)) from exc
        body = {
            "sends": [line.to_json() for line in found.lines],
            "next_cursor": found.older,
            "newer_cursor": found.newer,
        }
        return JSONResponse(body, headers=NO_STORE)

    @router.get("/sends/{send_id}")
    def api_send(
        token: str = Depends(auth.api), send_id: int = Depends(send_in_path)
    ) -> JSONResponse:
        """One send: the ledger row, its events in order, and its re-rendering."""
        del token
        return JSONResponse(_detail(runtime, send_id).to_json(), headers=NO_STORE)

    return router
