"""``/admin/subscribers``: search, one subscriber's profile, consent record and
explain timeline (:mod:`nurture.admin.explain`), and the actions on them —
unsubscribe, export, erase (after typing the address), preview any step as
they would get it (:mod:`nurture.admin.subscribers`). The same data as JSON
under ``/admin/api/subscribers`` for an admin token.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from starlette.responses import JSONResponse, RedirectResponse, Response

from nurture.admin import explain, subscribers
from nurture.admin.subscribers import NoSuchSubscriber, SubscriberActionError
from nurture.app.runtime import Runtime
from nurture.store.ids import parse_id
from nurture.web.admin.auth import Admin
from nurture.web.admin.layout import (
    NO_STORE,
    AdminPages,
    local_time,
    read_form,
    subscriber_in_path,
)

__all__ = ["routes"]

NOTICES = {
    "unsubscribed": "Unsubscribed from all email: enrollments ended and the address is suppressed.",
    "left": "Unsubscribed from that sequence.",
    "unchanged": "Nothing changed: already unsubscribed (or not enrolled there).",
    "erased": "The subscriber's data was erased; the address stays suppressed by its hash.",
}
"""Messages a redirect may ask for by name (nothing from the query is echoed)."""


def _after(value: str | None) -> int:
    """The ``after`` of a page link: 0 (the first page) when not given, else 400
    unless it is an id a row can have (a bigger number never reaches the database)."""
    if not value:
        return 0
    after = parse_id(value, minimum=0)
    if after is None:
        raise HTTPException(400, "after: the id of the previous page's last subscriber")
    return after


def routes(runtime: Runtime, pages: AdminPages) -> APIRouter:
    router = APIRouter()
    html = APIRouter(prefix="/admin", include_in_schema=False)
    api = APIRouter(prefix="/admin/api", tags=["admin"])
    auth = pages.auth

    def explained(subscriber_id: int) -> explain.SubscriberExplain:
        found = explain.explain_subscriber(
            runtime.engine, runtime.registry.sequences(), subscriber_id, runtime.clock()
        )
        if found is None:
            raise HTTPException(404, "no such subscriber")
        return found

    # ------------------------------------------------------------------ pages

    @html.get("/subscribers")
    def search_page(request: Request, admin: Admin = Depends(auth.page)) -> Response:
        query = request.query_params.get("q", "")
        after = _after(request.query_params.get("after"))
        found = subscribers.search(runtime.engine, query, after=after)
        notice = NOTICES.get(request.query_params.get("notice", ""), "")
        return pages.render(
            request, admin, "subscribers.html", {"page": found, "after": after, "notice": notice}
        )

    @html.get("/subscribers/{subscriber_id}")
    def subscriber_page(
        request: Request,
        admin: Admin = Depends(auth.page),
        subscriber_id: int = Depends(subscriber_in_path),
    ) -> Response:
        found = explained(subscriber_id)
        notice = NOTICES.get(request.query_params.get("notice", ""), "")
        return pages.render(
            request,
            admin,
            "subscriber.html",
            {"found": found, "p": found.profile, "notice": notice, "in_zone": local_time},
        )

    @html.post("/subscribers/{subscriber_id}/unsubscribe")
    async def unsubscribe(
        request: Request,
        admin: Admin = Depends(auth.page),
        subscriber_id: int = Depends(subscriber_in_path),
    ) -> Response:
        form = await read_form(request)
        auth.check_csrf(admin, form.get("csrf"))
        sequence = form.get("sequence") or None
        try:
            left = await run_in_threadpool(
                subscribers.unsubscribe_subscriber,
                runtime.engine,
                subscriber_id,
                admin=admin.name,
                now=runtime.clock(),
                sequence_id=sequence,
            )
        except SubscriberActionError as exc:
            raise HTTPException(404, str(exc)) from exc
        notice = "unchanged" if not left.changed else "unsubscribed" if sequence is None else "left"
        return RedirectResponse(f"/admin/subscribers/{subscriber_id}?notice={notice}", 303)

    @html.get("/subscribers/{subscriber_id}/export")
    def export(
        request: Request,
        admin: Admin = Depends(auth.page),
        subscriber_id: int = Depends(subscriber_in_path),
    ) -> Response:
        try:
            data = subscribers.export(
                runtime.engine, subscriber_id, admin=admin.name, now=runtime.clock()
            )
        except SubscriberActionError as exc:
            raise HTTPException(404, str(exc)) from exc
        body = json.dumps(data, indent=2, ensure_ascii=False)
        headers = {
            **NO_STORE,
            "Content-Disposition": f'attachment; filename="subscriber-{subscriber_id}.json"',
        }
        return Response(body, media_type="application/json", headers=headers)

    @html.get("/subscribers/{subscriber_id}/erase")
    def erase_page(
        request: Request,
        admin: Admin = Depends(auth.page),
        subscriber_id: int = Depends(subscriber_in_path),
    ) -> Response:
        found = explained(subscriber_id)
        wrong = request.query_params.get("error") == "mismatch"
        return pages.render(
            request, admin, "subscriber_erase.html", {"p": found.profile, "wrong": wrong}
        )

    @html.post("/subscribers/{subscriber_id}/erase")
    async def erase(
        request: Request,
        admin: Admin = Depends(auth.page),
        subscriber_id: int = Depends(subscriber_in_path),
    ) -> Response:
        form = await read_form(request)
        auth.check_csrf(admin, form.get("csrf"))
        try:
            await run_in_threadpool(
                subscribers.erase,
                runtime.engine,
                subscriber_id,
                form.get("email", ""),
                admin=admin.name,
                now=runtime.clock(),
            )
        except NoSuchSubscriber as exc:
            raise HTTPException(404, str(exc)) from exc
        except SubscriberActionError:
            return RedirectResponse(f"/admin/subscribers/{subscriber_id}/erase?error=mismatch", 303)
        return RedirectResponse("/admin/subscribers?notice=erased", 303)

    @html.get("/subscribers/{subscriber_id}/preview/{sequence_id}/{step_id}")
    def preview(
        request: Request,
        sequence_id: str,
        step_id: str,
        admin: Admin = Depends(auth.page),
        subscriber_id: int = Depends(subscriber_in_path),
    ) -> Response:
        settings = runtime.settings
        shown = subscribers.preview_step(
            runtime.engine,
            runtime.registry.sequences(),
            runtime.registry.library,
            subscriber_id,
            sequence_id,
            step_id,
            base_url=settings.base_url,
            secret_key=settings.secret_key,
            postal_address=settings.postal_address,
            unsubscribe_mailbox=settings.unsubscribe_mailbox,
            now=runtime.clock(),
        )
        if shown is None:
            raise HTTPException(404, "no such subscriber")
        found = explained(subscriber_id)
        return pages.render(
            request, admin, "subscriber_preview.html", {"p": found.profile, "preview": shown}
        )

    # -------------------------------------------------------------------- API

    @api.get("/subscribers")
    def api_search(request: Request, token: str = Depends(auth.api)) -> JSONResponse:
        """Subscribers whose address or name starts with ``q`` (any case), 50 a
        page; ``after`` is the previous page's ``next_after``."""
        found = subscribers.search(
            runtime.engine,
            request.query_params.get("q", ""),
            after=_after(request.query_params.get("after")),
        )
        hits: list[dict[str, Any]] = [
            {
                "id": hit.id,
                "email": hit.email,
                "name": hit.name,
                "status": hit.status,
                "created_at": explain.iso(hit.created_at),
            }
            for hit in found.hits
        ]
        return JSONResponse(
            {"query": found.query, "subscribers": hits, "next_after": found.next_after},
            headers=NO_STORE,
        )

    @api.get("/subscribers/{subscriber_id}/explain")
    def api_explain(
        token: str = Depends(auth.api), subscriber_id: int = Depends(subscriber_in_path)
    ) -> JSONResponse:
        """One subscriber's profile and, per enrollment, every step: sent,
        skipped, pending or projected, and why (as ``nurture explain --json``)."""
        return JSONResponse(explained(subscriber_id).as_json(), headers=NO_STORE)

    router.include_router(html)
    router.include_router(api)
    return router
