"""``validate`` warns about what subscribers would see of the example, and about
a subject too long for an inbox: warnings at the value's place, never problems."""

from __future__ import annotations

from pathlib import Path

import pytest

from nurture.app.settings import Settings
from nurture.authoring.checks import LONG_SUBJECT, example_values
from nurture.core.loader import parse_sequence

EXAMPLE = (Path(__file__).resolve().parents[2] / "sequences" / "sales-process.yaml").read_text(
    encoding="utf-8"
)
SETTINGS = Settings(
    postal_address="Acme Inc, 1 Main Street, Springfield, USA",
    base_url="https://mail.acme.com",
    secret_key="a-real-secret-of-some-length",
)


def warnings(text: str) -> list[str]:
    loaded, problems = parse_sequence(text, "s.yaml")
    assert loaded is not None, problems
    return [f"{d.line}:{d.column}: {d.message}" for d in example_values(SETTINGS, [loaded])]


def line_of(text: str, part: str) -> int:
    return text[: text.index(part)].count("\n") + 1


def test_the_example_s_brand_and_checkout_are_named_where_they_are_written() -> None:
    found = [w for w in warnings(EXAMPLE) if "brand" in w or "checkout" in w]
    assert found == [
        f"{line_of(EXAMPLE, '  name: Exempel AB')}:9: brand name 'Exempel AB' is the "
        "example's: every email and sign-up page shows it; put your business's name",
        f"{line_of(EXAMPLE, 'checkout_url: https://shop.example.com')}:21: checkout_url "
        "https://shop.example.com/checkout/sales-audit is an example address: purchases "
        "would go nowhere; put your shop's checkout page",
    ]


def test_a_real_brand_and_checkout_are_not_warned_about() -> None:
    text = EXAMPLE.replace("  name: Exempel AB", "  name: Acme").replace(
        "https://shop.example.com/", "https://shop.acme.com/"
    )
    assert not [w for w in warnings(text) if "brand" in w or "checkout" in w]


@pytest.mark.parametrize(("length", "warned"), [(LONG_SUBJECT, False), (LONG_SUBJECT + 1, True)])
def test_a_subject_longer_than_an_inbox_shows_is_a_warning(length: int, warned: bool) -> None:
    old = "      en: Three ways to buy – which one do your customers use?"
    # A Jinja tag counts as one character: it is replaced by a value.
    subject = "{{ subscriber.first_name }}" + "x" * (length - 1)
    text = EXAMPLE.replace(old, f'      en: "{subject}"')
    found = [w for w in warnings(text) if "the subject is" in w]
    if not warned:
        assert found == []
        return
    assert found == [
        f"{line_of(text, subject)}:11: step 'three-models': the subject is {length} characters; "
        f"inboxes show about the first 60 (phones fewer): keep it under {LONG_SUBJECT}, what "
        "matters first"
    ]
