"""``/api/v1``: the ingest API for sites and apps.

* ``POST /api/v1/subscribers``: create (201) or update (200) a subscriber.
  One left ``unconfirmed`` (no ``"confirmed": true``) is sent the double
  opt-in email the sign-up form sends, by the same code and under the same
  rule (a new one at once, a known one at most once per 5 minutes), after the
  subscriber is committed; ``confirmation`` in the answer says what became of it.
* ``POST /api/v1/events``: record an app event (201; a replayed ``id`` 200).
* ``GET /api/v1/subscribers/{email}``: everything held about a person (admin).

Every request carries ``Authorization: Bearer <token>`` (``nurture tokens
create``): a missing, unknown or revoked token is 401 with
``WWW-Authenticate: Bearer``, a token without the scope 403. Bodies are read
through :func:`~nurture.web.common.read_body` (64 KB), parsed as JSON into the
pydantic models below (the OpenAPI at ``/docs`` shows them), and checked by the
same code as the CLI; a refused body is 400 (not JSON) or 422 with an error
per field, and changes nothing. The work of one request runs in one
transaction, ``last_used_at`` of its token included.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from nurture.app.runtime import Runtime
from nurture.audience.consent import Consent
from nurture.audience.ingest import (
    UnknownSubscriberError,
    ingest_subscriber,
    record_app_event,
)
from nurture.audience.input import InvalidSubscriberError, SubscriberInput, normalise_email
from nurture.audience.personal_data import export_personal_data
from nurture.audience.signup import SignedUp, ask_to_confirm
from nurture.audience.subscribers import get_subscriber as find_subscriber
from nurture.audience.tokens import Scope, allows, authenticate
from nurture.core.vocabulary import SubscriberStatus
from nurture.store.db import session_factory
from nurture.store.retry import retrying
from nurture.web.common import read_body
from nurture.web.pages import Pages
from nurture.web.signup import confirmation_mail, confirmation_renderer

log = logging.getLogger("nurture.web.api")

__all__ = ["EventIn", "EventOut", "SubscriberIn", "SubscriberOut", "routes"]

_PLACEHOLDER_EMAIL = "placeholder@example.com"


class _Body(BaseModel):
    # Strict: a number where a string belongs is refused, not converted.
    model_config = ConfigDict(extra="forbid", strict=True)


def _in_utc(moment: datetime) -> datetime:
    """The instant in UTC; one whose UTC time falls outside years 1 to 9999
    (``0001-01-01T00:00:00+14:00``) is refused rather than overflowing later."""
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        raise ValueError("the time in UTC is outside the years 1 to 9999") from None


Instant = Annotated[AwareDatetime, AfterValidator(_in_utc)]


class ConsentIn(_Body):
    """The evidence of the opt-in: where, what wording, from which IP, when."""

    source: str = Field("api", description="Where the address came from (a form's name).")
    text: str | None = Field(None, description="The wording the subscriber agreed to.")
    ip: str | None = Field(None, description="The IP address the consent came from.")
    at: Instant | None = Field(None, description="When it was given (default: now).")


class SubscriberIn(_Body):
    """A subscriber to create, or to update (only what is given overwrites)."""

    email: str = Field(examples=["karin@example.com"])
    name: str = ""
    first_name: str | None = None
    timezone: str | None = Field(None, examples=["Europe/Stockholm"])
    locale: str | None = Field(None, examples=["sv"])
    tags: list[str] = Field(default_factory=list, examples=[["b2b"]])
    attributes: dict[str, Any] = Field(default_factory=dict, examples=[{"company": "Doe AB"}])
    consent: ConsentIn = Field(default_factory=lambda: ConsentIn())
    confirmed: bool = Field(
        False,
        description=(
            "true only when you collected the consent yourself: the subscriber is active "
            "and enrolled at once. Otherwise they stay unconfirmed (double opt-in)."
        ),
    )


class SubscriberOut(BaseModel):
    email: str
    status: str
    created: bool
    suppressed: bool = Field(description="The address is never mailed (suppressed or erased).")
    enrolled_in: list[str]
    confirmation: str | None = Field(
        None,
        description=(
            "An unconfirmed subscriber's double opt-in email: sent (now), failed (the "
            "provider refused it; post again to retry), sent_recently (one went out less "
            "than 5 minutes ago); null when none is due (active, unsubscribed, suppressed)."
        ),
        examples=["sent"],
    )


class EventIn(_Body):
    """Something that happened in your app; ``id`` makes a retry safe."""

    email: str = Field(examples=["karin@example.com"])
    name: str = Field(examples=["trial_started"])
    id: str = Field(description="Your id of this event: posting it again changes nothing.")
    properties: dict[str, Any] = Field(default_factory=dict, examples=[{"plan": "pro"}])
    occurred_at: Instant | None = None


class EventOut(BaseModel):
    id: str
    name: str
    replay: bool = Field(description="This id was recorded before; nothing changed.")
    enrolled_in: list[str]


class Problem(BaseModel):
    detail: str
    errors: dict[str, str] = Field(default_factory=dict)


def _inline(schema: dict[str, Any]) -> dict[str, Any]:
    """A model's JSON schema with its ``$defs`` written in place (OpenAPI resolves
    ``$ref`` from the document's root, where they are not)."""
    defs = schema.pop("$defs", {})

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return walk(dict(defs[ref.removeprefix("#/$defs/")]))
            return {key: walk(value) for key, value in node.items()}
        if isinstance(node, list):
            return [walk(item) for item in node]
        return node

    result: dict[str, Any] = walk(schema)
    return result


