"""Checking a posted sign-up form (:func:`parse_signup`).

Every field is checked on its own with
:class:`~nurture.audience.input.SubscriberInput`, so a form can show every
message next to its field at once; :class:`SignupInvalid` holds one message
per refused field. Signing the checked form up is :mod:`nurture.audience.signup`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from nurture.audience.input import InvalidSubscriberError, SubscriberInput, check_text
from nurture.errors import NurtureError

__all__ = ["FORM_ID", "SignupForm", "SignupInvalid", "parse_signup"]

FORM_ID = re.compile(r"[A-Za-z0-9_-]{1,50}")
"""What a form id may be (it is in a URL and in the consent record)."""

CONSENT_TEXT_LIMIT = 2000
# A valid address, used to check each of the other fields on its own.
_PROBE = "probe@example.com"


class SignupInvalid(NurtureError):
    """Refused fields of a sign-up: ``errors`` maps each field to its message."""

    def __init__(self, errors: Mapping[str, str]) -> None:
        super().__init__("; ".join(f"{key}: {value}" for key, value in errors.items()))
        self.errors = dict(errors)


@dataclass(frozen=True)
class SignupForm:
    """A checked sign-up: the subscriber's fields, the form and the consent wording sent."""

    data: SubscriberInput
    form: str
    consent_text: str | None


# --------------------------------------------------------------------------- checking


def _string(values: Mapping[str, Any], key: str, errors: dict[str, str]) -> str | None:
    value = values.get(key)
    if value is None or isinstance(value, str):
        return value
    errors[key] = "must be a string"
    return None


def _tags(values: Mapping[str, Any], errors: dict[str, str]) -> list[str]:
    value = values.get("tags")
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return list(value)
    errors["tags"] = "must be a string or a list of strings"
    return []


def _attributes(values: Mapping[str, Any], errors: dict[str, str]) -> dict[str, Any]:
    value = values.get("attributes")
    if value is None:
        return {}
    if isinstance(value, dict):
        return value
    errors["attributes"] = "must be an object of names and values"
    return {}


def _refusal(errors: dict[str, str], key: str, check: Callable[[], object]) -> None:
    try:
        check()
    except InvalidSubscriberError as exc:
        errors[key] = str(exc)


def parse_signup(
    values: Mapping[str, Any], *, default_form: str, lenient_places: bool = False
) -> SignupForm:
    """Check a sign-up's raw values (JSON types, or strings from a form).

    Keys: ``email`` (required), ``name``, ``tags`` (a string or a list),
    ``attributes`` (an object), ``timezone``, ``locale``, ``form`` (else
    ``default_form``) and ``consent_text``. ``lenient_places`` drops a refused
    time zone or locale instead of refusing the sign-up (an HTML form's hidden
    fields, which the visitor cannot correct). Raises :class:`SignupInvalid`
    with a message for every refused field.
    """
    errors: dict[str, str] = {}
    address = _string(values, "email", errors)
    name = _string(values, "name", errors) or ""
    zone = _string(values, "timezone", errors)
    locale = _string(values, "locale", errors)
    form = _string(values, "form", errors)
    wording = _string(values, "consent_text", errors)
    tags = _tags(values, errors)
    attributes = _attributes(values, errors)

    if "email" not in errors:
        if not address or not address.strip():
            errors["email"] = "email address is required"
        else:
            _refusal(errors, "email", lambda: SubscriberInput.parse(email=address))
    _refusal(errors, "name", lambda: SubscriberInput.parse(email=_PROBE, name=name))
    _refusal(errors, "tags", lambda: SubscriberInput.parse(email=_PROBE, tags=tags))
    _refusal(
        errors, "attributes", lambda: SubscriberInput.parse(email=_PROBE, attributes=attributes)
    )
    places: dict[str, str] = {}
    _refusal(places, "timezone", lambda: SubscriberInput.parse(email=_PROBE, timezone=zone))
    _refusal(places, "locale", lambda: SubscriberInput.parse(email=_PROBE, locale=locale))
    if lenient_places:
        zone = None if "timezone" in places else zone
        locale = None if "locale" in places else locale
    else:
        errors.update(places)
    form = (form or "").strip() or default_form
    if "form" not in errors and not FORM_ID.fullmatch(form):
        errors["form"] = "form id must be 1 to 50 letters, digits, '-' or '_'"
    if wording is not None and "consent_text" not in errors:
        wording = wording.strip() or None
        if wording is not None:
            _refusal(
                errors,
                "consent_text",
                lambda: check_text("consent text", wording, CONSENT_TEXT_LIMIT, one_line=False),
            )
    if errors:
        raise SignupInvalid(errors)
    assert address is not None
    data = SubscriberInput.parse(
        email=address,
        name=name,
        timezone=zone,
        locale=locale,
        tags=tags,
        attributes=attributes,
    )
    return SignupForm(data=data, form=form, consent_text=wording)
