"""Purchases from the checkout: ``POST /webhooks/checkout`` for any shop, and
native adapters for Stripe, Shopify and WooCommerce.

Each endpoint verifies its request the way its platform documents it, over the
raw body, before anything is parsed; a request that is not genuine, is stale,
oversized, not JSON or lacks a field gets a terse 4xx and stores nothing. An
endpoint whose secret is not configured answers 404 and never accepts an
unsigned request. What a genuine request carries becomes one
:class:`~nurture.audience.purchases.PurchaseInput`, recorded by
:func:`~nurture.audience.purchases.record_purchase` (once per order).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qs, urlsplit

import stripe
from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import JSONResponse
from sqlmodel import Session
from starlette.concurrency import run_in_threadpool

from nurture.app.runtime import Runtime
from nurture.audience.purchases import (
    InvalidPurchaseError,
    Outcome,
    PurchaseInput,
    Recorded,
    check_currency,
    purchase_input,
    record_purchase,
)
from nurture.store.db import session_factory
from nurture.store.retry import retrying
from nurture.web.common import read_body

WEBHOOK_BODY_LIMIT = 1024 * 1024
"""Bytes a webhook's body may have (a large Shopify order is well under this)."""

TOLERANCE = 300
"""Seconds a signed checkout or Stripe request may be old (or ahead of our clock)."""

SIGNATURE_HEADER = "X-Nurture-Signature"

PAID_WOOCOMMERCE = frozenset({"processing", "completed"})

# Stripe's amounts are in the currency's minor unit as Stripe defines it: these
# are zero-decimal, these three-decimal, every other currency two-decimal
# (ISK, HUF and TWD included: the API keeps them two-decimal).
STRIPE_ZERO_DECIMAL = frozenset(
    {"BIF", "CLP", "DJF", "GNF", "JPY", "KMF", "KRW", "MGA"}
    | {"PYG", "RWF", "UGX", "VND", "VUV", "XAF", "XOF", "XPF"}
)
STRIPE_THREE_DECIMAL = frozenset({"BHD", "JOD", "KWD", "OMR", "TND"})


def stripe_amount(minor: object, currency: str) -> Decimal:
    """``amount_total`` (an integer in minor units) as an exact amount:
    1500 JPY is 1500, 1999 SEK is 19.99, 1500 KWD is 1.500."""
    if isinstance(minor, bool) or not isinstance(minor, int):
        raise InvalidPurchaseError("amount_total must be an integer")
    if currency in STRIPE_ZERO_DECIMAL:
        exponent = 0
    elif currency in STRIPE_THREE_DECIMAL:
        exponent = 3
    else:
        exponent = 2
    return Decimal(minor).scaleb(-exponent)


def _refuse(status: int, detail: str) -> HTTPException:
    return HTTPException(status_code=status, detail=detail)


def _secret(value: str | None, setting: str) -> str:
    if not value:
        raise _refuse(404, f"not configured: set {setting} to receive these webhooks")
    return value


def _json_object(body: bytes) -> dict[str, Any]:
    """The body as a JSON object; numbers with a fraction parsed as exact Decimals."""
    try:
        data = json.loads(body.decode("utf-8"), parse_float=Decimal)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise _refuse(400, "body is not JSON") from None
    if not isinstance(data, dict):
        raise _refuse(400, "body is not a JSON object")
    return data


