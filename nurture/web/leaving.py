"""Leaving and preferences over HTTP: the links every email carries.

* ``POST /unsubscribe/{token}`` is the RFC 8058 one-click endpoint: a mail
  client posts ``List-Unsubscribe=One-Click`` (urlencoded or multipart) with no
  cookie, page or CSRF token, and the subscriber leaves all email at once. The
  GET page's own form posts here too, with a CSRF token and a ``scope``
  (``sequence``: only the sequence the email came from; ``all``).
* ``GET /unsubscribe/{token}`` changes nothing (mail scanners follow links): it
  shows the choice and one button. Both GET pages answer ``HEAD`` too (link
  checkers use it; RFC 9110 asks it of every GET).
* ``GET /preferences/{token}`` shows the address (masked), the sequences the
  subscriber is in, "unsubscribe from all" and, once unsubscribed, "resubscribe";
  ``POST /preferences/{token}`` applies the form (CSRF-checked).

The token is the one :func:`nurture.sending.composer.build_links` signs: the
subscriber's address and the sequence of the email. A token that does not
verify (tampered, signed with a key we do not hold, garbage) gets 404 and the
``invalid_link.html`` page. Every change goes through
:mod:`nurture.audience.leaving`, in one transaction per request.
"""

from __future__ import annotations

import email.parser
import email.policy
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import parse_qs

from fastapi import APIRouter, Request
from sqlmodel import Session
from starlette.concurrency import run_in_threadpool
from starlette.responses import HTMLResponse

from nurture.app.runtime import Runtime
from nurture.audience.input import InvalidSubscriberError
from nurture.audience.leaving import resubscribe, unsubscribe
from nurture.audience.senders import sequence_brand, sequence_contact
from nurture.audience.subscribers import get_subscriber, subscriber_enrollments
from nurture.core.rendering.message import unicode_problem
from nurture.core.vocabulary import EnrollmentStatus, SubscriberStatus
from nurture.sending.composer import read_link_token
from nurture.store.audience import subscriber_by_email
from nurture.store.db import session_factory
from nurture.store.retry import retrying
from nurture.store.tables import SubscriberRow
from nurture.web.common import client_address, read_body
from nurture.web.pages import Pages

__all__ = ["BODY_LIMIT", "mask_email", "parse_form", "routes"]

BODY_LIMIT = 4096
"""Bytes a one-click or preferences form may have."""

ONE_CLICK = ("List-Unsubscribe", "One-Click")
"""The RFC 8058 body: the only field a one-click POST carries."""

Form = dict[str, list[str]]


def parse_form(content_type: str | None, body: bytes) -> Form:
    """The fields of an ``application/x-www-form-urlencoded`` or
    ``multipart/form-data`` body (file parts ignored); empty for anything else.

    Never raises: the body comes from anyone. Multipart is read with the
    standard library's MIME parser, which records defects instead of failing.
    """
    kind = (content_type or "").split(";")[0].strip().lower()
    if kind == "application/x-www-form-urlencoded":
        text = body.decode("utf-8", errors="replace")
        return parse_qs(text, keep_blank_values=True, max_num_fields=100)
    if kind == "multipart/form-data" and content_type is not None:
        head = b"Content-Type: " + content_type.encode("latin-1", errors="replace") + b"\r\n\r\n"
        message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
        fields: Form = {}
        if not message.is_multipart():
            return fields
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition")
            if not isinstance(name, str) or part.get_filename() is not None:
                continue
            payload = part.get_payload(decode=True)
            if isinstance(payload, bytes):
                try:
                    value = payload.decode(part.get_content_charset() or "utf-8", errors="replace")
                except Exception:
                    # The charset is the client's word, and codecs fail in their
                    # own ways: LookupError for an unknown name, ValueError for a
                    # name with a NUL, UnicodeError from "undefined", "idna" and
                    # "punycode" (which refuse errors="replace" or fail anyway),
                    # a DeprecationWarning from "unicode_escape" where warnings
                    # are errors. Such a part is read as UTF-8.
                    value = payload.decode("utf-8", errors="replace")
                fields.setdefault(name, []).append(value)
        return fields
    return {}


def _first(form: Form, name: str) -> str | None:
    values = form.get(name)
    return values[0] if values else None


def mask_email(address: str) -> str:
    """``karin@example.com`` -> ``k***n@example.com``: recognisable to its owner,
    not much to anyone who sees the screen."""
    local, at, domain = address.rpartition("@")
    if not at:
        return "***"
    if len(local) <= 2:
        return f"{local[:1]}***@{domain}"
    return f"{local[0]}***{local[-1]}@{domain}"


