"""The values a purchase is made of: exact amounts, ISO 4217 currencies,
Stripe's minor units, and the checkout webhook's signature header."""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from fastapi import HTTPException

from nurture.audience.purchases import (
    InvalidPurchaseError,
    check_amount,
    check_currency,
    purchase_input,
)
from nurture.web.checkout import stripe_amount, verify_checkout_signature

NOW = datetime(2026, 11, 30, 11, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("minor", "currency", "amount"),
    [(1999, "SEK", "19.99"), (1500, "JPY", "1500"), (1500, "KWD", "1.500"),
     (10000, "ISK", "100.00"), (0, "EUR", "0.00")],
)  # fmt: skip
def test_stripe_minor_units_convert_exactly(minor: int, currency: str, amount: str) -> None:
    converted = stripe_amount(minor, currency)
    assert converted == Decimal(amount)
    assert str(converted) == amount


def test_amounts_stay_exact_and_bad_ones_are_refused() -> None:
    assert str(check_amount("19.99")) == "19.99"
    assert check_amount(Decimal("0.1")) + check_amount(Decimal("0.2")) == Decimal("0.3")
    assert check_amount(1500) == Decimal(1500)
    for bad in (19.99, True, "NaN", "Infinity", "-1", "1e14", "1.00001", "12,50", None, "x" * 50):
        with pytest.raises(InvalidPurchaseError):
            check_amount(bad)


def test_currencies_are_iso_4217_upper_case() -> None:
    assert check_currency("sek") == "SEK"
    assert check_currency(" JPY ") == "JPY"
    for bad in ("KR", "SEKK", "QQQ", "€", 752, None):
        with pytest.raises(InvalidPurchaseError):
            check_currency(bad)


def test_an_order_id_must_fit_the_event_id() -> None:
    values: dict[str, Any] = {
        "source": "woocommerce", "product": "p", "amount": "1", "currency": "SEK",
        "occurred_at": NOW, "email": "k@example.com",
    }  # fmt: skip
    assert purchase_input(order_id="x" * 170, **values).order_id == "x" * 170
    with pytest.raises(InvalidPurchaseError, match="longer than 170"):
        purchase_input(order_id="x" * 171, **values)
    with pytest.raises(InvalidPurchaseError, match="before 2000"):
        purchase_input(**{**values, "order_id": "1", "occurred_at": datetime(1, 1, 1, tzinfo=UTC)})


def _header(body: bytes, t: int, secret: str = "s") -> str:
    mac = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def test_the_checkout_signature_is_stripes_scheme() -> None:
    body = b'{"order_id": "1"}'
    t = int(NOW.timestamp())
    verify_checkout_signature(_header(body, t), body, "s", NOW)
    # A rotated secret: any of several v1 values may match.
    verify_checkout_signature(_header(body, t, "old") + "," + _header(body, t).split(",")[1],
                              body, "s", NOW)  # fmt: skip
    for header in (None, "", "t=abc,v1=00", f"t={t}", _header(body + b" ", t),
                   _header(body, t - 301), _header(body, t + 301), "t=١٢٣,v1=00"):  # fmt: skip
        with pytest.raises(HTTPException) as refused:
            verify_checkout_signature(header, body, "s", NOW)
        assert refused.value.status_code == 401