def _b64_hmac(secret: str, body: bytes) -> str:
    digest = hmac.new(secret.encode("utf-8"), body, hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


def _same(given: str | None, expected: str) -> bool:
    if not given:
        return False
    return hmac.compare_digest(given.strip().encode("utf-8"), expected.encode("utf-8"))


def verify_checkout_signature(header: str | None, body: bytes, secret: str, now: datetime) -> None:
    """``X-Nurture-Signature: t=<unix seconds>,v1=<hex>``: v1 is HMAC-SHA256 with
    ``secret`` over ``"<t>.<raw body>"``; ``t`` within :data:`TOLERANCE` of ``now``."""
    if not header:
        raise _refuse(401, f"{SIGNATURE_HEADER} missing")
    timestamp: int | None = None
    signatures: list[str] = []
    for item in header.split(","):
        name, _, value = item.strip().partition("=")
        if name == "t" and value.isascii() and value.isdigit() and len(value) <= 12:
            timestamp = int(value)
        elif name == "v1":
            signatures.append(value.strip())
    if timestamp is None or not signatures:
        raise _refuse(401, f"{SIGNATURE_HEADER} malformed")
    if abs(now.timestamp() - timestamp) > TOLERANCE:
        raise _refuse(401, "signature timestamp outside the tolerance")
    expected = hmac.new(
        secret.encode("utf-8"), f"{timestamp}.".encode("ascii") + body, hashlib.sha256
    ).hexdigest()
    # Every v1 is compared (no early exit), each in constant time.
    matches = [
        hmac.compare_digest(given.lower().encode(), expected.encode()) for given in signatures
    ]
    if not any(matches):
        raise _refuse(401, "bad signature")


def _instant(value: object, what: str, *, naive_is_utc: bool = False) -> datetime:
    """An ISO 8601 time with an offset (or, with ``naive_is_utc``, one without:
    WooCommerce's ``*_gmt`` fields)."""
    if not isinstance(value, str) or len(value) > 40:
        raise InvalidPurchaseError(f"{what} must be an ISO 8601 time")
    try:
        moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        if moment.tzinfo is None:
            if not naive_is_utc:
                raise InvalidPurchaseError(f"{what} has no time zone (add Z or an offset)")
            moment = moment.replace(tzinfo=UTC)
        return moment.astimezone(UTC)
    except (ValueError, OverflowError):
        raise InvalidPurchaseError(f"{what} is not an ISO 8601 time") from None


def _dict(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


# ---------------------------------------------------------------- payloads


def checkout_purchase(data: Mapping[str, Any]) -> PurchaseInput:
    """The generic webhook's JSON: ``order_id``, ``email`` or ``nurture_ref``,
    ``product``, ``amount``, ``currency``, ``occurred_at``."""
    for name in ("order_id", "product", "amount", "currency", "occurred_at"):
        if data.get(name) in (None, ""):
            raise InvalidPurchaseError(f"{name} is missing")
    return purchase_input(
        source="checkout",
        order_id=data.get("order_id"),
        product=data.get("product"),
        amount=data.get("amount"),
        currency=data.get("currency"),
        occurred_at=_instant(data.get("occurred_at"), "occurred_at"),
        email=data.get("email"),
        ref=data.get("nurture_ref"),
        payload={
            key: str(data[key])
            for key in ("order_id", "product", "amount", "currency", "occurred_at")
        },
    )


def stripe_purchase(event: Mapping[str, Any]) -> PurchaseInput | None:
    """A paid Checkout Session (``checkout.session.completed`` with
    ``payment_status`` paid, or ``checkout.session.async_payment_succeeded``);
    None for any other event."""
    kind = event.get("type")
    session = _dict(_dict(event.get("data")).get("object"))
    if kind == "checkout.session.completed":
        if session.get("payment_status") not in ("paid", "no_payment_required"):
            return None  # an asynchronous payment: async_payment_succeeded follows
    elif kind != "checkout.session.async_payment_succeeded":
        return None
    metadata = _dict(session.get("metadata"))
    currency = check_currency(session.get("currency"))
    created = event.get("created")
    if isinstance(created, bool) or not isinstance(created, int):
        raise InvalidPurchaseError("created is missing")
    try:
        occurred_at = datetime.fromtimestamp(created, UTC)
    except (ValueError, OverflowError, OSError):
        raise InvalidPurchaseError("created is not a time") from None
    details = _dict(session.get("customer_details"))
    return purchase_input(
        source="stripe",
        order_id=session.get("id"),
        product=metadata.get("product") or metadata.get("nurture_product"),
        amount=stripe_amount(session.get("amount_total"), currency),
        currency=currency,
        occurred_at=occurred_at,
        email=details.get("email") or session.get("customer_email"),
        ref=session.get("client_reference_id") or metadata.get("nurture_ref"),
        payload={"event_id": str(event.get("id")), "type": str(kind)},
    )


def _first_item(items: list[Any]) -> Mapping[str, Any]:
    return next((item for item in items if isinstance(item, dict)), {})


def _product_of(items: list[Any]) -> object:
    """The order's product: the first line item's SKU, else its name."""
    item = _first_item(items)
    return item.get("sku") or item.get("name") or item.get("title")


def _ref_in_url(url: object) -> str | None:
    if not isinstance(url, str) or len(url) > 4000:
        return None
    try:
        query = urlsplit(url).query
    except ValueError:  # "http://[::1/": not a URL, so no ref in it
        return None
    values = parse_qs(query).get("nurture_ref")
    return values[0] if values else None


def shopify_purchase(order: Mapping[str, Any]) -> PurchaseInput:
    """An ``orders/paid`` order: the ref from a note attribute ``nurture_ref``
    or the landing site's query string, else the customer's email."""
    ref = next(
        (
            attribute.get("value")
            for attribute in _list(order.get("note_attributes"))
            if isinstance(attribute, dict) and attribute.get("name") == "nurture_ref"
        ),
        None,
    ) or _ref_in_url(order.get("landing_site"))
    email = order.get("email") or order.get("contact_email")
    email = email or _dict(order.get("customer")).get("email")
    if order.get("total_price") in (None, ""):
        raise InvalidPurchaseError("total_price is missing")
    return purchase_input(
        source="shopify",
        order_id=order.get("id"),
        product=_product_of(_list(order.get("line_items"))),
        amount=order.get("total_price"),
        currency=order.get("currency"),
        occurred_at=_instant(order.get("processed_at") or order.get("created_at"), "processed_at"),
        email=email,
        ref=ref,
        payload={"order_id": str(order.get("id")), "name": str(order.get("name", ""))},
    )


def woocommerce_purchase(order: Mapping[str, Any]) -> PurchaseInput | None:
    """A paid order (status processing or completed); None for any other status."""
    status = order.get("status")
    if not isinstance(status, str) or status not in PAID_WOOCOMMERCE:
        return None
    ref = next(
        (
            item.get("value")
            for item in _list(order.get("meta_data"))
            if isinstance(item, dict) and item.get("key") == "nurture_ref"
        ),
        None,
    )
    if order.get("total") in (None, ""):
        raise InvalidPurchaseError("total is missing")
    paid = order.get("date_paid_gmt") or order.get("date_created_gmt")
    return purchase_input(
        source="woocommerce",
        order_id=order.get("id"),
        product=_product_of(_list(order.get("line_items"))),
        amount=order.get("total"),
        currency=order.get("currency"),
        occurred_at=_instant(paid, "date_paid_gmt", naive_is_utc=True),
        email=_dict(order.get("billing")).get("email"),
        ref=ref,
        payload={"order_id": str(order.get("id")), "status": str(order.get("status"))},
    )


# ---------------------------------------------------------------- routes


def _ignored(reason: str) -> JSONResponse:
    return JSONResponse({"status": "ignored", "reason": reason})


def routes(runtime: Runtime) -> APIRouter:
    """``/webhooks/checkout``, ``/webhooks/stripe``, ``/webhooks/shopify`` and
    ``/webhooks/woocommerce``."""
    router = APIRouter()
    settings = runtime.settings
    window = timedelta(seconds=settings.attribution_window)
    sessions = session_factory(runtime.engine)

    def record(purchase: PurchaseInput) -> JSONResponse:
        now = runtime.clock()

        def attempt(session: Session) -> Recorded:
            done = record_purchase(
                session.connection(), purchase, keys=settings.secret_keys,
                attribution_window=window, now=now,
            )  # fmt: skip
            session.commit()
            return done

        try:
            # A deadlock victim on PostgreSQL is run again rather than answered 500.
            done = retrying(sessions, attempt)
        except InvalidPurchaseError as exc:
            return JSONResponse({"detail": str(exc)}, status_code=422)
        if done.outcome == Outcome.NO_SUBSCRIBER:
            return _ignored("no subscriber with this address")
        body: dict[str, Any] = {"status": done.outcome.value}
        if done.outcome == Outcome.RECORDED:
            body["credit"] = done.credit.value
        return JSONResponse(body)

    async def handle(build: Callable[[], PurchaseInput | None], ignored: str) -> JSONResponse:
        try:
            purchase = build()
        except InvalidPurchaseError as exc:
            return JSONResponse({"detail": str(exc)}, status_code=422)
        if purchase is None:
            return _ignored(ignored)
        return await run_in_threadpool(record, purchase)

    @router.post("/webhooks/checkout")
    async def checkout(request: Request) -> JSONResponse:
        """Any shop: a JSON purchase signed like Stripe signs (see the README)."""
        secret = _secret(settings.checkout_webhook_secret, "checkout_webhook_secret")
        body = await read_body(request, limit=WEBHOOK_BODY_LIMIT)
        verify_checkout_signature(
            request.headers.get(SIGNATURE_HEADER), body, secret, runtime.clock()
        )
        data = _json_object(body)
        return await handle(lambda: checkout_purchase(data), "")

    @router.post("/webhooks/stripe")
    async def stripe_webhook(request: Request) -> JSONResponse:
        """Stripe: ``checkout.session.completed``, verified by the official library."""
        secret = _secret(settings.stripe_webhook_secret, "stripe_webhook_secret")
        body = await read_body(request, limit=WEBHOOK_BODY_LIMIT)
        header = request.headers.get("Stripe-Signature")
        if not header:
            raise _refuse(401, "Stripe-Signature missing")
        if not header.isascii():  # the library's comparison raises TypeError on it
            raise _refuse(401, "bad signature")
        try:
            # The signature only; the body is read by _json_object, which
            # answers 400 for whatever is not a JSON object (the library's own
            # parsing fails on a list, or a deep nesting, with a 500).
            stripe.WebhookSignature.verify_header(
                body.decode("utf-8"), header, secret, tolerance=TOLERANCE
            )
        except stripe.SignatureVerificationError:
            raise _refuse(401, "bad signature") from None
        except UnicodeDecodeError:  # correctly signed or not, it is no JSON
            raise _refuse(400, "body is not JSON") from None
        event = _json_object(body)
        return await handle(lambda: stripe_purchase(event), f"event {event.get('type')!s:.60}")

    @router.post("/webhooks/shopify")
    async def shopify(request: Request) -> JSONResponse:
        """Shopify: ``orders/paid``, ``X-Shopify-Hmac-Sha256`` over the raw body."""
        secret = _secret(settings.shopify_webhook_secret, "shopify_webhook_secret")
        body = await read_body(request, limit=WEBHOOK_BODY_LIMIT)
        if not _same(request.headers.get("X-Shopify-Hmac-Sha256"), _b64_hmac(secret, body)):
            raise _refuse(401, "bad signature")
        order = _json_object(body)
        topic = request.headers.get("X-Shopify-Topic", "")
        if topic != "orders/paid":
            return _ignored(f"topic {topic:.60}")
        return await handle(lambda: shopify_purchase(order), "")

    @router.post("/webhooks/woocommerce")
    async def woocommerce(request: Request) -> JSONResponse:
        """WooCommerce: ``order.created``/``order.updated`` once paid,
        ``X-WC-Webhook-Signature`` over the raw body."""
        secret = _secret(settings.woocommerce_webhook_secret, "woocommerce_webhook_secret")
        body = await read_body(request, limit=WEBHOOK_BODY_LIMIT)
        signature = request.headers.get("X-WC-Webhook-Signature")
        if signature is None and body.startswith(b"webhook_id=") and body[11:].isdigit():
            # WooCommerce's unsigned ping when a webhook is saved: stores nothing.
            return JSONResponse({"status": "ping"})
        if not _same(signature, _b64_hmac(secret, body)):
            raise _refuse(401, "bad signature")
        order = _json_object(body)
        topic = request.headers.get("X-WC-Webhook-Topic", "")
        if topic not in ("order.created", "order.updated"):
            return _ignored(f"topic {topic:.60}")
        return await handle(
            lambda: woocommerce_purchase(order), f"order status {order.get('status')!s:.30}"
        )

    return router
