"""Recording a purchase and crediting it to the send that earned it.

Every way a purchase comes in (the signed checkout webhook, the Stripe,
Shopify and WooCommerce adapters, ``nurture events add purchase``) ends here,
as one :class:`PurchaseInput`:

* it is stored once per (source, order id): a replay changes nothing;
* it is credited to the send whose link the subscriber last clicked (a
  person's click, not a link scanner's) within the attribution window; else
  to the send the ``nurture_ref`` names; else to the last delivered send of
  the subscriber's most recent sequence;
* a ``purchased`` event is recorded with it, which makes the decision
  function end every enrollment whose goal it meets (``converted``) on the
  next dispatch pass.

A purchase by an address that is not a subscriber is acknowledged and not
stored: there is nothing to credit, and no reason to keep a stranger's order.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from functools import lru_cache
from typing import Any

from babel.numbers import list_currencies
from sqlalchemy.engine import Connection

from nurture.audience.events import record_event
from nurture.audience.input import InvalidSubscriberError, check_text, normalise_email
from nurture.core.timing import EARLIEST
from nurture.core.tokens import read_ref
from nurture.core.vocabulary import EventKind
from nurture.errors import NurtureError
from nurture.store.purchases import (
    SendRef,
    insert_purchase,
    last_delivered_send,
    last_human_click,
    purchase_id,
    send_by_key,
    subscriber_id_by_email,
)

SOURCES = ("checkout", "stripe", "shopify", "woocommerce", "manual")
"""Where a purchase may come from (``purchase.source``)."""

MAX_AMOUNT = Decimal("1e14")
"""Amounts must fit ``NUMERIC(18, 4)``: 14 digits before the point, 4 after."""

# The order id is also part of the event's id (``purchase:<source>:<order id>``,
# at most 200 characters), hence 170.
_TEXT_LIMITS = {"order id": 170, "product": 200}
_CURRENCY = re.compile(r"[A-Z]{3}")
_NOT_MONEY = frozenset({"XXX", "XTS"})  # ISO 4217's "no currency" and "for testing"


class InvalidPurchaseError(NurtureError):
    """A purchase that cannot be recorded as given (a bad amount, currency,
    order id, a ref that does not verify and no address to fall back on)."""


class Credit(StrEnum):
    """Why a purchase was credited to its send."""

    CLICK = "click"
    REF = "ref"
    LAST_SEND = "last_send"
    NONE = "none"


class Outcome(StrEnum):
    RECORDED = "recorded"
    DUPLICATE = "duplicate"
    NO_SUBSCRIBER = "no_subscriber"


@dataclass(frozen=True)
class PurchaseInput:
    """One purchase, checked: :func:`purchase_input` builds it from outside values."""

    source: str
    order_id: str
    product: str | None
    amount: Decimal
    currency: str
    occurred_at: datetime
    email: str | None = None
    ref: str | None = None
    payload: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Recorded:
    """What :func:`record_purchase` did."""

    outcome: Outcome
    purchase_id: int | None = None
    subscriber_id: int | None = None
    send: SendRef | None = None
    credit: Credit = Credit.NONE


@lru_cache(maxsize=1)
def _currencies() -> frozenset[str]:
    return frozenset(list_currencies())


def check_currency(value: object) -> str:
    """An ISO 4217 code, upper-case (``sek`` becomes ``SEK``); anything else is refused."""
    if not isinstance(value, str):
        raise InvalidPurchaseError("currency must be a three-letter ISO 4217 code")
    code = value.strip()
    # ASCII before upper-casing: "ſek" (a long s) must not become SEK.
    code = code.upper() if code.isascii() else code
    if not _CURRENCY.fullmatch(code) or code not in _currencies() or code in _NOT_MONEY:
        raise InvalidPurchaseError(f"currency {value[:10]!r} is not an ISO 4217 code")
    return code


def check_amount(value: object) -> Decimal:
    """An exact, non-negative amount with at most 4 decimals (``"19.99"`` or a
    JSON number parsed as Decimal; never a float, which is not exact)."""
    if isinstance(value, (bool, float)):
        raise InvalidPurchaseError('amount must be a decimal string such as "19.99"')
    if isinstance(value, int):
        amount = Decimal(value)
    elif isinstance(value, Decimal):
        amount = value
    elif isinstance(value, str) and len(value) <= 40:
        try:
            amount = Decimal(value.strip())
        except InvalidOperation:
            raise InvalidPurchaseError(f"amount {value!r} is not a number") from None
    else:
        raise InvalidPurchaseError('amount must be a decimal string such as "19.99"')
    if not amount.is_finite() or amount < 0:
        raise InvalidPurchaseError("amount must be a finite number, zero or more")
    if amount >= MAX_AMOUNT:
        raise InvalidPurchaseError("amount is too large")
    exponent = amount.as_tuple().exponent
    if isinstance(exponent, int) and exponent < -4:
        raise InvalidPurchaseError("amount has more than 4 decimals")
    return amount


def _text(what: str, value: object, *, required: bool) -> str | None:
    if value is None or value == "":
        if required:
            raise InvalidPurchaseError(f"{what} is missing")
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise InvalidPurchaseError(f"{what} must be a string")
    text = str(value).strip()
    if not text and required:
        raise InvalidPurchaseError(f"{what} is missing")
    try:  # the rules of every subscriber field: no control character (C0 or C1),
        # line separator or lone surrogate
        check_text(what, text, _TEXT_LIMITS[what])
    except InvalidSubscriberError as exc:
        raise InvalidPurchaseError(str(exc)) from None
    return text or None


def purchase_input(
    *,
    source: str,
    order_id: object,
    product: object,
    amount: object,
    currency: object,
    occurred_at: datetime,
    email: object = None,
    ref: object = None,
    payload: Mapping[str, Any] | None = None,
) -> PurchaseInput:
    """Check outside values and build a :class:`PurchaseInput`; raises
    :class:`InvalidPurchaseError` naming the first bad value."""
    if source not in SOURCES:
        raise ValueError(f"unknown purchase source {source!r}")
    if occurred_at.tzinfo is None:
        raise InvalidPurchaseError("occurred_at has no time zone")
    if occurred_at < EARLIEST:
        raise InvalidPurchaseError("occurred_at is before 2000")
    if email is not None and not isinstance(email, str):
        raise InvalidPurchaseError("email must be a string")
    if ref is not None and not isinstance(ref, str):
        raise InvalidPurchaseError("nurture_ref must be a string")
    if not email and not ref:
        raise InvalidPurchaseError("email or nurture_ref is missing")
    return PurchaseInput(
        source=source,
        order_id=str(_text("order id", order_id, required=True)),
        product=_text("product", product, required=False),
        amount=check_amount(amount),
        currency=check_currency(currency),
        occurred_at=occurred_at,
        email=email or None,
        ref=ref or None,
        payload=dict(payload or {}),
    )


def _ref_send(
    conn: Connection, keys: Sequence[str], ref: str | None, now: datetime
) -> SendRef | None:
    if ref is None:
        return None
    key = read_ref(keys, ref, now=now)
    return None if key is None else send_by_key(conn, key)


def record_purchase(
    conn: Connection,
    purchase: PurchaseInput,
    *,
    keys: Sequence[str],
    attribution_window: timedelta,
    now: datetime,
) -> Recorded:
    """Store ``purchase`` once, credit it, and record its ``purchased`` event.

    Run it in one transaction (``engine.begin()``): the purchase and its event
    are stored together or not at all. A ref that does not verify (or names no
    send) falls back to the email; without one, :class:`InvalidPurchaseError`
    and nothing is stored.
    """
    if purchase_id(conn, purchase.source, purchase.order_id) is not None:
        return Recorded(Outcome.DUPLICATE)
    by_ref = _ref_send(conn, keys, purchase.ref, now)
    if by_ref is not None:
        subscriber_id: int | None = by_ref.subscriber_id
    elif purchase.email is None:
        raise InvalidPurchaseError("nurture_ref is not valid, and no email was given")
    else:
        try:
            email = normalise_email(purchase.email)
        except InvalidSubscriberError as exc:
            raise InvalidPurchaseError(str(exc)) from None
        subscriber_id = subscriber_id_by_email(conn, email)
    if subscriber_id is None:
        return Recorded(Outcome.NO_SUBSCRIBER)

    # A shop's clock a little ahead of ours must not put the purchase in the
    # future, where the decision function would not see it yet.
    at = min(purchase.occurred_at, now)
    credit, send = (
        Credit.CLICK,
        last_human_click(conn, subscriber_id, since=at - attribution_window, until=at),
    )
    if send is None:
        credit, send = Credit.REF, by_ref
    if send is None:
        credit, send = Credit.LAST_SEND, last_delivered_send(conn, subscriber_id)
    if send is None:
        credit = Credit.NONE
    values: dict[str, Any] = {
        "source": purchase.source,
        "order_id": purchase.order_id,
        "subscriber_id": subscriber_id,
        "send_id": send.id if send else None,
        "sequence_id": send.sequence_id if send else None,
        "step_id": send.step_id if send else None,
        "product": purchase.product,
        "amount": purchase.amount,
        "currency": purchase.currency,
        "occurred_at": at,
        "received_at": now,
        "payload": dict(purchase.payload),
    }
    new_id = insert_purchase(conn, values)
    if new_id is None:  # the same order, stored by a concurrent request
        return Recorded(Outcome.DUPLICATE)
    record_event(
        conn,
        kind=EventKind.PURCHASED,
        subscriber_id=subscriber_id,
        occurred_at=at,
        received_at=now,
        provider_event_id=f"purchase:{purchase.source}:{purchase.order_id}",
        sequence_id=send.sequence_id if send else None,
        step_id=send.step_id if send else None,
        product=purchase.product,
        send_id=send.id if send else None,
        payload={
            "source": purchase.source,
            "order_id": purchase.order_id,
            "amount": str(purchase.amount),
            "currency": purchase.currency,
            "credit": credit.value,
        },
    )
    return Recorded(Outcome.RECORDED, new_id, subscriber_id, send, credit)