def _body_doc(model: type[BaseModel]) -> dict[str, Any]:
    schema = _inline(model.model_json_schema())
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": Problem, "description": "The body is not JSON."},
    401: {"model": Problem, "description": "Missing, unknown or revoked token."},
    403: {"model": Problem, "description": "The token's scope does not allow this."},
    413: {"model": Problem, "description": "The body is larger than 64 KB."},
    422: {"model": Problem, "description": "A field was refused; `errors` names each."},
}

Model = TypeVar("Model", bound=BaseModel)
Result = TypeVar("Result")


class Refused(Exception):
    """A request answered with a 4xx: ``{"detail": ..., "errors": {field: why}}``."""

    def __init__(
        self,
        status: int,
        detail: str,
        errors: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.errors = errors or {}
        self.headers = headers

    def response(self) -> JSONResponse:
        body = {"detail": self.detail, "errors": self.errors}
        return JSONResponse(body, status_code=self.status, headers=self.headers)


def _parse(model: type[Model], raw: bytes) -> Model:
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        problems = exc.errors(include_url=False, include_input=False)
        if any(problem["type"] == "json_invalid" for problem in problems):
            raise Refused(400, "the body is not valid JSON") from None
        errors = {
            ".".join(str(part) for part in problem["loc"]) or "body": problem["msg"]
            for problem in problems
        }
        raise Refused(422, "the body was refused", errors) from None


def _bearer(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Refused(
            401, "send Authorization: Bearer <token>", headers={"WWW-Authenticate": "Bearer"}
        )
    return token.strip()


def _authorize(session: Session, token: str, needed: Scope, now: datetime) -> None:
    row = authenticate(session, token, now)
    if row is None:
        raise Refused(
            401,
            "unknown or revoked token",
            headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
        )
    if not allows(row.scope, needed):
        raise Refused(403, f"this token's scope is {row.scope}; this needs {needed}")


def _subscriber_errors(body: SubscriberIn) -> dict[str, str]:
    """Every refused field of ``body``, each checked on its own."""
    errors: dict[str, str] = {}
    try:
        normalise_email(body.email)
    except InvalidSubscriberError as exc:
        errors["email"] = str(exc)
    fields: dict[str, dict[str, Any]] = {
        "name": {"name": body.name},
        "first_name": {"first_name": body.first_name},
        "timezone": {"timezone": body.timezone},
        "locale": {"locale": body.locale},
        "tags": {"tags": body.tags},
        "attributes": {"attributes": body.attributes},
    }
    for field, given in fields.items():
        try:
            SubscriberInput.parse(email=_PLACEHOLDER_EMAIL, **given)
        except InvalidSubscriberError as exc:
            errors[field] = str(exc)
    try:
        Consent.parse(body.consent.source, body.consent.text, body.consent.ip)
    except InvalidSubscriberError as exc:
        errors["consent"] = str(exc)
    return errors


def _parse_subscriber(raw: bytes) -> SubscriberIn:
    """``raw`` as a subscriber, or every refused field at once.

    A field of the wrong type stops the model before the checks of the others
    run; they are run here too, on the fields that had the right type, so one
    answer names every field to fix (not the wrong type first, then the rest).
    """
    try:
        body = _parse(SubscriberIn, raw)
    except Refused as refused:
        if refused.status == 422:
            refused.errors = {**refused.errors, **_errors_of_the_other_fields(raw, refused.errors)}
        raise
    errors = _subscriber_errors(body)
    if errors:
        raise Refused(422, "the subscriber was refused", errors)
    return body


def _errors_of_the_other_fields(raw: bytes, refused: dict[str, str]) -> dict[str, str]:
    data = json.loads(raw)  # valid JSON: _parse answered 400 otherwise
    if not isinstance(data, dict):
        return {}
    broken = {key.split(".")[0] for key in refused}
    given = {
        key: value
        for key, value in data.items()
        if key in SubscriberIn.model_fields and key not in broken
    }
    try:
        # The email is checked below only if it was given with the right type.
        body = SubscriberIn.model_validate_json(json.dumps({"email": "", **given}))
    except ValidationError:
        return {}
    return {key: message for key, message in _subscriber_errors(body).items() if key in given}


def routes(runtime: Runtime) -> APIRouter:
    """The ``/api/v1`` routes over ``runtime``."""
    router = APIRouter(prefix="/api/v1", tags=["api"])
    sessions = session_factory(runtime.engine)
    settings = runtime.settings
    render_confirmation = confirmation_renderer(
        Pages(settings.templates_dir, settings.secret_keys),
        settings.brand.name if settings.brand is not None else None,
    )

    def in_transaction(token: str, needed: Scope, work: Callable[[Session], Result]) -> Result:
        def attempt(session: Session) -> Result:
            _authorize(session, token, needed, runtime.clock())
            try:
                result = work(session)
            except IntegrityError:
                # Another request created the same address at the same moment.
                raise Refused(409, "a concurrent request changed this; retry") from None
            session.commit()  # not reached when anything above raised: nothing written
            return result

        # A deadlock victim on PostgreSQL is run again rather than answered 500.
        return retrying(sessions, attempt)

    async def ingest(
        request: Request, work: Callable[[Session, bytes], tuple[int, Model]]
    ) -> tuple[int, Model]:
        """An ingest request: the bearer token (``ingest`` scope), the bounded
        body, ``work`` in one transaction; :class:`Refused` when refused."""
        token = _bearer(request)
        raw = await read_body(request)
        return await run_in_threadpool(
            in_transaction, token, Scope.INGEST, lambda session: work(session, raw)
        )

    async def ingested(
        request: Request, work: Callable[[Session, bytes], tuple[int, BaseModel]]
    ) -> Response:
        """:func:`ingest`, answered as JSON."""
        try:
            status, out = await ingest(request, work)
        except Refused as refused:
            return refused.response()
        return JSONResponse(out.model_dump(mode="json"), status_code=status)

    @router.post(
        "/subscribers",
        response_model=SubscriberOut,
        status_code=201,
        responses={200: {"model": SubscriberOut, "description": "Updated."}, **_ERRORS},
        openapi_extra=_body_doc(SubscriberIn),
        summary="Create or update a subscriber",
    )
    async def post_subscriber(request: Request) -> Response:
        """Create (201) or update (200) a subscriber. Needs the ``ingest`` scope.

        ``confirmed: true`` only when you collected the consent: then the
        subscriber is active and enrolled by the sequences' triggers; otherwise
        unconfirmed, and enrolled in nothing until confirmed.
        """

        def work(session: Session, raw: bytes) -> tuple[int, SubscriberOut]:
            body = _parse_subscriber(raw)
            data = SubscriberInput.parse(
                email=body.email,
                name=body.name,
                first_name=body.first_name,
                timezone=body.timezone,
                locale=body.locale,
                tags=body.tags,
                attributes=body.attributes,
            )
            consent = Consent.parse(body.consent.source, body.consent.text, body.consent.ip)
            try:
                done = ingest_subscriber(
                    session, data, consent, consent_at=body.consent.at, confirmed=body.confirmed,
                    now=runtime.clock(), sequences=runtime.registry.sequences(),
                )  # fmt: skip
            except InvalidSubscriberError as exc:
                raise Refused(422, "the subscriber was refused", {"consent.at": str(exc)}) from None
            return 201 if done.created else 200, SubscriberOut(
                email=done.row.email,
                status=done.row.status,
                created=done.created,
                suppressed=done.suppressed,
                enrolled_in=[e.sequence_id for e in done.enrollments],
            )

        def ask(out: SubscriberOut) -> SignedUp | None:
            """The double opt-in email, once the subscriber is committed (a send
            is never inside a transaction that may be run again)."""
            with sessions() as session:
                row = find_subscriber(session, out.email)
                if row is None:  # erased by another request in between
                    return None
                return ask_to_confirm(
                    session, row, created=out.created, now=runtime.clock(),
                    mail=confirmation_mail(runtime, render_confirmation),
                )  # fmt: skip

        try:
            status, out = await ingest(request, work)
        except Refused as refused:
            return refused.response()
        if out.status == SubscriberStatus.UNCONFIRMED:
            asked = await run_in_threadpool(ask, out)
            if asked is not None:
                out.confirmation = asked.confirmation
                log.info(
                    "API subscriber #%s unconfirmed, confirmation %s",
                    asked.subscriber_id,
                    asked.confirmation or f"not sent ({asked.reason})",
                )
        return JSONResponse(out.model_dump(mode="json"), status_code=status)

    @router.post(
        "/events",
        response_model=EventOut,
        status_code=201,
        responses={
            200: {"model": EventOut, "description": "A replay: this id was recorded before."},
            404: {"model": Problem, "description": "No subscriber with this address."},
            **_ERRORS,
        },
        openapi_extra=_body_doc(EventIn),
        summary="Record an app event",
    )
    async def post_event(request: Request) -> Response:
        """Record an event (201), or nothing for an ``id`` seen before (200).

        Needs the ``ingest`` scope. The subscriber must exist (post it first). A
        sequence whose ``trigger: {event: NAME}`` names this event enrolls them,
        with ``properties`` as ``trigger.properties`` in its templates.
        """

        def work(session: Session, raw: bytes) -> tuple[int, EventOut]:
            body = _parse(EventIn, raw)
            try:
                email = normalise_email(body.email)
                recorded = record_app_event(
                    session, email=email, name=body.name, event_id=body.id,
                    properties=body.properties, occurred_at=body.occurred_at,
                    now=runtime.clock(), sequences=runtime.registry.sequences(),
                )  # fmt: skip
            except InvalidSubscriberError as exc:
                raise Refused(422, "the event was refused", {"event": str(exc)}) from None
            except UnknownSubscriberError as exc:
                raise Refused(404, str(exc)) from None
            return 200 if recorded.replay else 201, EventOut(
                id=recorded.event.event_id,
                name=recorded.event.name,
                replay=recorded.replay,
                enrolled_in=[e.sequence_id for e in recorded.enrollments],
            )

        return await ingested(request, work)

    @router.get(
        "/subscribers/{email}",
        responses={404: {"model": Problem}, **_ERRORS},
        summary="Everything held about a person",
    )
    async def get_subscriber(email: str, request: Request) -> Response:
        """The personal data held about ``email`` (as ``nurture subscribers
        export``). Needs the ``admin`` scope."""

        def work(session: Session) -> dict[str, Any]:
            try:
                data = export_personal_data(session, email)
            except InvalidSubscriberError:
                data = None
            if data is None:
                raise Refused(404, "no such subscriber")
            return data

        try:
            token = _bearer(request)
            data = await run_in_threadpool(in_transaction, token, Scope.ADMIN, work)
        except Refused as refused:
            return refused.response()
        return JSONResponse(data)

    return router
