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
        # Limits and control characters (each message names the field only).
        ({"email": "a" * 250 + "@example.com"}, "email address is longer than 254 characters"),
        ({"name": "Anna\x00"}, r"name contains a NUL character \(U\+0000\)"),
        ({"name": "Anna\r\nBcc: x@example.com"}, r"name contains a line break \(U\+000D\)"),
        ({"name": "Anna\u2028Svensson"}, r"name contains a line break \(U\+2028\)"),
        ({"name": "\x1b[31mAnna"}, r"name contains a control character \(U\+001B\)"),
        ({"name": "Anna\x9b"}, r"name contains a control character \(U\+009B\)"),
        ({"first_name": "A\tnna"}, r"first name contains a control character \(U\+0009\)"),
        ({"tags": ["ok", "v\x07ip"]}, r"tag 2 contains a control character \(U\+0007\)"),
        ({"tags": [f"t{i}" for i in range(101)]}, "tags: more than 100"),
        ({"attributes": {f"k{i}": 1 for i in range(51)}}, "attributes: more than 50"),
        ({"attributes": {"k" * 101: 1}}, "attribute name is longer than 100 characters"),
        ({"attributes": {"a\nb": 1}}, r"attribute name contains a line break \(U\+000A\)"),
        ({"attributes": {"note": "x" * 2001}}, "attribute 'note' is longer than 2000"),
        ({"attributes": {"list": ["x" * 1000] * 3}}, "attribute 'list' is longer than 2000"),
        ({"attributes": {"note": "a\x00b"}}, r"attribute 'note' contains a NUL character"),
        ({"attributes": {"note": {"deep": ["\x1b]0;t\x07"]}}}, r"'note' contains a control"),
        ({"name": "Ann\ud800"}, r"name contains an unpaired surrogate \(U\+D800\)"),
        ({"attributes": {"note": "x\udfff"}}, r"'note' contains an unpaired surrogate"),
        ({"email": "x\ufffd@example.com"}, "bytes that are not UTF-8 text"),
    ],
)
def test_each_refusal_names_its_field(fields: dict[str, Any], message: str) -> None:
    fields.setdefault("email", "a@example.com")
    with pytest.raises(InvalidSubscriberError, match=message):
        SubscriberInput.parse(**fields)


def test_limits_are_inclusive_and_free_text_may_span_lines() -> None:
    data = SubscriberInput.parse(
        email="a" * 242 + "@example.com",
        name="n" * 200,
        tags=[f"t{i}" for i in range(100)],
        attributes={"address": "Storgatan 1\r\n111 22 Stockholm\tSE", "note": "x" * 2000},
    )
    assert len(data.email) == 254
    assert len(data.tags) == 100
    assert data.attributes["address"] == "Storgatan 1\r\n111 22 Stockholm\tSE"


def test_refusals_do_not_echo_the_value() -> None:
    # A CSV import prints these per line: the value may be someone's data, or
    # an escape sequence aimed at the terminal.
    with pytest.raises(InvalidSubscriberError) as caught:
        SubscriberInput.parse(email="a@example.com", attributes={"secret": "Street 1\x00 private"})
    assert "Street" not in str(caught.value) and "private" not in str(caught.value)


def test_internationalised_addresses_are_accepted() -> None:
    assert SubscriberInput.parse(email="Jörg@Example.com").email == "jörg@example.com"
    assert SubscriberInput.parse(email="anna@EXÄMPLE.se").email == "anna@exämple.se"


def test_consent_is_checked() -> None:
    assert Consent.parse(" form ", " Yes ", " 2001:db8::1 ") == Consent(
        "form", "Yes", "2001:db8::1"
    )
    with pytest.raises(InvalidSubscriberError, match="consent source is empty"):
        Consent.parse("  ")
    with pytest.raises(InvalidSubscriberError, match="not an IP address"):
        Consent.parse("form", ip="999.1.1.1")


