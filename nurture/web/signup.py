"""Sign-up with double opt-in: the hosted form, ``POST /subscribe``, ``/confirm/{token}``.

* ``GET /subscribe/{form}`` shows the hosted, accessible form (``?tag=`` adds
  tags); a tiny inline script fills the hidden time zone from the browser,
  and the form works without it. No CSRF token: it is a public sign-up form,
  guarded by a honeypot field and a rate limit instead.
* ``POST /subscribe`` takes the form (``application/x-www-form-urlencoded``)
  or JSON. Refused fields come back one message each: 422 with
  ``{"errors": {field: message}}`` for JSON, the form again with the
  messages next to its fields for HTML. Every accepted post gets the same
  answer ("check your inbox"), whether the address was new, unconfirmed,
  active, unsubscribed or suppressed, and whether the honeypot was filled.
  :data:`RATE` posts per minute per client address (an in-memory token bucket
  per process), then 429 with ``Retry-After``.
* ``GET /confirm/{token}`` changes nothing: corporate mail scanners follow
  every link in an email, so a GET that confirmed let anyone sign a company
  address up. It shows one button, "Confirm my subscription", a form posting
  to the same URL (or the confirmed page, for a subscriber already active);
  ``HEAD`` answers as ``GET`` does. ``POST /confirm/{token}`` confirms
  (idempotent). The token is the capability (only the address it was mailed
  to has it), so the form carries no CSRF token. The confirmed page promises
  a first email only when confirming started a sequence; a confirmation that
  started none is logged as a warning naming the form and the tags. A bad or
  expired link (404, nothing changed) offers the hosted form again, the one the
  subscriber signed up on when the token is ours, else ``/subscribe/default``.

The work is :mod:`nurture.audience.signup`'s; this module only speaks HTTP.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import math
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, Request
from jinja2 import TemplateError
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse, Response

from nurture.app.runtime import Runtime
from nurture.audience.confirming import confirm, read_confirm_link, signup_form_of
from nurture.audience.input import split_tags
from nurture.audience.senders import page_brand
from nurture.audience.signup import (
    ConfirmationEmail,
    ConfirmationMail,
    Render,
    SignedUp,
    sign_up,
)
from nurture.audience.signup_form import FORM_ID, SignupForm, SignupInvalid, parse_signup
from nurture.store.db import session_factory
from nurture.store.tables import SubscriberRow
from nurture.web.common import SECURITY_HEADERS, client_address, read_body
from nurture.web.pages import Pages

log = logging.getLogger("nurture.web.signup")

__all__ = [
    "RATE",
    "TIMEZONE_SCRIPT",
    "ClientBuckets",
    "confirmation_mail",
    "confirmation_renderer",
    "routes",
]

RATE = 10
"""Sign-up posts a client address may make per minute (and in one burst)."""

HONEYPOT = "website"
"""The hidden field people leave empty and form-filling bots fill."""

FIELDS = ("email", "name", "tags", "attributes", "timezone", "locale", "form", "consent_text")

TIMEZONE_SCRIPT = (
    "try{document.getElementById('timezone').value="
    "Intl.DateTimeFormat().resolvedOptions().timeZone||''}catch(e){}"
)
"""The form's one script; the page's CSP allows exactly it, by its hash."""

_SCRIPT_HASH = base64.b64encode(hashlib.sha256(TIMEZONE_SCRIPT.encode()).digest()).decode()
FORM_CSP = SECURITY_HEADERS["Content-Security-Policy"] + f"; script-src 'sha256-{_SCRIPT_HASH}'"

DEFAULT_FORM = "default"
"""The hosted form a bad confirm link offers when its own form is unknown."""


def confirmation_renderer(pages: Pages, brand_name: str | None) -> Render:
    """How a confirmation email is written: the pages' templates in the
    subscriber's language (``brand_name``, the project's ``[brand]`` name, else
    the sender's). Shared by the sign-up form and the API."""

    def render_confirmation(row: SubscriberRow, url: str, sender: str) -> ConfirmationEmail:
        language = pages.language(row.locale)
        words = pages.words(language)
        context = {
            "lang": language,
            "t": words,
            "url": url,
            # Nothing the visitor typed but the address goes into the email:
            # the address is not confirmed yet, and a name ("Win at
            # http://...") would make the form send anyone a text of a
            # stranger's choosing from our domain. Kept (empty) for templates
            # a project overrides.
            "name": None,
            "brand_name": brand_name or sender,
        }
        try:
            return ConfirmationEmail(
                subject=words["confirm_email_subject"],
                html=pages.env.get_template("confirm_email.html").render(**context),
                text=pages.env.get_template("confirm_email.txt").render(**context),
            )
        except TemplateError as exc:  # a project's override is broken: the send fails
            raise ValueError(f"confirmation email template: {exc}") from exc

    return render_confirmation


