"""``/admin/problems``: failed and ``unknown`` sends, paused sequences, and
the actions on them (:mod:`nurture.admin.problems`); the same list as JSON at
``GET /admin/api/problems``.

* ``POST /admin/problems/sends/{id}/resolve`` (``resolution`` = ``as-sent``,
  ``resend`` or ``give-up``, and ``why``) settles an ``unknown`` send as
  ``nurture sends resolve`` does;
* ``POST /admin/problems/resume`` (``sequence``) resumes a paused sequence as
  ``nurture resume`` does.

Both check the form's CSRF token first (403, nothing changed), then redirect
(303) back to the page, which says what was done; a refusal (a send that is
no longer ``unknown``, a resend that cannot be done) is shown on the page
with status 409 and changes nothing.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse
from starlette.responses import RedirectResponse, Response

from nurture.admin import problems
from nurture.app.runtime import Runtime
from nurture.sending.resolve import Resolution, ResolveError
from nurture.store.problems import PROBLEM_STATUSES
from nurture.web.admin.auth import Admin
from nurture.web.admin.layout import NO_STORE, AdminPages, read_form, send_in_path

__all__ = ["routes"]

PATH = "/admin/problems"

_DONE = {
    Resolution.AS_SENT.value: "marked sent",
    Resolution.RESEND.value: "will be sent again at the next pass",
    Resolution.GIVE_UP.value: "marked failed (given up)",
}


def _limit(value: str | None) -> int:
    try:
        return max(1, min(1000, int(value or problems.DEFAULT_LIMIT)))
    except ValueError:
        return problems.DEFAULT_LIMIT


def _status(value: str | None) -> str | None:
    return value if value in PROBLEM_STATUSES else None


def routes(runtime: Runtime, pages: AdminPages) -> APIRouter:
    router = APIRouter()
    page = APIRouter(prefix="/admin", include_in_schema=False)
    api = APIRouter(prefix="/admin/api", tags=["admin"])
    auth = pages.auth

    def _page(
        request: Request,
        admin: Admin,
        *,
        status: str | None,
        sequence: str | None,
        limit: int,
        notice: str = "",
        error: str = "",
        code: int = 200,
    ) -> Response:
        found = problems.load(runtime.engine, status=status, sequence=sequence, limit=limit)
        context: dict[str, Any] = {
            "problems": found,
            "status": status or "",
            "sequence": sequence or "",
            "statuses": [str(s) for s in PROBLEM_STATUSES],
            "notice": notice,
            "error": error,
            "resolutions": [
                (Resolution.AS_SENT.value, "Mark as sent", "secondary"),
                (Resolution.RESEND.value, "Resend once", ""),
                (Resolution.GIVE_UP.value, "Give up", "danger"),
            ],
        }
        return pages.render(request, admin, "problems.html", context, status_code=code)

    @page.get("/problems")
    def problems_page(
        request: Request,
        status: str = "",
        sequence: str = "",
        limit: str = "",
        done: str = "",
        send: str = "",
        resumed: str = "",
        admin: Admin = Depends(auth.page),
    ) -> Response:
        """Failed and unknown sends, newest first; paused sequences."""
        notice = ""
        if done in _DONE and send.isdigit():
            notice = f"Send {send} {_DONE[done]}."
        elif resumed:
            notice = f"{resumed} resumed: its emails go out again from the next pass."
        return _page(
            request,
            admin,
            status=_status(status),
            sequence=sequence.strip() or None,
            limit=_limit(limit),
            notice=notice,
        )

    @page.post("/problems/sends/{send_id}/resolve")
    async def resolve(
        request: Request,
        admin: Admin = Depends(auth.page),
        send_id: int = Depends(send_in_path),
    ) -> Response:
        form = await read_form(request)
        auth.check_csrf(admin, form.get("csrf"))
        try:
            resolution = Resolution(form.get("resolution", ""))
        except ValueError:
            return Response("resolution: as-sent, resend or give-up", 422, media_type="text/plain")
        try:
            await run_in_threadpool(
                problems.resolve,
                runtime.engine,
                send_id,
                resolution,
                why=form.get("why", ""),
                admin=admin.name,
                now=runtime.clock(),
            )
        except ResolveError as exc:
            return await run_in_threadpool(
                _page,
                request,
                admin,
                status=None,
                sequence=None,
                limit=problems.DEFAULT_LIMIT,
                error=str(exc),
                code=409,
            )
        location = f"{PATH}?done={resolution.value}&send={send_id}"
        return RedirectResponse(location, status_code=303)

    @page.post("/problems/resume")
    async def resume(request: Request, admin: Admin = Depends(auth.page)) -> Response:
        form = await read_form(request)
        auth.check_csrf(admin, form.get("csrf"))
        sequence = form.get("sequence", "").strip()
        try:
            await run_in_threadpool(
                problems.resume, runtime.engine, sequence, admin=admin.name, now=runtime.clock()
            )
        except problems.NotPausedError as exc:
            return await run_in_threadpool(
                _page,
                request,
                admin,
                status=None,
                sequence=None,
                limit=problems.DEFAULT_LIMIT,
                error=str(exc),
                code=409,
            )
        return RedirectResponse(f"{PATH}?{urlencode({'resumed': sequence})}", status_code=303)

    @api.get("/problems")
    def problems_api(
        status: str = "",
        sequence: str = "",
        limit: str = "",
        token: str = Depends(auth.api),
    ) -> JSONResponse:
        """Failed and unknown sends (newest first) and paused sequences."""
        found = problems.load(
            runtime.engine,
            status=_status(status),
            sequence=sequence.strip() or None,
            limit=_limit(limit),
        )
        body = {
            "sends": [jsonable_encoder(send) for send in found.sends],
            "paused": [jsonable_encoder(paused) for paused in found.paused],
            "limit": found.limit,
        }
        return JSONResponse(body, headers=NO_STORE)

    router.include_router(page)
    router.include_router(api)
    return router