def test_tags_are_case_folded_split_and_unquoted() -> None:
    # What `--tag " B2B ,Lead"`, a Kit "tags" cell and a Mailchimp TAGS cell hold.
    data = SubscriberInput.parse(
        email="a@example.com", tags=[" B2B ,Lead", "b2b; VIP | lead", '"Customer","Straße"']
    )
    assert data.tags == ("b2b", "lead", "vip", "customer", "strasse")


def test_remembered_checks_refuse_a_bad_tag_or_name_every_time() -> None:
    # Tag and attribute-name checks are remembered per distinct value; a
    # refusal is not, so the second row with the same bad value fails too.
    for _ in range(2):
        with pytest.raises(InvalidSubscriberError, match="tag 1"):
            SubscriberInput.parse(email="a@example.com", tags=["bad\x1btag"])
        with pytest.raises(InvalidSubscriberError, match="attribute name"):
            SubscriberInput.parse(email="a@example.com", attributes={"bad\nname": "x"})
    first = SubscriberInput.parse(email="a@example.com", tags=["B2B, News"])
    again = SubscriberInput.parse(email="b@example.com", tags=["B2B, News"])
    assert first.tags == again.tags == ("b2b", "news")
    long_cell = ",".join(f"tag{n}" for n in range(300))  # longer than what is remembered
    with pytest.raises(InvalidSubscriberError, match="tags: more than"):
        SubscriberInput.parse(email="a@example.com", tags=[long_cell])


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"ip": "fe80::1%eth0"}, "consent IP 'fe80::1%eth0' is not an IP address"),
        ({"ip": "fe80::1%" + "A" * 5000 + "\n<script>"}, "is not an IP address"),
        ({"ip": "fe80::1%\x1b[31mX"}, "is not an IP address"),
        ({"source": "s\x1b]0;x\x07"}, "consent source contains a control character (U+001B)"),
        ({"source": "web\nform"}, "consent source contains a line break (U+000A)"),
        ({"text": "I agree \x1b[2J"}, "consent text contains a control character (U+001B)"),
        ({"text": "x" * 2001}, "consent text is longer than 2000 characters"),
    ],
)
def test_consent_fields_get_the_checks_every_other_field_gets(
    fields: dict[str, str], message: str
) -> None:
    """The IP took any text after an IPv6 zone's '%' (kilobytes, controls,
    into a 64-character column), and source and wording took controls."""
    values = {"source": "api", "text": None, "ip": None, **fields}
    with pytest.raises(InvalidSubscriberError) as refused:
        Consent.parse(values["source"] or "", values["text"], values["ip"])
    assert message in str(refused.value)
    assert len(str(refused.value)) < 200  # a refusal never echoes kilobytes


def test_consent_wording_may_span_lines() -> None:
    assert Consent.parse("form", "Yes,\nplease.\tThanks").text == "Yes,\nplease.\tThanks"


@pytest.mark.parametrize(
    "address",
    ["=?utf-8?q?ceo=40bergdesign.se?=@evil.example", "=?utf-8?b?QUJD?=@example.com", "a=?b@x.se"],
)
def test_an_address_with_an_encoded_word_before_the_at_is_refused(address: str) -> None:
    """Mail programs decode an encoded word in a To: header's local part, so
    the mailbox they read differs from the one stored and shown."""
    with pytest.raises(InvalidSubscriberError, match="reads as encoded text"):
        SubscriberInput.parse(email=address)
    assert SubscriberInput.parse(email="a=b?c@example.com").email == "a=b?c@example.com"


def test_invisible_characters_copied_with_a_tag_do_not_make_another_tag() -> None:
    """ "b2b" with a zero-width space printed as b2b and matched no trigger."""
    data = SubscriberInput.parse(
        email="a@example.com",
        tags=["b2b\u200b", "\ufeffVIP", "\u202elead\u202c", "kund\u2060"],
    )
    assert data.tags == ("b2b", "vip", "lead", "kund")
    # Joiners change how some scripts and emoji read: they stay.
    assert SubscriberInput.parse(email="a@example.com", tags=["می\u200cخواهم"]).tags == (
        "می\u200cخواهم",
    )
