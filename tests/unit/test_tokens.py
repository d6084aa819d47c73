"""Signed link tokens: only a genuine token for the right purpose opens."""

from __future__ import annotations

import pytest

from nurture.core.tokens import sign, verify

SECRET = "a-long-random-secret"


def test_a_genuine_token_gives_back_its_payload() -> None:
    token = sign(SECRET, "manage", {"s": 42, "e": "karin@example.com"})
    assert verify(SECRET, "manage", token) == {"s": 42, "e": "karin@example.com"}


@pytest.mark.parametrize(
    "mangle",
    [
        lambda t: t[:-1] + ("A" if t[-1] != "A" else "B"),  # signature changed
        lambda t: "e30" + t[t.index(".") :],  # payload swapped for {}
        lambda t: t.split(".")[0],  # no signature
        lambda t: t + "é",  # not ASCII
        lambda t: "",
    ],
)
def test_a_tampered_token_is_refused(mangle: object) -> None:
    token = sign(SECRET, "manage", {"s": 42})
    assert verify(SECRET, "manage", mangle(token)) is None  # type: ignore[operator]


def test_a_token_is_bound_to_its_secret_and_purpose() -> None:
    token = sign(SECRET, "manage", {"s": 42})
    assert verify("another-secret", "manage", token) is None
    assert verify(SECRET, "confirm", token) is None