def confirmation_mail(runtime: Runtime, render: Render) -> ConfirmationMail:
    """How this process sends a confirmation email now (the sequences as loaded
    at this moment). Shared by the sign-up form and the API."""
    settings = runtime.settings
    return ConfirmationMail(
        runtime.registry.sequences(),
        runtime.transport.send,
        render,
        settings.base_url,
        settings.secret_keys,
    )


class ClientBuckets:
    """A token bucket per client address: ``rate`` per minute, ``rate`` at once.

    Times are seconds from the runtime's clock. Full buckets are forgotten when
    more than ``keep`` addresses are held, so memory stays bounded.
    """

    def __init__(self, rate: int = RATE, keep: int = 10_000) -> None:
        self.rate = rate
        self.keep = keep
        self._buckets: dict[str, tuple[float, float]] = {}  # address -> (tokens, at)

    def take(self, address: str, now: float) -> float | None:
        """None when ``address`` may go on (one token spent), else seconds to wait."""
        per_second = self.rate / 60.0
        tokens, at = self._buckets.get(address, (float(self.rate), now))
        tokens = min(float(self.rate), tokens + max(0.0, now - at) * per_second)
        if tokens < 1.0:
            self._buckets[address] = (tokens, now)
            return (1.0 - tokens) / per_second
        self._buckets[address] = (tokens - 1.0, now)
        if len(self._buckets) > self.keep:
            self._forget_full(now)
        return None

    def _forget_full(self, now: float) -> None:
        full = [
            address
            for address, (tokens, at) in self._buckets.items()
            if tokens + (now - at) * self.rate / 60.0 >= self.rate
        ]
        for address in full:
            del self._buckets[address]


class _BadBody(Exception):
    """A body that is not a form or a JSON object; the message says why."""


def _form_values(body: bytes) -> dict[str, Any]:
    try:
        text = body.decode("utf-8")
        pairs = parse_qsl(text, keep_blank_values=True, strict_parsing=False, max_num_fields=500)
    except (UnicodeDecodeError, ValueError) as exc:
        raise _BadBody("the form could not be read (UTF-8, at most 500 fields)") from exc
    values: dict[str, Any] = {}
    tags: list[str] = []
    attributes: dict[str, str] = {}
    for key, value in pairs:
        if key == "tags" or key == "tag":
            tags.append(value)
        elif key.startswith("attributes[") and key.endswith("]"):
            attributes[key[len("attributes[") : -1]] = value
        elif key in FIELDS or key == HONEYPOT:
            values[key] = value
    if tags:
        values["tags"] = tags
    if attributes:
        values["attributes"] = attributes
    return values