def _subscriber_of(session: Session, address: str) -> SubscriberRow | None:
    """The subscriber a genuine link's address names, or None.

    The link carries the address as stored. One stored before today's address
    check (imported by an older version) no longer normalises, yet its owner
    must still be able to leave: it is then looked up exactly as written. Text
    no row can hold (a NUL, a lone surrogate: the database driver would refuse
    the query itself) is nobody.
    """
    try:
        return get_subscriber(session, address)
    except InvalidSubscriberError:
        pass
    if "\x00" in address or unicode_problem(address) is not None:
        return None
    return subscriber_by_email(session, address)


@dataclass(frozen=True)
class _Holder:
    """Who a genuine link was made for, and the sequence of its email."""

    subscriber: SubscriberRow
    sequence_id: str
    token: str


def routes(runtime: Runtime) -> APIRouter:
    """The unsubscribe and preferences pages of ``runtime``'s working folder."""
    settings = runtime.settings
    pages = Pages(settings.templates_dir, settings.secret_keys)
    sessions = session_factory(runtime.engine)
    router = APIRouter()
    project_brand = settings.brand.name if settings.brand is not None else None

    def brand(sequence_id: str) -> str:
        """Whose emails these are: the page's title and heading name them."""
        return sequence_brand(runtime.registry.sequences(), sequence_id, project_brand)

    def holder(session: Session, token: str, now: datetime) -> _Holder | None:
        found = read_link_token(settings.secret_keys, token, now=now)
        if found is None:
            return None
        address, sequence_id = found
        subscriber = _subscriber_of(session, address)
        if subscriber is None or subscriber.id is None:
            return None
        return _Holder(subscriber, sequence_id, token)

    def invalid(request: Request) -> HTMLResponse:
        language = pages.language(accept_language=request.headers.get("accept-language"))
        return pages.render("invalid_link.html", language=language, status_code=404)

    def language_of(request: Request, subscriber: SubscriberRow, form: Form | None = None) -> str:
        chosen = _first(form, "lang") if form else None
        return pages.language(
            chosen, subscriber.locale, accept_language=request.headers.get("accept-language")
        )

    def sequence_name(sequence_id: str) -> str:
        loaded = runtime.registry.sequences().get(sequence_id)
        return loaded.sequence.name if loaded is not None else sequence_id

    def active_sequences(session: Session, subscriber: SubscriberRow) -> list[tuple[str, str]]:
        return [
            (row.sequence_id, sequence_name(row.sequence_id))
            for row in subscriber_enrollments(session, subscriber)
            if row.status == EnrollmentStatus.ACTIVE
        ]

    def forbidden(language: str) -> HTMLResponse:
        return pages.render("form_expired.html", language=language, status_code=403)

    # ------------------------------------------------------------------ unsubscribe

    def unsubscribe_page(
        session: Session, found: _Holder, language: str, now: datetime, *, error: str | None = None
    ) -> HTMLResponse:
        subscriber = found.subscriber
        in_sequence = any(
            sequence_id == found.sequence_id
            for sequence_id, _ in active_sequences(session, subscriber)
        )
        return pages.render(
            "unsubscribe.html",
            language=language,
            status_code=400 if error else 200,
            brand_name=brand(found.sequence_id),
            email=mask_email(subscriber.email),
            sequence_name=sequence_name(found.sequence_id) if in_sequence else None,
            unsubscribed=subscriber.status == SubscriberStatus.UNSUBSCRIBED,
            csrf=pages.csrf_token(f"leave:{subscriber.id}", now=now),
            preferences_url=f"/preferences/{found.token}",
            error=error,
        )

    @router.get("/unsubscribe/{token}", response_class=HTMLResponse)
    @router.head("/unsubscribe/{token}", response_class=HTMLResponse, include_in_schema=False)
    def unsubscribe_get(token: str, request: Request) -> HTMLResponse:
        """The choice and one button; changes nothing (scanners follow links)."""
        now = runtime.clock()
        with sessions() as session:
            found = holder(session, token, now)
            if found is None:
                return invalid(request)
            return unsubscribe_page(session, found, language_of(request, found.subscriber), now)

    @router.post("/unsubscribe/{token}", response_class=HTMLResponse)
    async def unsubscribe_post(token: str, request: Request) -> HTMLResponse:
        """RFC 8058 one-click (no CSRF), or the GET page's form (CSRF and a scope)."""
        body = await read_body(request, limit=BODY_LIMIT)
        form = parse_form(request.headers.get("content-type"), body)
        # The database work is blocking: off the event loop, as sync routes are.
        return await run_in_threadpool(leave, token, request, form)

    def leave(token: str, request: Request, form: Form) -> HTMLResponse:
        now = runtime.clock()
        return retrying(sessions, lambda session: leave_in(session, token, request, form, now))

    def leave_in(
        session: Session, token: str, request: Request, form: Form, now: datetime
    ) -> HTMLResponse:
        found = holder(session, token, now)
        if found is None:
            return invalid(request)
        subscriber = found.subscriber
        language = language_of(request, subscriber, form)
        if "csrf" not in form and _first(form, ONE_CLICK[0]) == ONE_CLICK[1]:
            scope, via = "all", "one-click"
        else:
            if not pages.csrf_ok(f"leave:{subscriber.id}", _first(form, "csrf"), now=now):
                return forbidden(language)
            scope, via = _first(form, "scope") or "all", "link"
            if scope not in ("all", "sequence"):
                return unsubscribe_page(session, found, language, now, error="unsubscribe_choose")
        sequence_id = found.sequence_id if scope == "sequence" else None
        unsubscribe(session, subscriber, now=now, sequence_id=sequence_id, via=via)
        session.commit()
        return pages.render(
            "unsubscribed.html",
            language=language,
            brand_name=brand(found.sequence_id),
            scope=scope,
            sequence_name=sequence_name(found.sequence_id),
            preferences_url=f"/preferences/{token}",
        )

    # ------------------------------------------------------------------ preferences

    def preferences_page(
        session: Session,
        found: _Holder,
        language: str,
        now: datetime,
        *,
        notice: str | None = None,
        error: str | None = None,
        status_code: int = 200,
    ) -> HTMLResponse:
        subscriber = found.subscriber
        return pages.render(
            "preferences.html",
            language=language,
            status_code=status_code,
            brand_name=brand(found.sequence_id),
            email=mask_email(subscriber.email),
            status=subscriber.status,
            contact=sequence_contact(runtime.registry.sequences(), found.sequence_id),
            sequences=active_sequences(session, subscriber),
            csrf=pages.csrf_token(f"prefs:{subscriber.id}", now=now),
            unsubscribe_url=f"/unsubscribe/{found.token}",
            notice=notice,
            error=error,
        )

    @router.get("/preferences/{token}", response_class=HTMLResponse)
    @router.head("/preferences/{token}", response_class=HTMLResponse, include_in_schema=False)
    def preferences_get(token: str, request: Request) -> HTMLResponse:
        """What the subscriber receives, and the form to change it."""
        now = runtime.clock()
        with sessions() as session:
            found = holder(session, token, now)
            if found is None:
                return invalid(request)
            language = language_of(request, found.subscriber)
            return preferences_page(session, found, language, now)

    @router.post("/preferences/{token}", response_class=HTMLResponse)
    async def preferences_post(token: str, request: Request) -> HTMLResponse:
        """Apply the preferences form: leave sequences, leave all, or resubscribe."""
        body = await read_body(request, limit=BODY_LIMIT)
        form = parse_form(request.headers.get("content-type"), body)
        consent_context = {
            "consent_ip": client_address(request, settings.trusted_proxies)[:64],
            "consent_user_agent": (request.headers.get("user-agent") or "")[:500] or None,
        }
        return await run_in_threadpool(change_preferences, token, request, form, consent_context)

    def change_preferences(
        token: str, request: Request, form: Form, consent_context: Mapping[str, str | None]
    ) -> HTMLResponse:
        now = runtime.clock()
        return retrying(
            sessions,
            lambda session: preferences_in(session, token, request, form, consent_context, now),
        )

    def preferences_in(
        session: Session,
        token: str,
        request: Request,
        form: Form,
        consent_context: Mapping[str, str | None],
        now: datetime,
    ) -> HTMLResponse:
        found = holder(session, token, now)
        if found is None:
            return invalid(request)
        subscriber = found.subscriber
        language = language_of(request, subscriber, form)
        if not pages.csrf_ok(f"prefs:{subscriber.id}", _first(form, "csrf"), now=now):
            return forbidden(language)
        action = _first(form, "action")
        if action == "resubscribe":
            consent = {
                "consent_at": now,
                "consent_source": "preferences",
                "consent_form": "preferences",
                "consent_text": pages.words(language)["resubscribe_consent"],
                **consent_context,
            }
            if not resubscribe(session, subscriber, now=now, consent=consent):
                session.rollback()
                return preferences_page(
                    session, found, language, now,
                    error="resubscribe_refused", status_code=409,
                )  # fmt: skip
            session.commit()
            return preferences_page(session, found, language, now, notice="resubscribed")
        if action != "save":
            return preferences_page(
                session, found, language, now,
                error="preferences_unknown_action", status_code=400,
            )  # fmt: skip
        if _first(form, "all") is not None:
            unsubscribe(session, subscriber, now=now, via="preferences")
        else:
            active = {sequence_id for sequence_id, _ in active_sequences(session, subscriber)}
            for sequence_id in sorted(set(form.get("leave", [])) & active):
                unsubscribe(
                    session, subscriber, now=now, sequence_id=sequence_id, via="preferences"
                )
        session.commit()
        return preferences_page(session, found, language, now, notice="saved")

    return router
