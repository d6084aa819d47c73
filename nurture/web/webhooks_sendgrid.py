"""``POST /webhooks/sendgrid``: SendGrid's signed Event Webhook.

Every post is checked before anything is read from it: the signature
(``X-Twilio-Email-Event-Webhook-Signature``) over the timestamp header plus the
raw body, with the public key of the ``sendgrid_webhook_public_key`` setting,
and, when ``sendgrid_webhook_max_age`` is set, the timestamp's age. Any
malformed part gets the same terse answer and nothing is stored:

* 404 when no key is configured (unsigned posts are never accepted), 503 when
  the configured key cannot be read (the log says so, without the key);
* 413 for a body over 1 MiB (SendGrid batches stay well under it);
* 403 for a missing, malformed or wrong signature or a stale timestamp;
* 400 for a body that is not UTF-8 JSON (a number that is not finite, ``NaN``
  or ``1e999``, included), 422 for JSON that is not an array of event objects
  (or holds text no database column can).

A verified batch is applied in one transaction
(:func:`nurture.audience.provider_events.apply_sendgrid_events`) and answered
200 with counts; a replay is answered 200 too, having changed nothing.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from sqlmodel import Session

from nurture.app.runtime import Runtime
from nurture.audience.complaints import ComplaintLimit
from nurture.audience.provider_events import Applied, apply_sendgrid_events
from nurture.ops.metrics import count_webhook_events
from nurture.store.db import session_factory
from nurture.store.retry import retrying
from nurture.transports.sendgrid_events import SendGridEvent, read_events
from nurture.transports.sendgrid_signature import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    SignatureVerifier,
)
from nurture.web.common import read_body

__all__ = ["BODY_LIMIT", "PATH", "routes"]

PATH = "/webhooks/sendgrid"
BODY_LIMIT = 1024 * 1024

log = logging.getLogger("nurture.web.webhooks_sendgrid")


def _storable(value: Any) -> bool:
    """Whether every string in ``value`` can be stored (no NUL, which
    PostgreSQL text refuses, and no lone surrogate, which UTF-8 cannot encode)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if "\x00" in item or not _encodable(item):
                return False
        elif isinstance(item, Mapping):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return True


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _no_constant(name: str) -> Any:
    # NaN and Infinity are not JSON (Python reads them; PostgreSQL would not store them).
    raise ValueError(f"{name} is not JSON")


def _finite(text: str) -> float:
    # 1e999 is JSON, and Python reads it as infinity: which PostgreSQL would not
    # store either (the event's payload), so it is refused as NaN is.
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text[:20]} is not a finite number")
    return value


def _parse(body: bytes) -> list[SendGridEvent]:
    try:
        parsed = json.loads(body.decode("utf-8"), parse_constant=_no_constant, parse_float=_finite)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise HTTPException(status_code=400, detail="body is not JSON") from None
    if not isinstance(parsed, list) or not all(isinstance(item, dict) for item in parsed):
        raise HTTPException(status_code=422, detail="expected a JSON array of event objects")
    if not _storable(parsed):
        raise HTTPException(status_code=422, detail="text that cannot be stored")
    return read_events(parsed)


def routes(runtime: Runtime) -> APIRouter:
    """The route, over ``runtime``'s settings, clock and database."""
    router = APIRouter()
    settings = runtime.settings
    verifier: SignatureVerifier | None = None
    key_broken = False
    if settings.sendgrid_webhook_public_key:
        try:
            verifier = SignatureVerifier(settings.sendgrid_webhook_public_key)
        except ValueError:
            key_broken = True
            log.error(
                "%s is off: sendgrid_webhook_public_key cannot be read",
                PATH,
                extra={"action": "webhook.misconfigured"},
            )
    sessions = session_factory(runtime.engine)
    complaints = ComplaintLimit(settings.complaint_pause_rate, settings.complaint_pause_min_sends)

    def apply(events: list[SendGridEvent]) -> Applied:
        now = runtime.clock()

        def work(session: Session) -> Applied:
            applied = apply_sendgrid_events(session, events, now=now, complaint_limit=complaints)
            session.commit()
            return applied

        # Concurrent posts about the same sends can deadlock on PostgreSQL:
        # the aborted one is run again rather than answered with a 500.
        return retrying(sessions, work)

    @router.post(PATH, include_in_schema=False)
    async def sendgrid_events(request: Request) -> JSONResponse:
        if verifier is None:
            if key_broken:
                raise HTTPException(status_code=503, detail="webhook not available")
            raise HTTPException(status_code=404, detail="Not Found")
        body = await read_body(request, limit=BODY_LIMIT)
        if not verifier.verify(
            body,
            request.headers.get(SIGNATURE_HEADER),
            request.headers.get(TIMESTAMP_HEADER),
            now=runtime.clock(),
            max_age=settings.sendgrid_webhook_max_age,
        ):
            raise HTTPException(status_code=403, detail="signature not verified")
        events = _parse(body)
        count_webhook_events("sendgrid", [str(event.kind) for event in events])
        applied = await run_in_threadpool(apply, events)
        if applied.recorded:
            log.info(
                "sendgrid: %d event(s), %d new, %d confirmed, %d blocked, %d unsubscribed",
                applied.received, applied.recorded, applied.confirmed, applied.blocked,
                applied.unsubscribed, extra={"action": "webhook.received"},
            )  # fmt: skip
        answer = {"received": applied.received, "new": applied.recorded}
        return JSONResponse({**answer, "duplicates": applied.duplicates})

    return router
