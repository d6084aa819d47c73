"""Click and open tracking: ``/c/{token}`` and ``/o/{token}``.

- ``GET``/``HEAD /c/{token}``: records the click on the token's send and
  answers 302 to the link's original URL (signed into the token: no open
  redirect). A token that is not genuine gets 404 and records nothing.
- ``GET``/``HEAD /o/{token}``: records an open and always answers the 1×1
  transparent GIF, uncached (a bad token records nothing).

A database error while recording is logged (its class only) and the
subscriber still reaches the link: losing a click beats losing the visitor.
"""

from __future__ import annotations

import base64
import logging

from fastapi import APIRouter, HTTPException, Request
from starlette.responses import RedirectResponse, Response

from nurture.app.runtime import Runtime
from nurture.audience.engagement import (
    read_click_token,
    read_open_token,
    record_click,
    record_open,
)

log = logging.getLogger(__name__)

PIXEL = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")
"""A 1×1 transparent GIF (43 bytes)."""

MAX_TOKEN = 8192
"""Longer tokens are refused unread (a link's URL is signed into its token)."""

NO_STORE = {"Cache-Control": "no-store, private", "Pragma": "no-cache"}


def routes(runtime: Runtime) -> APIRouter:
    """The tracking routes over ``runtime``'s database, keys and clock."""
    router = APIRouter()
    settings = runtime.settings

    @router.api_route("/c/{token}", methods=["GET", "HEAD"], include_in_schema=False)
    def click(token: str, request: Request) -> Response:
        now = runtime.clock()
        found = None
        if len(token) <= MAX_TOKEN:
            found = read_click_token(settings.secret_keys, token, now=now)
        if found is None:
            raise HTTPException(status_code=404, detail="unknown link")
        key, url = found
        try:
            record_click(
                runtime.engine,
                key,
                url,
                method=request.method,
                user_agent=request.headers.get("user-agent", ""),
                now=now,
            )
        except Exception as exc:  # the visitor still gets to the link
            log.error("could not record a click: %s", type(exc).__name__)
        return RedirectResponse(url, status_code=302, headers=NO_STORE)

    @router.api_route("/o/{token}", methods=["GET", "HEAD"], include_in_schema=False)
    def opened(token: str, request: Request) -> Response:
        now = runtime.clock()
        key = None
        if len(token) <= MAX_TOKEN:
            key = read_open_token(settings.secret_keys, token, now=now)
        if key is not None:
            try:
                record_open(
                    runtime.engine,
                    key,
                    method=request.method,
                    user_agent=request.headers.get("user-agent", ""),
                    now=now,
                )
            except Exception as exc:  # the pixel is answered regardless
                log.error("could not record an open: %s", type(exc).__name__)
        return Response(PIXEL, media_type="image/gif", headers=NO_STORE)

    return router