def _json_values(body: bytes) -> dict[str, Any]:
    try:
        values = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise _BadBody("the body is not valid JSON") from exc
    if not isinstance(values, dict):
        raise _BadBody("the body must be a JSON object")
    return values


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def routes(runtime: Runtime) -> APIRouter:
    """The sign-up routes over ``runtime``."""
    settings = runtime.settings
    pages = Pages(settings.templates_dir, settings.secret_keys)
    sessions = session_factory(runtime.engine)
    buckets = ClientBuckets()
    router = APIRouter()
    brand_name = settings.brand.name if settings.brand is not None else None

    def brand(tags: Sequence[str] = ()) -> str:
        return page_brand(runtime.registry.sequences(), tags, brand_name)

    def form_page(
        language: str,
        *,
        form: str,
        values: Mapping[str, Any],
        errors: Mapping[str, str] | None = None,
        status_code: int = 200,
    ) -> Response:
        words = pages.words(language)
        shown = {key: errors.get(key) for key in FIELDS} if errors else {}
        messages = {
            key: words.get(f"signup_error_{key}", words["signup_error_field"])
            for key, message in shown.items()
            if message
        }
        return pages.render(
            "signup_form.html",
            language=language,
            status_code=status_code,
            headers={"Content-Security-Policy": FORM_CSP},
            brand_name=brand(split_tags(values.get("tags") or [])),
            form=form,
            values=values,
            tags=split_tags(values.get("tags") or []),
            errors=messages,
            honeypot=HONEYPOT,
            script=TIMEZONE_SCRIPT,
        )

    render_confirmation = confirmation_renderer(pages, brand_name)

    @router.get("/subscribe/{form}")
    def hosted_form(request: Request, form: str) -> Response:
        """The hosted sign-up form; ``?tag=`` (repeatable) adds tags, ``?locale=`` a language."""
        language = pages.language(
            request.query_params.get("locale"),
            accept_language=request.headers.get("accept-language"),
        )
        if not FORM_ID.fullmatch(form):
            return pages.render(
                "invalid_link.html", language=language, status_code=404,
                brand_name=brand(),
            )  # fmt: skip
        tags = request.query_params.getlist("tag")[:20]
        return form_page(language, form=form, values={"tags": tags, "locale": language})

    @router.post("/subscribe")
    async def subscribe(request: Request) -> Response:
        """A sign-up from the hosted form, an embedded one or JSON."""
        address = client_address(request, settings.trusted_proxies)
        is_json = _media_type(request) == "application/json"
        accept_language = request.headers.get("accept-language")
        wait = buckets.take(address, runtime.clock().timestamp())
        if wait is not None:
            retry = {"Retry-After": str(max(1, math.ceil(wait)))}
            if is_json:
                return JSONResponse(
                    {"error": "too many sign-ups from this address; try again later"},
                    status_code=429, headers=retry,
                )  # fmt: skip
            language = pages.language(accept_language=accept_language)
            return pages.render(
                "signup_message.html", language=language, status_code=429, headers=retry,
                brand_name=brand(), kind="slow_down",
            )  # fmt: skip
        body = await read_body(request)
        media = _media_type(request)
        if media not in ("application/json", "application/x-www-form-urlencoded"):
            return JSONResponse(
                {"error": "send application/x-www-form-urlencoded or application/json"},
                status_code=415,
            )
        try:
            values = _json_values(body) if is_json else _form_values(body)
        except _BadBody as exc:
            if is_json:
                return JSONResponse({"errors": {"body": str(exc)}}, status_code=422)
            language = pages.language(accept_language=accept_language)
            return form_page(
                language, form="default", values={}, errors={"email": str(exc)},
                status_code=422,
            )  # fmt: skip
        locale = values.get("locale")
        language = pages.language(
            locale if isinstance(locale, str) else None, accept_language=accept_language
        )
        if not locale and accept_language:
            # A form without the hosted page's hidden locale (an embedded
            # snippet, a script): the language the visitor's browser asked
            # for, which is the one this answer speaks, is the subscriber's.
            values = {**values, "locale": language}
        default_form = "api" if is_json else "embedded"
        if values.get(HONEYPOT):
            log.info("sign-up with the honeypot field filled ignored")
            return answer(language, is_json)
        try:
            signup: SignupForm = parse_signup(
                values, default_form=default_form, lenient_places=not is_json
            )
        except SignupInvalid as exc:
            if is_json:
                return JSONResponse({"errors": exc.errors}, status_code=422)
            form = values.get("form")
            shown_form = form if isinstance(form, str) and FORM_ID.fullmatch(form) else "embedded"
            return form_page(
                language, form=shown_form, values=values, errors=exc.errors, status_code=422
            )
        now = runtime.clock()
        agent = request.headers.get("user-agent")

        def store() -> SignedUp:
            with sessions() as session:
                return sign_up(
                    session,
                    signup,
                    ip=address,
                    user_agent=agent,
                    consent_text=pages.words(language)["signup_consent"],
                    now=now,
                    mail=confirmation_mail(runtime, render_confirmation),
                )

        # Off the event loop: the database may wait for another writer, and
        # the confirmation email is sent here; every other request goes on.
        done = await run_in_threadpool(store)
        log.info(
            "sign-up via form %s: subscriber #%s, %s, confirmation %s",
            signup.form,
            done.subscriber_id,
            "new" if done.created else done.reason,
            "sent" if done.emailed else "not sent",
        )
        return answer(language, is_json)

    def answer(language: str, is_json: bool) -> Response:
        """The one answer to every accepted sign-up."""
        words = pages.words(language)
        if is_json:
            return JSONResponse(
                {"status": "check_inbox", "message": words["signup_check_inbox_text"]},
                status_code=202,
            )
        return pages.render(
            "signup_message.html", language=language, brand_name=brand(), kind="check_inbox"
        )

    def signup_url(form: str | None) -> str:
        """The hosted form's address (as the confirm link's, under ``base_url``)."""
        return f"{settings.base_url.rstrip('/')}/subscribe/{form or DEFAULT_FORM}"

    def bad_link(session: Session, token: str, request: Request) -> Response:
        """404, nothing changed, and a way forward: the sign-up form again."""
        form = signup_form_of(session, token, keys=settings.secret_keys, now=runtime.clock())
        language = pages.language(accept_language=request.headers.get("accept-language"))
        return pages.render(
            "invalid_link.html", language=language, status_code=404, brand_name=brand(),
            signup_url=signup_url(form),
        )  # fmt: skip

    def confirmed_page(
        request: Request, locale: str | None, tags: Sequence[str], *, started: bool
    ) -> Response:
        """The thank-you page; it promises a first email only when one is coming."""
        language = pages.language(locale, accept_language=request.headers.get("accept-language"))
        return pages.render(
            "signup_message.html", language=language, brand_name=brand(tags),
            kind="confirmed" if started else "subscribed",
        )  # fmt: skip

    @router.get("/confirm/{token}")
    @router.head("/confirm/{token}", include_in_schema=False)
    def confirm_page(request: Request, token: str) -> Response:
        """The confirm button (changes nothing: mail scanners follow links)."""
        with sessions() as session:
            link = read_confirm_link(
                session,
                token,
                keys=settings.secret_keys,
                max_age=timedelta(seconds=settings.confirm_token_max_age),
                now=runtime.clock(),
            )
            if link is None:
                return bad_link(session, token, request)
            row = link.subscriber
            locale, tags, address = row.locale, list(row.tags or []), row.email
        if link.confirmed:
            return confirmed_page(request, locale, tags, started=False)
        language = pages.language(locale, accept_language=request.headers.get("accept-language"))
        return pages.render(
            "confirm.html", language=language, brand_name=brand(tags), email=address
        )

    @router.post("/confirm/{token}")
    def confirm_link(request: Request, token: str) -> Response:
        """Confirm a sign-up (twice is harmless); a bad or old link changes nothing."""
        now = runtime.clock()
        with sessions() as session:
            try:
                done = confirm(
                    session,
                    token,
                    keys=settings.secret_keys,
                    max_age=timedelta(seconds=settings.confirm_token_max_age),
                    now=now,
                    sequences=runtime.registry.sequences(),
                )
            except IntegrityError:
                # A second click at the same moment: the first one enrolled.
                session.rollback()
                return confirmed_page(request, None, (), started=False)
            if done is None:
                session.rollback()
                return bad_link(session, token, request)
            row = done.subscriber
            subscriber_id, locale, form = row.id, row.locale, row.consent_form
            tags = list(row.tags or [])
            started = [e.sequence_id for e in done.enrollments]
            session.commit()
        if started:
            log.info("subscriber #%s confirmed, enrolled in %s", subscriber_id, ", ".join(started))
        elif not done.already:
            # The form feeds nothing: its business should hear of it.
            log.warning(
                "subscriber #%s confirmed, enrolled in nothing: form %s with tags %s"
                " starts no sequence",
                subscriber_id,
                form or "(none)",
                ", ".join(tags) or "(none)",
                extra={"action": "signup.confirmed_into_nothing"},
            )
        return confirmed_page(request, locale, tags, started=bool(started))

    return router
