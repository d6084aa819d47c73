"""The sequence pages: ``/admin/sequences`` (each sequence: its file's
version, paused or not, active enrollments, emails sent) and
``/admin/sequences/{id}`` (the funnel per step with rates, as a table and a
server-rendered SVG chart, revenue per currency, and "Send me a test" per
step). JSON: ``/admin/api/sequences`` and ``/admin/api/sequences/{id}/funnel``.

The figures come from :mod:`nurture.admin.funnels`, the test from
:mod:`nurture.admin.test_sends`; this module parses, calls and answers.
"""

from __future__ import annotations

import logging
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Depends, HTTPException, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse, RedirectResponse, Response

from nurture.admin import funnels
from nurture.admin.test_sends import TestSendError, send_test
from nurture.app.runtime import Runtime
from nurture.errors import SendError
from nurture.sending.composer import Composer
from nurture.web.admin.auth import Admin
from nurture.web.admin.charts import funnel_chart
from nurture.web.admin.layout import NO_STORE, AdminPages, read_form

__all__ = ["routes"]

log = logging.getLogger("nurture.web.admin.sequences")

# What the page says after a test (the redirect carries only one of these words).
TEST_OUTCOMES = {
    "sent": "Test sent",
    "no-email": "No test sent: your admin account has no email address. An admin gets one "
    "when created with `nurture admin create-user NAME --email ADDRESS`.",
    "failed": "No test sent: the transport refused it (see the log).",
    "no-step": "No test sent: that step is not in the sequence's file.",
}


def _percent(rate: float | None) -> str:
    return "–" if rate is None else f"{rate * 100:.1f}%"


def routes(runtime: Runtime, pages: AdminPages) -> APIRouter:
    router = APIRouter(prefix="/admin", include_in_schema=False)
    api = APIRouter(prefix="/admin/api", tags=["admin"])
    auth = pages.auth
    settings = runtime.settings
    # Tests show links as written: no click tracking, no pixel.
    test_composer = Composer(
        runtime.registry.library,
        base_url=settings.base_url,
        secret_key=settings.secret_key,
        postal_address=settings.postal_address,
        unsubscribe_mailbox=settings.unsubscribe_mailbox,
    )

    def _funnel(sequence_id: str) -> funnels.SequenceFunnel:
        funnel = funnels.sequence_funnel(runtime.engine, runtime.registry.sequences(), sequence_id)
        if funnel is None:
            raise HTTPException(404, f"no sequence {sequence_id!r}")
        return funnel

    @router.get("/sequences")
    def sequence_list(request: Request, admin: Admin = Depends(auth.page)) -> Response:
        summaries = funnels.sequence_summaries(runtime.engine, runtime.registry.sequences())
        return pages.render(request, admin, "sequences.html", {"sequences": summaries})

    @router.get("/sequences/{sequence_id}")
    def sequence_page(
        request: Request,
        sequence_id: str,
        test: str = "",
        step: str = "",
        admin: Admin = Depends(auth.page),
    ) -> Response:
        funnel = _funnel(sequence_id)
        return pages.render(
            request,
            admin,
            "sequence.html",
            {
                "funnel": funnel,
                "chart": funnel_chart(funnel),
                "percent": _percent,
                "money": funnels.money,
                "test_outcome": TEST_OUTCOMES.get(test),
                "test_ok": test == "sent",
                "test_step": step,
            },
        )

    @router.post("/sequences/{sequence_id}/test")
    async def test_send(
        request: Request, sequence_id: str, admin: Admin = Depends(auth.page)
    ) -> Response:
        form = await read_form(request)
        auth.check_csrf(admin, form.get("csrf"))
        step_id = form.get("step", "")

        def _send() -> str:
            with auth.sessions() as session:
                try:
                    send_test(
                        session,
                        sequences=runtime.registry.sequences(),
                        compose=test_composer,
                        send=runtime.transport.send,
                        sequence_id=sequence_id,
                        step_id=step_id,
                        admin=admin.name,
                        to_email=admin.email,
                        now=runtime.clock(),
                    )
                except TestSendError:
                    return "no-email" if not admin.email else "no-step"
                except SendError as exc:
                    log.warning("test of %s/%s not sent: %s", sequence_id, step_id, exc)
                    return "failed"
                session.commit()
                return "sent"

        if sequence_id not in runtime.registry.sequences():
            raise HTTPException(404, f"no sequence {sequence_id!r}")
        outcome = await run_in_threadpool(_send)
        query = urlencode({"test": outcome, "step": step_id})
        return RedirectResponse(
            f"/admin/sequences/{quote(sequence_id, safe='')}?{query}", status_code=303
        )

    @api.get("/sequences")
    def sequences_json(token: str = Depends(auth.api)) -> JSONResponse:
        summaries = funnels.sequence_summaries(runtime.engine, runtime.registry.sequences())
        return JSONResponse([s.as_json() for s in summaries], headers=NO_STORE)

    @api.get("/sequences/{sequence_id}/funnel")
    def funnel_json(sequence_id: str, token: str = Depends(auth.api)) -> JSONResponse:
        return JSONResponse(_funnel(sequence_id).as_json(), headers=NO_STORE)

    both = APIRouter()
    both.include_router(router)
    both.include_router(api)
    return both
