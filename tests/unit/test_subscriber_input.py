"""SubscriberInput.parse: the one check of a subscriber's fields (no database)."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from nurture.audience.consent import Consent
from nurture.audience.input import InvalidSubscriberError, SubscriberInput


def test_fields_are_normalised() -> None:
    data = SubscriberInput.parse(
        email="  Anna@Example.COM ",
        name=" Anna Svensson ",
        first_name="  ",
        timezone=" Europe/Stockholm ",
        locale="sv_se",
        tags=["b2b", " ", "lead", "b2b", " vip "],
        attributes={" company ": "Exempel AB"},
    )
    assert data == SubscriberInput(
        email="anna@example.com",
        name="Anna Svensson",
        first_name=None,
        timezone="Europe/Stockholm",
        locale="sv-SE",
        tags=("b2b", "lead", "vip"),
        attributes={"company": "Exempel AB"},
    )


def test_not_given_stays_not_given() -> None:
    data = SubscriberInput.parse(email="a@example.com", timezone="", locale=None)
    assert (data.name, data.first_name, data.timezone, data.locale) == ("", None, None, None)
    assert (data.tags, dict(data.attributes)) == ((), {})


def test_the_input_cannot_be_changed_after_parsing() -> None:
    data = SubscriberInput.parse(email="a@example.com", attributes={"x": 1})
    with pytest.raises(dataclasses.FrozenInstanceError):
        data.email = "b@example.com"  # type: ignore[misc]
    with pytest.raises(TypeError):
        data.attributes["x"] = 2  # type: ignore[index]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"email": "not-an-address"}, "invalid email address 'not-an-address'"),
        ({"timezone": "localtime"}, "unknown time zone 'localtime'"),
        ({"timezone": "Factory"}, "unknown time zone 'Factory'"),
        ({"timezone": "europe/stockholm"}, "did you mean 'Europe/Stockholm'"),
        ({"locale": "xx-YY"}, "unknown locale 'xx-YY'"),
        ({"name": "x" * 201}, "name is longer than 200 characters"),
        ({"first_name": "x" * 101}, "first name is longer than 100 characters"),
        ({"tags": ["t" * 101]}, "is longer than 100 characters"),
        ({"attributes": {"": 1}}, "attribute name '' must be a non-empty string"),
        ({"attributes": {"when": object()}}, "attribute 'when': value"),
    ],
)
def test_each_refusal_names_its_field(fields: dict[str, Any], message: str) -> None:
    fields.setdefault("email", "a@example.com")
    with pytest.raises(InvalidSubscriberError, match=message):
        SubscriberInput.parse(**fields)


def test_consent_is_checked() -> None:
    assert Consent.parse(" form ", " Yes ", " 2001:db8::1 ") == Consent(
        "form", "Yes", "2001:db8::1"
    )
    with pytest.raises(InvalidSubscriberError, match="consent source is empty"):
        Consent.parse("  ")
    with pytest.raises(InvalidSubscriberError, match="not an IP address"):
        Consent.parse("form", ip="999.1.1.1")
